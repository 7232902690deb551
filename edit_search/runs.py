"""What a finished study leaves: the chosen edit, its export, and the per-image result."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial

from edit_search import __version__
from edit_search.data.checkpoint import (
    DEFAULT_CHECKPOINT,
    effective_transform,
    file_sha256,
    load_model,
)
from edit_search.data.images import LoadedImage, load_image, png_bytes, write_atomic
from edit_search.data.model import Classifier, Transform
from edit_search.errors import InputError, NoFeasibleEditError, StudyError
from edit_search.fronts import (
    StudySummary,
    completed_trials,
    is_feasible,
    pareto_front,
    pareto_indices,
    plot_points,
    summarize,
    trial_counts,
    write_pareto_plot,
)
from edit_search.optimizer import (
    RECIPE_KEY,
    SETTINGS_KEY,
    EditContext,
    Progress,
    StudySettings,
    create_or_resume,
    fail_stale_trials,
    load_settings,
    optimize,
    record_target,
    register_worker,
    remaining_trials,
)
from edit_search.outcomes import (
    ALREADY_RIGHT,
    DEFAULT_RUNS_DIR,
    FIXED,
    FIXED_BELOW_MARGIN,
    NOT_FIXED,
    RunResult,
    edit_status,
    export_dir,
    is_safe_study_name,
    safe_file_name,
)
from edit_search.pictures import Prediction, panel_png
from edit_search.search_spaces import Recipe, SearchSpace, apply_recipe

# Re-exported: the commands and tests read a study's front and outcome from here.
__all__ = [
    "ALREADY_RIGHT",
    "DEFAULT_RUNS_DIR",
    "FIXED",
    "FIXED_BELOW_MARGIN",
    "NOT_FIXED",
    "PICKS",
    "RunResult",
    "StudySummary",
    "already_right_result",
    "completed_trials",
    "context_for",
    "edit_status",
    "export_dir",
    "export_trial",
    "export_unedited",
    "find_trial",
    "is_already_right",
    "is_feasible",
    "is_safe_study_name",
    "pareto_front",
    "pareto_indices",
    "pick_trial",
    "pixels_sha256",
    "plot_points",
    "resume_study",
    "result_of",
    "run_study",
    "safe_file_name",
    "settings_for",
    "summarize",
    "trial_counts",
    "write_pareto_plot",
]

logger = logging.getLogger(__name__)

PICKS = ("most-preserved", "largest-margin")
DEFAULT_TRIALS = 48


def is_already_right(ctx: EditContext) -> bool:
    """Whether the model already predicts the label on the unedited image: nothing to fix.

    Such an image gets no edit even when its margin is below the safety margin: the job is to
    fix a wrong prediction, and the unedited image keeps every pixel.
    """
    return ctx.predicted == ctx.label and math.isfinite(float(ctx.original.margin[0]))


def pixels_sha256(pixels: torch.Tensor) -> str:
    """Hash of an image's uint8 pixels, independent of how the file encodes them."""
    return hashlib.sha256(pixels.cpu().contiguous().numpy().tobytes()).hexdigest()


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
        transform=Transform(**settings.transform) if settings.transform else None,
    )
    image = load_image(settings.image_path, label=settings.label, num_classes=model.num_classes)
    return EditContext(model, image.pixels, image.label)


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """A complete, scored trial of a study by its number.

    Raises:
        InputError: no such trial, or it did not complete with a recipe.
    """
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise InputError(
            f"study {study.study_name!r} has no trial {number} (its trials are 0-"
            f"{len(trials) - 1}); 'edit-search pareto {study.study_name}' lists the best ones."
        )
    trial = trials[number]
    if trial not in completed_trials(study):
        raise InputError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}, not a scored "
            "edit; pick a complete trial ('edit-search pareto' lists them)."
        )
    return trial


def _predictions(ctx: EditContext, logits: torch.Tensor) -> Prediction:
    probabilities = torch.softmax(logits.to(torch.float64), dim=0)  # (C,)
    return Prediction(int(logits.argmax()), [round(float(p), 6) for p in probabilities])


