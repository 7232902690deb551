"""Why the model gets a digit wrong: every attribution map for the true and predicted class.

``explain`` computes the maps; ``explanation_figure`` draws them in one picture: a row per
class (true, then predicted), a column per method, one colour scale shared by the whole row,
the digit and its predicted probabilities in the first column. Figures are built with
matplotlib's object API and the Agg canvas, so nothing needs a display.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from edit_search.attribution import METHODS, attribute
from edit_search.data.images import LoadedImage, write_atomic
from edit_search.data.model import Classifier
from edit_search.errors import InputError

#: Rows of the picture: the attribution target of each.
ROWS = ("true", "predicted")
#: Methods whose map holds an order of changes rather than attribution values: drawn on their
#: own colour scale, since their numbers are ranks, not logits.
ORDER_METHODS = ("greedy",)
#: Pixel size of the saved picture: inches of one cell and dots per inch.
CELL_INCHES = 1.7
DPI = 100

_TITLES = {
    "integrated_gradients": "integrated gradients",
    "integrated_gradients_white": "integ. gradients (white)",
    "saliency": "saliency",
    "occlusion": "occlusion",
    "occlusion_white": "occlusion (white)",
    "grad_cam": "Grad-CAM",
    "gradient_shap": "gradient SHAP",
    "deeplift": "DeepLift",
    "input_x_gradient": "input x gradient",
    "greedy": "greedy changes",
}


@dataclass(frozen=True)
class Explanation:
    """The maps of one digit.

    Attributes:
        image: the digit.
        predicted: the model's class for it.
        probabilities: softmax of the logits, shape (C,).
        methods: the methods, in column order.
        maps: ``(row, method) -> map`` of shape (28, 28), for ``row`` in ``ROWS``.
    """

    image: LoadedImage
    predicted: int
    probabilities: torch.Tensor
    methods: tuple[str, ...]
    maps: dict[tuple[str, str], torch.Tensor]

    def row_class(self, row: str) -> int:
        """The class a row explains."""
        return self.image.label if row == "true" else self.predicted


def explain(
    model: Classifier, image: LoadedImage, methods: tuple[str, ...] = METHODS
) -> Explanation:
    """Every method's map of ``image`` for its true class and for the predicted class.

    Raises:
        InputError: a method is unknown.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(METHODS)}."
        )
    device = next(model.parameters()).device
    x = image.image.to(device)  # (1, 1, 28, 28)
    with torch.no_grad():
        probabilities = torch.softmax(model(x).double(), dim=1)[0].cpu()  # (C,)
    predicted = int(probabilities.argmax())

    maps = {
        (row, method): attribute(
            model, x, method, row, label=image.label, predicted=predicted
        ).cpu()
        for row in ROWS
        for method in methods
    }
    return Explanation(image, predicted, probabilities, tuple(methods), maps)


def is_empty(attribution: torch.Tensor) -> bool:
    """Whether a map carries no signal at all (every value exactly zero)."""
    return not bool(torch.count_nonzero(attribution))


def row_scale(explanation: Explanation, row: str) -> float:
    """The largest |value| among the row's attribution maps (order maps excluded); 1 if none."""
    values = [
        float(explanation.maps[row, m].abs().max())
        for m in explanation.methods
        if m not in ORDER_METHODS
    ]
    top = max(values, default=0.0)
    return top if top > 0 else 1.0


def explanation_figure(explanation: Explanation) -> tuple[Figure, dict[tuple[str, str], Axes]]:
    """Draw the explanation; returns the figure and the axes of every ``(row, method)`` cell."""
    columns = len(explanation.methods) + 1
    fig = Figure(figsize=(CELL_INCHES * columns + 1.2, CELL_INCHES * len(ROWS) + 1.4), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        len(ROWS),
        columns + 1,
        width_ratios=[1.0] * columns + [0.07],
        left=0.03,
        right=0.955,
        top=0.84,
        bottom=0.1,
        wspace=0.14,
        hspace=0.42,
    )
    pixels = explanation.image.pixels.numpy()  # (28, 28) uint8
    label, predicted = explanation.image.label, explanation.predicted
    p = explanation.probabilities
    fig.suptitle(
        f"{explanation.image.path.name}: true {label} (p={float(p[label]):.2f}), "
        f"predicted {predicted} (p={float(p[predicted]):.2f})",
        fontsize=13,
    )

    digit = fig.add_subplot(grid[0, 0])
    digit.imshow(pixels, cmap="gray", vmin=0, vmax=255)
    digit.set_title("image", fontsize=9)
    digit.set_xticks([])
    digit.set_yticks([])
    _probability_bars(fig.add_subplot(grid[1, 0]), explanation)

    cells: dict[tuple[str, str], Axes] = {}
    for r, row in enumerate(ROWS):
        scale = row_scale(explanation, row)
        norm = Normalize(-scale, scale)
        shown = None
        for c, method in enumerate(explanation.methods, start=1):
            ax = fig.add_subplot(grid[r, c])
            cells[row, method] = ax
            image = _draw_cell(ax, explanation.maps[row, method], method, norm, pixels)
            shown = image if method not in ORDER_METHODS and image is not None else shown
        bar_ax = fig.add_subplot(grid[r, columns])
        if shown is not None:
            bar = fig.colorbar(shown, cax=bar_ax)
            bar.ax.tick_params(labelsize=7)
            bar.set_label(f"{row} class {explanation.row_class(row)}", fontsize=10)
        else:
            bar_ax.set_axis_off()
    return fig, cells


def _draw_cell(
    ax: Axes, attribution: torch.Tensor, method: str, norm: Normalize, pixels: np.ndarray
) -> AxesImage | None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_TITLES.get(method, method.replace("_", " ")), fontsize=9)
    if is_empty(attribution):
        ax.set_facecolor("#e8e8e8")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "map is all zero:\nno signal", ha="center", va="center", fontsize=9)
        return None

    values = attribution.numpy()
    if method in ORDER_METHODS:
        top = float(np.abs(values).max())
        norm = Normalize(-top, top)
        note = "order of changes\n(own scale)"
    else:
        note = f"max |a| {float(np.abs(values).max()):.3g}"
    image = ax.imshow(values, cmap="RdBu_r", norm=norm, interpolation="nearest")
    # The digit's outline, so a map can be read against the strokes.
    ax.contour(pixels, levels=[127.5], colors="black", linewidths=0.6, alpha=0.45)
    ax.text(0.5, -0.04, note, transform=ax.transAxes, ha="center", va="top", fontsize=7)
    return image


def _probability_bars(ax: Axes, explanation: Explanation) -> None:
    p = explanation.probabilities.numpy()
    classes = np.arange(len(p))
    colours = ["#9e9e9e"] * len(p)
    colours[explanation.predicted] = "#d62728"
    colours[explanation.image.label] = "#2ca02c"
    ax.barh(classes, p, color=colours)
    ax.set_yticks(classes)
    ax.tick_params(labelsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1e-6, float(p.max())) * 1.15)
    ax.set_title("probabilities", fontsize=9)
    ax.set_xlabel("green true, red predicted", fontsize=7)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at the figure's own size and DPI (no cropping)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG, atomically; returns the path."""
    path = Path(path)
    write_atomic(path, figure_png(fig))
    return path
