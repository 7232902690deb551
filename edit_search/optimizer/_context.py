"""Everything a study of one image needs at hand: model, pixels, attributions, scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edit_search.attribution import AttributionCache
from edit_search.objectives import margin, preserved
from edit_search.search_spaces import NUM_PIXELS


@dataclass
class Scores:
    """Scores of a batch of edits, all on the CPU.

    Attributes:
        logits: shape (B, C).
        margin: shape (B,).
        preserved: shape (B,).
        predicted: shape (B,).
    """

    logits: torch.Tensor
    margin: torch.Tensor
    preserved: torch.Tensor
    predicted: torch.Tensor


@dataclass
class EditContext:
    """One image under one model.

    Attributes:
        model: a classifier on images in [0, 1], in eval mode.
        pixels: the image's uint8 values, shape (28, 28), on the model's device.
        label: the true class.
        batch_size: how many edits one forward pass scores.
    """

    model: nn.Module
    pixels: torch.Tensor
    label: int
    batch_size: int = 1024
    attributions: AttributionCache = field(init=False)
    original: Scores = field(init=False)
    forward_passes: int = field(default=0, init=False)
    edits_scored: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        device = next(self.model.parameters()).device
        self.pixels = self.pixels.to(device)
        self.original = self.score(self.pixels[None])
        image = self.pixels.to(torch.float32)[None, None] / 255.0  # (1, 1, 28, 28)
        predicted = int(self.original.predicted[0])
        self.attributions = AttributionCache(self.model, image, self.label, predicted)

    @property
    def predicted(self) -> int:
        """The model's prediction for the unedited image."""
        return int(self.original.predicted[0])

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def budget(self, min_preserve: float) -> int:
        """The most pixels an edit may change and still keep ``min_preserve`` of them."""
        return int(NUM_PIXELS - torch.ceil(torch.tensor(min_preserve * NUM_PIXELS - 1e-9)))

    @torch.inference_mode()
    def score(self, edits: torch.Tensor) -> Scores:
        """Score uint8 edits (B, 28, 28) in forward passes of ``batch_size``."""
        chunks = []
        for start in range(0, edits.shape[0], self.batch_size):
            batch = edits[start : start + self.batch_size].to(self.device)
            chunks.append(self.model(batch.to(torch.float32)[:, None] / 255.0))  # (b, C)
            self.forward_passes += 1
        self.edits_scored += edits.shape[0]
        logits = torch.cat(chunks).to("cpu", torch.float64)
        return Scores(
            logits=logits,
            margin=margin(logits, self.label),
            preserved=preserved(edits.cpu(), self.pixels.cpu()),
            predicted=logits.argmax(dim=1),
        )
