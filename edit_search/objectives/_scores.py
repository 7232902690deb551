"""Margin, preserved share and the constraint, computed for a whole batch of edits."""

from __future__ import annotations

import torch


def margin(logits: torch.Tensor, label: int) -> torch.Tensor:
    """True-class logit minus the best other logit; > 0 means the model is right.

    Args:
        logits: shape (B, C).
        label: the true class.

    Returns:
        shape (B,), float.
    """
    others = logits.clone()
    others[:, label] = float("-inf")
    return logits[:, label] - others.max(dim=1).values


def preserved(edits: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Share of pixels whose uint8 value the edit leaves unchanged.

    Args:
        edits: uint8, shape (B, 28, 28).
        original: uint8, shape (28, 28).

    Returns:
        shape (B,), float in [0, 1].
    """
    same = edits.reshape(edits.shape[0], -1) == original.reshape(1, -1)  # (B, 784)
    return same.to(torch.float64).mean(dim=1)


def constraint(preserved_share: torch.Tensor, min_preserve: float) -> torch.Tensor:
    """Optuna's constraint value: feasible when ``min_preserve - preserved <= 0``."""
    return min_preserve - preserved_share


def predictions(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (B,) and their softmax probabilities (B, C)."""
    return logits.argmax(dim=1), torch.softmax(logits.to(torch.float64), dim=1)
