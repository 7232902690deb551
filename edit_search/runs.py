"""What a finished study leaves: the chosen edit, its export, and the per-image result."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from edit_search import __version__
from edit_search.data.checkpoint import DEFAULT_CHECKPOINT, file_sha256, load_model
from edit_search.data.images import LoadedImage, load_image, png_bytes, write_atomic
from edit_search.data.model import Classifier
from edit_search.errors import NoFeasibleEditError
from edit_search.optimizer import (
    RECIPE_KEY,
    SETTINGS_KEY,
    EditContext,
    Progress,
    StudySettings,
    create_or_resume,
    optimize,
)
from edit_search.search_spaces import Recipe, SearchSpace, apply_recipe

logger = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("runs")
PICKS = ("most-preserved", "largest-margin")


@dataclass(frozen=True)
class RunResult:
    """One image's outcome, as the results table shows it."""

    image: str
    label: int
    original_prediction: int
    edited_prediction: int | None
    margin: float | None
    preserved: float | None
    trials: int
    study: str
    export: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pixels_sha256(pixels: torch.Tensor) -> str:
    """Hash of an image's uint8 pixels, independent of how the file encodes them."""
    return hashlib.sha256(pixels.cpu().contiguous().numpy().tobytes()).hexdigest()


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with finite values and a recorded recipe."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None
        and all(math.isfinite(v) for v in t.values)
        and RECIPE_KEY in t.user_attrs
    ]


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether a trial keeps the required share of pixels."""
    return all(v <= 0.0 for v in trial.constraints.values())


def pick_trial(
    study: optuna.Study, pick: str = "most-preserved", min_margin: float | None = None
) -> FrozenTrial:
    """The trial to export.

    ``most-preserved``: the feasible trial with the most preserved pixels whose margin is at
    least ``min_margin`` (the study's safety margin by default), the larger margin on a tie;
    when none reaches it, the feasible trial with the largest positive margin.
    ``largest-margin``: the feasible trial with the largest margin.

    Raises:
        NoFeasibleEditError: no feasible trial makes the model right.
    """
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    threshold = settings.min_margin if min_margin is None else min_margin
    right = [t for t in completed_trials(study) if is_feasible(t) and t.values[0] > 0]
    if not right:
        raise NoFeasibleEditError(
            f"no edit in study {study.study_name!r} makes the model right while keeping "
            f"{settings.min_preserve:.0%} of the pixels; lower --min-preserve or add trials."
        )
    if pick == "largest-margin":
        return max(right, key=lambda t: (t.values[0], t.values[1]))
    safe = [t for t in right if t.values[0] >= threshold]
    if safe:
        return max(safe, key=lambda t: (t.values[1], t.values[0]))
    return max(right, key=lambda t: (t.values[0], t.values[1]))


def context_for(settings: StudySettings, device: str | torch.device = "cpu") -> EditContext:
    """Reload the image and model a study was made from."""
    model = load_model(
        settings.model_path,
        device=device,
        arch=None if settings.arch == "SmallCNN" else settings.arch,
    )
    image = load_image(settings.image_path, label=settings.label, num_classes=model.num_classes)
    return EditContext(model, image.pixels, image.label)


def export_trial(study: optuna.Study, trial: FrozenTrial, ctx: EditContext, out_dir: Path) -> Path:
    """Write the trial's edit as a PNG and its recipe JSON beside it; returns the PNG's path.

    The edit is rebuilt from the recipe and scored again, so what is written is exactly what
    is reported.
    """
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    recipe = Recipe.from_dict(trial.user_attrs[RECIPE_KEY])
    attribution = ctx.attributions.get(recipe.method, recipe.target)
    edit = apply_recipe(ctx.pixels, attribution, recipe)  # (28, 28) uint8
    scores = ctx.score(edit[None])
    probabilities = torch.softmax(scores.logits, dim=1)[0]
    original_probabilities = torch.softmax(ctx.original.logits, dim=1)[0]

    stem = Path(settings.image).stem
    png_path = out_dir / f"{stem}.png"
    record = {
        "tool": "edit-search",
        "version": __version__,
        "study": study.study_name,
        "trial": trial.number,
        "image": settings.image,
        "image_sha256": settings.image_sha256,
        "label": settings.label,
        "model_sha256": settings.model_sha256,
        "arch": settings.arch,
        "min_preserve": settings.min_preserve,
        "min_margin": settings.min_margin,
        "recipe": recipe.to_dict(),
        "description": recipe.describe(),
        "margin": float(scores.margin[0]),
        "preserved": float(scores.preserved[0]),
        "changed_pixels": int(torch.count_nonzero(edit != ctx.pixels)),
        "original_prediction": ctx.predicted,
        "edited_prediction": int(scores.predicted[0]),
        "original_probabilities": [round(float(p), 6) for p in original_probabilities],
        "edited_probabilities": [round(float(p), 6) for p in probabilities],
        "edited_png_sha256": hashlib.sha256(png_bytes(edit.cpu())).hexdigest(),
    }
    write_atomic(png_path, png_bytes(edit.cpu()))
    write_atomic(png_path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    return png_path


def settings_for(
    image: LoadedImage,
    *,
    model_path: str | Path | None,
    arch: str | None,
    min_preserve: float,
    min_margin: float,
    sampler: str,
    space: SearchSpace,
) -> StudySettings:
    """The study settings for one image under one model."""
    checkpoint = Path(model_path) if model_path is not None else DEFAULT_CHECKPOINT
    return StudySettings(
        image=image.path.name,
        image_path=str(image.path.resolve()),
        image_sha256=pixels_sha256(image.pixels),
        label=image.label,
        model_path=str(checkpoint.resolve()) if model_path is not None else None,
        model_sha256=file_sha256(checkpoint),
        arch=arch or "SmallCNN",
        min_preserve=min_preserve,
        min_margin=min_margin,
        sampler=sampler,
        space=space,
    )


def run_study(
    storage: optuna.storages.BaseStorage,
    settings: StudySettings,
    model: Classifier,
    image: LoadedImage,
    *,
    n_trials: int,
    out_dir: Path | None = None,
    study_name: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_study: Callable[[optuna.Study], None] | None = None,
) -> RunResult:
    """Create or resume the study of one image, run its trials, export the best edit.

    Args:
        storage: where the study lives.
        settings: from ``settings_for``.
        model: the classifier.
        image: the digit.
        n_trials: trials to add.
        out_dir: where exports go; None means ``runs/STUDY``.
        study_name: a name to use instead of the derived one.
        on_progress: called after every batch of trials.
        on_study: called once the study is open, before any trial runs.

    Raises:
        StudyError: the study exists with other settings.
        NoFeasibleEditError: no feasible edit makes the model right.
    """
    started = time.perf_counter()
    study = create_or_resume(storage, settings, study_name)
    if on_study is not None:
        on_study(study)
    ctx = EditContext(model, image.pixels, image.label)
    optimize(study, ctx, n_trials, on_progress=on_progress)

    trial = pick_trial(study)
    target = out_dir or DEFAULT_RUNS_DIR / study.study_name
    png_path = export_trial(study, trial, ctx, target)
    record = json.loads(png_path.with_suffix(".json").read_text())
    return RunResult(
        image=settings.image,
        label=settings.label,
        original_prediction=ctx.predicted,
        edited_prediction=record["edited_prediction"],
        margin=record["margin"],
        preserved=record["preserved"],
        trials=len(study.trials),
        study=study.study_name,
        export=str(png_path),
        seconds=time.perf_counter() - started,
    )
