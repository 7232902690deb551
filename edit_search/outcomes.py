"""The outcome of one image: its status, its result row, and safe names for its exports."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_RUNS_DIR = Path("runs")

# The status of an image whose study ran (or did not need to).
FIXED = "fixed"
FIXED_BELOW_MARGIN = "fixed below margin"
ALREADY_RIGHT = "already right"
NOT_FIXED = "not fixed"

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")


@dataclass(frozen=True)
class RunResult:
    """One image's outcome, as the results table shows it.

    Attributes:
        trials: COMPLETE trials of the study.
        failed: FAIL trials of the study.
        study: None when no study was needed (the image was already right).
        status: ``fixed``, ``fixed below margin`` (no feasible edit reached the safety margin;
            the one with the largest margin was exported), ``already right`` (the unedited
            image was exported) or ``not fixed`` (the exported edit does not make the model
            right while keeping the required pixels).
        reason: why the status is not plain ``fixed``; empty otherwise.
    """

    image: str
    label: int
    original_prediction: int
    edited_prediction: int | None
    margin: float | None
    preserved: float | None
    trials: int
    study: str | None
    export: str | None
    seconds: float
    status: str = FIXED
    reason: str = ""
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_safe_study_name(name: str) -> bool:
    """Whether a study name can be used as one folder name: no separators, no leading dot, no
    control characters, 1-200 characters."""
    return (
        0 < len(name) <= 200
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and all(ch.isprintable() for ch in name)
    )


def safe_file_name(name: str) -> str:
    """``name`` when it is a plain file name, else a plain name made from it plus a hash, so a
    name read from a shared storage never steers a write outside the chosen folder."""
    if is_safe_study_name(name) and name not in (".", ".."):
        # Spaces and non-ASCII letters are kept: `verify` matches edits to originals by name.
        return name
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:100] or "study"
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def export_dir(study_name: str) -> Path:
    """The default folder of a study's exports: ``runs/STUDY``, with an unsafe name made safe."""
    return DEFAULT_RUNS_DIR / safe_file_name(study_name)


def edit_status(
    record: dict[str, Any], label: int, min_preserve: float, min_margin: float
) -> tuple[str, str]:
    """The status and reason of an exported edit, from its recipe record's scores."""
    margin_ = record["margin"]
    predicted = record["edited_prediction"]
    if predicted != label or not (margin_ is not None and math.isfinite(margin_) and margin_ > 0):
        return NOT_FIXED, f"the exported edit is predicted {predicted}, not the label {label}"
    if record["preserved"] < min_preserve:
        return NOT_FIXED, (
            f"the exported edit keeps {record['preserved']:.2%} of the pixels, less than "
            f"{min_preserve:.2%}"
        )
    if margin_ < min_margin:
        return FIXED_BELOW_MARGIN, (
            f"no feasible edit reached --min-margin {min_margin:g}; exported the largest "
            f"margin, {margin_:.3f}"
        )
    return FIXED, ""
