"""Pictures of a study: the panel of one edit, and the Pareto plot of margin x preserved.

Both are drawn with matplotlib's Agg canvas on a ``Figure`` of their own (no pyplot state), and
returned as PNG bytes for the caller to write.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    Attributes:
        predicted: the class it picks.
        probabilities: softmax over the classes, shape (C,).
    """

    predicted: int
    probabilities: Sequence[float]

    def caption(self, label: int) -> str:
        """``pred 8 (0.62)`` on one line, ``p(3) = 0.21`` for the true class on the next."""
        top = self.probabilities[self.predicted]
        return f"pred {self.predicted} ({top:.2f})\np({label}) = {self.probabilities[label]:.2f}"


@dataclass(frozen=True)
class PlotPoint:
    """One trial in the Pareto plot.

    Attributes:
        number: the trial's number.
        margin: its margin.
        preserved: its preserved share in [0, 1].
        feasible: whether it keeps the required share of pixels.
        on_front: whether it is on the Pareto front of its kind (feasible or not).
    """

    number: int
    margin: float
    preserved: float
    feasible: bool
    on_front: bool


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().to(torch.float64).numpy()


def panel_png(
    original: torch.Tensor,
    attribution: torch.Tensor,
    edited: torch.Tensor,
    *,
    label: int,
    before: Prediction,
    after: Prediction,
    attribution_title: str,
    title: str = "",
) -> bytes:
    """Five pictures side by side: original, attribution, changed pixels, edit, difference.

    Args:
        original: the image's uint8 values, shape (28, 28).
        attribution: the map the recipe ranked pixels by, shape (28, 28).
        edited: the edit's uint8 values, shape (28, 28).
        label: the true class.
        before: the model on the original.
        after: the model on the edit.
        attribution_title: names the map (method and target).
        title: a line above the panel.

    Returns:
        The PNG's bytes.
    """
    base = _numpy(original)  # (28, 28) in 0-255
    edit = _numpy(edited)
    difference = (edit - base) / 255.0  # (28, 28) in [-1, 1]
    changed = difference != 0
    heat = _numpy(attribution)
    reach = float(np.abs(heat).max()) or 1.0

    figure = Figure(figsize=(12.5, 3.4))
    axes = figure.subplots(1, 5)
    count = int(changed.sum())
    pictures = [
        ("original", base, "gray", 0.0, 255.0, before.caption(label)),
        (attribution_title, heat, "RdBu_r", -reach, reach, "red: pushes the target up"),
        ("changed pixels", changed.astype(float), "gray", 0.0, 1.0, f"{count} of 784 changed"),
        ("edited", edit, "gray", 0.0, 255.0, after.caption(label)),
        ("difference", difference, "RdBu_r", -1.0, 1.0, "red: lighter, blue: darker"),
    ]
    for ax, (name, values, cmap, low, high, caption) in zip(axes, pictures, strict=True):
        shown = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(caption, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if cmap == "RdBu_r":
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def pareto_png(points: Sequence[PlotPoint], *, min_preserve: float, title: str = "") -> bytes:
    """Margin against preserved share; front, dominated and infeasible trials told apart.

    Args:
        points: every scored trial.
        min_preserve: the constraint, drawn as a vertical line.
        title: a line above the plot.

    Returns:
        The PNG's bytes.
    """
    figure = Figure(figsize=(7.5, 5.0))
    ax = figure.subplots()
    groups = [
        ("infeasible", [p for p in points if not p.feasible], "x", "tab:gray"),
        (
            "feasible, dominated",
            [p for p in points if p.feasible and not p.on_front],
            "o",
            "tab:blue",
        ),
        ("Pareto front", [p for p in points if p.feasible and p.on_front], "D", "tab:red"),
    ]
    for name, group, marker, color in groups:
        if group:
            ax.scatter(
                [100 * p.preserved for p in group],
                [p.margin for p in group],
                marker=marker,
                color=color,
                s=28 if marker != "D" else 40,
                alpha=0.8,
                label=f"{name} ({len(group)})",
                zorder=3 if name == "Pareto front" else 2,
            )
    front = sorted((p for p in points if p.feasible and p.on_front), key=lambda p: p.preserved)
    if len(front) > 1:
        ax.step(
            [100 * p.preserved for p in front],
            [p.margin for p in front],
            where="pre",
            color="tab:red",
            linewidth=1.0,
            alpha=0.6,
        )
    ax.axvline(
        100 * min_preserve,
        color="black",
        linestyle="--",
        linewidth=1.0,
        label=f"min-preserve {min_preserve:.0%}",
    )
    ax.axhline(0.0, color="tab:green", linestyle=":", linewidth=1.0, label="margin 0 (right)")
    ax.set_xlabel("preserved pixels (%)")
    ax.set_ylabel("margin (true logit - best other)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)