def export_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    ctx: EditContext,
    out_dir: Path,
    name: str | None = None,
) -> Path:
    """Write the trial's edit as a PNG, its recipe JSON and its panel; returns the PNG's path.

    The edit is rebuilt from the recipe and scored again, so what is written is exactly what
    is reported. Files: ``NAME.png``, ``NAME.json`` and ``NAME_panel.png`` in ``out_dir``;
    ``NAME`` is the image's stem unless given.
    """
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    recipe = Recipe.from_dict(trial.user_attrs[RECIPE_KEY])
    attribution = ctx.attributions.get(recipe.method, recipe.target)  # (28, 28)
    edit = apply_recipe(ctx.pixels, attribution, recipe)  # (28, 28) uint8
    scores = ctx.score(edit[None])
    before = _predictions(ctx, ctx.original.logits[0])
    after = _predictions(ctx, scores.logits[0])
    edited_png = png_bytes(edit.cpu())

    png_path = out_dir / f"{safe_file_name(name or Path(settings.image).stem)}.png"
    panel_path = png_path.with_name(f"{png_path.stem}_panel.png")
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
        "params": dict(trial.params),
        "description": recipe.describe(),
        "margin": float(scores.margin[0]),
        "preserved": float(scores.preserved[0]),
        "feasible": is_feasible(trial),
        "changed_pixels": int(torch.count_nonzero(edit != ctx.pixels)),
        "original_prediction": ctx.predicted,
        "edited_prediction": int(scores.predicted[0]),
        "original_probabilities": list(before.probabilities),
        "edited_probabilities": list(after.probabilities),
        "edited_png_sha256": hashlib.sha256(edited_png).hexdigest(),
        "panel": panel_path.name,
    }
    panel = panel_png(
        ctx.pixels,
        attribution,
        edit,
        label=settings.label,
        before=before,
        after=after,
        attribution_title=f"{recipe.method} [{recipe.target}]",
        title=f"{settings.image} (true {settings.label}), trial {trial.number}: "
        f"{recipe.describe()}",
    )
    write_atomic(png_path, edited_png)
    write_atomic(png_path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(panel_path, panel)
    return png_path


def export_unedited(ctx: EditContext, settings: StudySettings, out_dir: Path) -> Path:
    """Write the unedited image as ``NAME.png`` with its record ``NAME.json``; for an image the
    model already gets right, where the best edit is no edit. Returns the PNG's path."""
    data = png_bytes(ctx.pixels.cpu())
    before = _predictions(ctx, ctx.original.logits[0])
    png_path = out_dir / f"{safe_file_name(Path(settings.image).stem)}.png"
    record = {
        "tool": "edit-search",
        "version": __version__,
        "study": None,
        "trial": None,
        "image": settings.image,
        "image_sha256": settings.image_sha256,
        "label": settings.label,
        "model_sha256": settings.model_sha256,
        "arch": settings.arch,
        "min_preserve": settings.min_preserve,
        "min_margin": settings.min_margin,
        "recipe": None,
        "description": "unedited: the model already predicts the label",
        "margin": float(ctx.original.margin[0]),
        "preserved": 1.0,
        "feasible": True,
        "changed_pixels": 0,
        "original_prediction": ctx.predicted,
        "edited_prediction": ctx.predicted,
        "original_probabilities": list(before.probabilities),
        "edited_probabilities": list(before.probabilities),
        "edited_png_sha256": hashlib.sha256(data).hexdigest(),
        "panel": None,
    }
    write_atomic(png_path, data)
    write_atomic(png_path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    return png_path


def result_of(
    study: optuna.Study, settings: StudySettings, ctx: EditContext, png_path: Path, seconds: float
) -> RunResult:
    """The result row of a study whose chosen edit was exported to ``png_path``."""
    record = json.loads(png_path.with_suffix(".json").read_text())
    status, reason = edit_status(
        record, settings.label, settings.min_preserve, settings.min_margin
    )
    complete, failed = trial_counts(study)
    return RunResult(
        image=settings.image,
        label=settings.label,
        original_prediction=ctx.predicted,
        edited_prediction=record["edited_prediction"],
        margin=record["margin"],
        preserved=record["preserved"],
        trials=complete,
        failed=failed,
        study=study.study_name,
        export=str(png_path),
        seconds=seconds,
        status=status,
        reason=reason,
    )


def already_right_result(
    settings: StudySettings, ctx: EditContext, out_dir: Path, seconds: float
) -> RunResult:
    """The result row of an image the model already gets right: the unedited image exported."""
    png_path = export_unedited(ctx, settings, out_dir)
    margin_ = float(ctx.original.margin[0])
    below = (
        f" (below --min-margin {settings.min_margin:g})" if margin_ < settings.min_margin else ""
    )
    return RunResult(
        image=settings.image,
        label=settings.label,
        original_prediction=ctx.predicted,
        edited_prediction=ctx.predicted,
        margin=margin_,
        preserved=1.0,
        trials=0,
        study=None,
        export=str(png_path),
        seconds=seconds,
        status=ALREADY_RIGHT,
        reason=(
            f"the model already predicts {settings.label}, margin {margin_:.3f}{below}; no "
            "study ran and the unedited image was exported"
        ),
    )


def settings_for(
    image: LoadedImage,
    *,
    model_path: str | Path | None,
    arch: str | None,
    min_preserve: float,
    min_margin: float,
    sampler: str,
    space: SearchSpace,
    transform: Transform | None = None,
) -> StudySettings:
    """The study settings for one image under one model (``transform`` as given by the user)."""
    checkpoint = Path(model_path) if model_path is not None else DEFAULT_CHECKPOINT
    used, source = effective_transform(checkpoint, transform)  # what load_model uses too
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
        transform=used.to_dict(),
        transform_source=source,
    )


def run_study(
    storage: optuna.storages.BaseStorage,
    settings: StudySettings,
    model: Classifier,
    image: LoadedImage,
    *,
    n_trials: int | None,
    out_dir: Path | None = None,
    study_name: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_study: Callable[[optuna.Study], None] | None = None,
    patience: int | None = None,
) -> RunResult:
    """Create or resume the study of one image, run its trials, export the best edit.

    An image the model already predicts right needs no edit: no study is made and the
    unedited image is exported (status ``already right``).

    Args:
        storage: where the study lives.
        settings: from ``settings_for``.
        model: the classifier.
        image: the digit.
        n_trials: trials to add; None completes the study's last recorded target of
            complete trials (``DEFAULT_TRIALS`` more when it has reached it).
        out_dir: where exports go; None means ``runs/STUDY``.
        study_name: a name to use instead of the derived one.
        on_progress: called after every batch of trials.
        on_study: called once the study is open, before any trial runs.
        patience: stop after this many trials without a better safe edit; None runs them all.

    Raises:
        StudyError: the study exists with other settings.
        NoFeasibleEditError: no feasible edit makes the model right.
    """
    started = time.perf_counter()
    ctx = EditContext(model, image.pixels, image.label)
    name = study_name or settings.study_name()
    if is_already_right(ctx):
        target = out_dir or export_dir(name)
        return already_right_result(settings, ctx, target, time.perf_counter() - started)

    study = create_or_resume(storage, settings, study_name)
    register_worker(study)
    # Trials a killed process left RUNNING are failed, so the study is whole again.
    fail_stale_trials(study)
    if n_trials is None:
        n_trials = remaining_trials(study) or DEFAULT_TRIALS
    record_target(study, n_trials)
    if on_study is not None:
        on_study(study)
    optimize(study, ctx, n_trials, patience=patience, on_progress=on_progress)

    trial = pick_trial(study)
    png_path = export_trial(study, trial, ctx, out_dir or export_dir(study.study_name))
    return result_of(study, settings, ctx, png_path, time.perf_counter() - started)


def resume_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    n_trials: int | None = None,
    device: str | torch.device = "cpu",
    out_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_study: Callable[[optuna.Study], None] | None = None,
) -> RunResult:
    """More trials on an existing study, with the image, model and settings it recorded.

    Raises:
        StudyError: no such study, or its image or model changed since.
        InputError: its image or model file can no longer be read.
    """
    stored = load_settings(storage, study_name)
    # A --transform is reused; one from the file beside the checkpoint is read again, so a
    # changed file is refused below. Older studies recorded a transform only from the option.
    given = stored.transform if stored.transform_source in ("option", None) else None
    transform = Transform(**given) if given else None
    model = load_model(
        stored.model_path,
        device=device,
        arch=None if stored.arch == "SmallCNN" else stored.arch,
        transform=transform,
    )
    image = load_image(stored.image_path, label=stored.label, num_classes=model.num_classes)
    settings = settings_for(
        image,
        model_path=stored.model_path,
        arch=None if stored.arch == "SmallCNN" else stored.arch,
        min_preserve=stored.min_preserve,
        min_margin=stored.min_margin,
        sampler=stored.sampler,
        space=stored.space,
        transform=transform,
    )
    old, new = stored.identity(), settings.identity()
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        raise StudyError(
            f"study {study_name!r} was made from other inputs than the files at its recorded "
            f"paths now ({', '.join(differ)} differ; image {stored.image_path!r}); nothing was "
            "run. Start a new study with 'edit-search run --image IMAGE'."
        )
    return run_study(
        storage,
        settings,
        model,
        image,
        n_trials=n_trials,
        out_dir=out_dir,
        study_name=study_name,
        on_progress=on_progress,
        on_study=on_study,
    )
