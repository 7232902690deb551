"""The grader's view: check edited digits against their originals, whoever made the edits.

An edited file is matched to its original by file name (the same name, or the same stem with
another suffix). The true label is read from the original's name, the preserved share is
computed on the two files' uint8 pixels, and the prediction comes from the model. Nothing
written by ``edit-search run`` is needed: edits made by hand or by other tools are checked
the same way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edit_search.data.images import IMAGE_SUFFIXES, label_from_name, list_images, load_image
from edit_search.data.model import Classifier
from edit_search.errors import EditSearchError, InputError
from edit_search.objectives import margin, preserved

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """One edited image, checked.

    Attributes:
        image: the edited file's name.
        original: the matched original's name.
        label: the true class, from the original's name; None when that cannot be read.
        predicted: the model's class for the edited image, or None when it could not be read.
        margin: true-class logit minus the best other logit on the edited image.
        preserved: share of pixels whose uint8 value equals the original's.
        passed: the model predicts the label and enough pixels are preserved.
        reason: why it failed, empty when it passed.
    """

    image: str
    original: str
    label: int | None
    predicted: int | None
    margin: float | None
    preserved: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """All verdicts of one folder, and the edited files that had no original."""

    verdicts: tuple[Verdict, ...]
    unmatched: tuple[str, ...]

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    @property
    def failed(self) -> int:
        return len(self.verdicts) - self.passed

    def summary(self) -> str:
        """The one-line summary, ``N passed, M failed``."""
        return f"{self.passed} passed, {self.failed} failed"


def match_originals(edited: list[Path], originals: list[Path]) -> dict[Path, Path | None]:
    """Pair every edited file with its original: same name first, else the same stem."""
    by_name = {p.name: p for p in originals}
    by_stem: dict[str, Path] = {}
    for p in originals:
        by_stem.setdefault(p.stem, p)
    return {e: by_name.get(e.name) or by_stem.get(e.stem) for e in edited}


def _unreadable(edited: Path, original: Path, label: int | None, reason: str) -> Verdict:
    return Verdict(edited.name, original.name, label, None, None, None, False, reason)


def check_edit(
    model: Classifier, edited_path: Path, original_path: Path, min_preserve: float
) -> Verdict:
    """Check one edited file against its original; a file that cannot be read fails.

    Args:
        model: the classifier that grades.
        edited_path: the edited digit.
        original_path: the unedited digit; its name carries the label (``2_label3.png``).
        min_preserve: least share of pixels that must be unchanged, in [0, 1].
    """
    if label_from_name(original_path) is None:
        return _unreadable(
            edited_path,
            original_path,
            None,
            f"the original {original_path.name!r} has no label in its name; rename it like "
            "'2_label3.png'",
        )
    try:
        original = load_image(original_path, num_classes=model.num_classes)
    except EditSearchError as exc:
        return _unreadable(edited_path, original_path, None, f"cannot read the original: {exc}")
    try:
        edited = load_image(edited_path, label=original.label, num_classes=model.num_classes)
    except EditSearchError as exc:
        return _unreadable(edited_path, original_path, original.label, f"cannot read: {exc}")

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(edited.image.to(device)).double()  # (1, C)
    predicted = int(logits.argmax(dim=1)[0])
    kept = float(preserved(edited.pixels[None], original.pixels)[0])
    reasons = []
    if predicted != original.label:
        reasons.append(f"predicted {predicted}, not the label {original.label}")
    if kept < min_preserve:
        reasons.append(f"preserved {kept:.2%} is below the required {min_preserve:.2%}")
    return Verdict(
        image=edited_path.name,
        original=original_path.name,
        label=original.label,
        predicted=predicted,
        margin=float(margin(logits, original.label)[0]),
        preserved=kept,
        passed=not reasons,
        reason="; ".join(reasons),
    )


PANEL_SUFFIX = "_panel"


def verify_folder(
    model: Classifier, edited_dir: Path, originals_dir: Path, min_preserve: float = 0.6
) -> Report:
    """Check every image in ``edited_dir`` that has an original in ``originals_dir``.

    Args:
        model: the classifier that grades.
        edited_dir: a folder of edited digits (other files, such as recipe JSON, are ignored).
        originals_dir: a folder of the unedited digits, named with their labels.
        min_preserve: least share of pixels that must be unchanged, in [0, 1].

    Raises:
        InputError: a folder is missing or empty, ``min_preserve`` is outside [0, 1], or no
            edited file has an original.
    """
    if not 0.0 <= min_preserve <= 1.0:
        raise InputError(f"min_preserve must be between 0 and 1; received {min_preserve}.")
    edited = list_images(edited_dir)
    originals = list_images(originals_dir)

    # The picture panels edit-search exports beside each edit are not edits.
    stems = {o.stem for o in originals}
    edited = [
        e
        for e in edited
        if not (e.stem.endswith(PANEL_SUFFIX) and e.stem.removesuffix(PANEL_SUFFIX) in stems)
    ]
    pairs = match_originals(edited, originals)
    unmatched = tuple(e.name for e, o in pairs.items() if o is None)
    if len(unmatched) == len(edited):
        raise InputError(
            f"none of the {len(edited)} images in {str(edited_dir)!r} has an original of the "
            f"same name in {str(originals_dir)!r} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "name each edit like its original."
        )
    verdicts = tuple(
        check_edit(model, e, o, min_preserve) for e, o in pairs.items() if o is not None
    )
    for name in unmatched:
        logger.debug("%s has no original of the same name; skipped", name)
    return Report(verdicts, unmatched)
