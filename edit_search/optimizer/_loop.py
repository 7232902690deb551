"""The batched ask/tell loop: many trials proposed, all their edits scored in one pass.

One Optuna trial costs milliseconds of bookkeeping while the model scores an edit in
microseconds, so a trial is a recipe family and the loop sweeps every top-k count and strength
of it at once. A batch of trials is asked for, every edit of every trial is scored in the same
forward passes, and each trial is told its best edit.

The last trial of a call polishes: it takes the best safe edit so far and tries undoing each
changed pixel (all of them in one pass per step), keeping every undo that holds the margin; the
undone pixels become the recipe's ``keep`` list, so the polished edit is an exact recipe too.
When nothing can be undone, the last trial is an ordinary sampled one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from edit_search.objectives import constraint
from edit_search.optimizer._context import EditContext, Scores
from edit_search.optimizer._recovery import interrupts_deferred, set_constraint
from edit_search.optimizer._study import SETTINGS_KEY, StudySettings
from edit_search.search_spaces import (
    NUM_PIXELS,
    Family,
    Recipe,
    apply_recipe,
    edit_sweep,
    pixel_operation,
    ranking,
    suggest_family,
    sweep_counts,
)

logger = logging.getLogger(__name__)

RECIPE_KEY = "recipe"
# Trials in a row without a better safe edit after which `edit-search run` stops a study: on
# the shipped digits the best edit came from the warm start every time.
DEFAULT_PATIENCE = 16


@dataclass(frozen=True)
class Progress:
    """What the loop reports after each batch of trials.

    Attributes:
        done: trials finished in this call.
        total: trials asked for in this call.
        best_preserved: the most preserved share among edits with margin >= min_margin, or
            None while there is none.
        best_margin: that edit's margin.
    """

    done: int
    total: int
    best_preserved: float | None
    best_margin: float | None


@dataclass(frozen=True)
class _Job:
    trial: optuna.Trial
    family: Family
    counts: torch.Tensor
    strengths: torch.Tensor
    keep: tuple[int, ...] = ()


def choose(
    margins: torch.Tensor, preserved: torch.Tensor, min_preserve: float, min_margin: float
) -> int:
    """Index of the edit a trial reports among its sweep.

    The most preserved edit with margin >= ``min_margin``, the larger margin on a tie; when no
    edit reaches that margin, the feasible edit with the largest margin; when none is feasible,
    the most preserved edit.

    Args:
        margins: shape (N,), finite.
        preserved: shape (N,).
        min_preserve: the constraint.
        min_margin: the safety margin.
    """
    feasible = preserved >= min_preserve - 1e-12
    good = feasible & (margins >= min_margin)
    if good.any():
        key = torch.where(good, preserved * 1e6 + margins.clamp(-1e5, 1e5), -math.inf)
    elif feasible.any():
        key = torch.where(feasible, margins, -math.inf)
    else:
        key = preserved * 1e6 + margins.clamp(-1e5, 1e5)
    return int(torch.argmax(key))


def _prepare(trial: optuna.Trial, settings: StudySettings, ctx: EditContext) -> _Job:
    family = suggest_family(trial, settings.space)
    fixed_pixels = trial.user_attrs.get("fixed_pixels")
    keep = tuple(int(i) for i in trial.user_attrs.get("fixed_keep", ()))
    if fixed_pixels is not None:
        counts = [int(fixed_pixels)]
        strengths = [float(trial.user_attrs["fixed_strength"])]
    else:
        counts = sweep_counts(ctx.budget(settings.min_preserve))
        strengths = list(settings.space.strengths)
    return _Job(
        trial,
        family,
        torch.tensor(counts, dtype=torch.int64, device=ctx.device),
        torch.tensor(strengths, dtype=torch.float32, device=ctx.device),
        keep,
    )


def _edits(job: _Job, ctx: EditContext) -> torch.Tensor:
    family = job.family
    attribution = ctx.attributions.get(family.method, family.target)
    rank = ranking(attribution, family.polarity, ctx.pixels, family.operation)
    operation = pixel_operation(attribution, family.polarity, family.operation)
    return edit_sweep(
        ctx.pixels, rank, job.counts, job.strengths, operation, family.regions, job.keep
    )


def _tell(
    study: optuna.Study, job: _Job, scores: Scores, settings: StudySettings
) -> tuple[float, float] | None:
    finite = torch.isfinite(scores.margin)
    if not finite.all():
        logger.warning("trial %d: %d non-finite scores", job.trial.number, int((~finite).sum()))
    if not finite.any():
        study.tell(job.trial, state=optuna.trial.TrialState.FAIL)
        return None
    margins = torch.where(finite, scores.margin, torch.full_like(scores.margin, -1e30))
    preserved = torch.where(finite, scores.preserved, torch.zeros_like(scores.preserved))
    best = choose(margins, preserved, settings.min_preserve, settings.min_margin)

    strengths = job.strengths.cpu()
    count = int(job.counts[best // len(strengths)])
    strength = float(strengths[best % len(strengths)])
    family = job.family
    recipe = Recipe(
        family.method,
        family.target,
        family.polarity,
        count,
        family.operation,
        round(strength, 6),
        family.regions,
        job.keep,
    )
    value_margin = float(scores.margin[best])
    value_preserved = float(scores.preserved[best])
    trial = job.trial
    trial.set_user_attr(RECIPE_KEY, recipe.to_dict())
    trial.set_user_attr("edited_prediction", int(scores.predicted[best]))
    trial.set_user_attr("edits_scored", int(len(scores.margin)))
    violation = constraint(scores.preserved[best], settings.min_preserve)
    set_constraint(trial, "min_preserve", float(violation))
    study.tell(trial, [value_margin, value_preserved])
    return value_margin, value_preserved


def optimize(
    study: optuna.Study,
    ctx: EditContext,
    n_trials: int,
    *,
    trials_per_batch: int = 8,
    polish: bool = True,
    patience: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> None:
    """Run up to ``n_trials`` more trials of a study on one image.

    Stops early once an edit that changes a single pixel reaches the safety margin (no edit
    can preserve more), or, with ``patience``, once that many trials in a row have not
    improved the best safe edit found in this call.

    Args:
        study: created by ``create_or_resume``.
        ctx: the image and model the study is about.
        n_trials: how many trials to add at most.
        trials_per_batch: trials asked for before their edits are scored together.
        polish: spend the last trial on pruning the best safe edit (when ``n_trials`` >= 2).
        patience: stop after this many trials without improvement, once a safe edit exists.
        on_progress: called after every batch.

    A KeyboardInterrupt leaves every told trial in storage; trials asked but not yet told are
    marked failed, so none stays RUNNING.
    """
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    polish = polish and n_trials >= 2
    searched = n_trials - 1 if polish else n_trials
    best: tuple[float, float] | None = None  # (preserved, margin)
    stale = 0  # trials since ``best`` last improved
    done = 0
    while done < n_trials:
        polished = _polish(study, ctx, settings) if done >= searched else None
        if polished is not None:
            results: list[tuple[float, float] | None] = [polished]
        else:
            size = min(trials_per_batch, searched - done) if done < searched else 1
            results = _run_batch(study, ctx, settings, size)
        for result in results:
            stale += 1
            if result is None:
                continue
            margin_value, preserved_value = result
            safe = margin_value >= settings.min_margin
            if safe and preserved_value >= settings.min_preserve:
                candidate = (preserved_value, margin_value)
                if best is None or candidate > best:
                    best, stale = candidate, 0
        done += len(results)
        if on_progress is not None:
            on_progress(Progress(done, n_trials, *(best or (None, None))))
        if best is not None and best[0] >= 1.0 - 1.0 / NUM_PIXELS - 1e-12:
            break
        if patience is not None and best is not None and stale >= patience and done < searched:
            # Out of patience: go straight to the closing polish trial, if any, then stop.
            searched = done
            n_trials = done + (1 if polish else 0)


def _run_batch(
    study: optuna.Study, ctx: EditContext, settings: StudySettings, size: int
) -> list[tuple[float, float] | None]:
    """Ask ``size`` trials, score all their edits together, tell each its best edit."""
    untold: list[optuna.Trial] = []
    jobs: list[_Job] = []
    results: list[tuple[float, float] | None] = []
    try:
        for _ in range(size):
            # Ctrl-C waits until the asked trial is on the list of trials to close.
            with interrupts_deferred():
                untold.append(study.ask())
            jobs.append(_prepare(untold[-1], settings, ctx))
        edits = [_edits(job, ctx) for job in jobs]
        scores = ctx.score(torch.cat(edits))
        start = 0
        for job, batch in zip(jobs, edits, strict=True):
            part = _slice(scores, start, start + batch.shape[0])
            start += batch.shape[0]
            with interrupts_deferred():
                results.append(_tell(study, job, part, settings))
                untold.remove(job.trial)
    except BaseException:
        for trial in untold:
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise
    return results


def _best_safe(study: optuna.Study, settings: StudySettings) -> optuna.trial.FrozenTrial | None:
    """The feasible trial with the most preserved pixels at the safety margin, if any."""
    safe = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None
        and RECIPE_KEY in t.user_attrs
        and t.values[0] >= settings.min_margin
        and t.values[1] >= settings.min_preserve - 1e-12
    ]
    return max(safe, key=lambda t: (t.values[1], t.values[0]), default=None)


def prune(
    ctx: EditContext, edit: torch.Tensor, min_margin: float, keep: tuple[int, ...] = ()
) -> tuple[int, ...]:
    """Undo changed pixels of an edit one at a time while the margin stays >= ``min_margin``.

    Each step scores every single undo in one pass and keeps the one with the largest margin.

    Args:
        ctx: the image and model.
        edit: uint8, shape (28, 28).
        min_margin: the margin every step must keep.
        keep: pixels already undone.

    Returns:
        ``keep`` extended by the undone pixels' flat indices.
    """
    original = ctx.pixels.reshape(-1)
    current = edit.reshape(-1).clone()  # (784,)
    undone = list(keep)
    while True:
        changed = (current != original).nonzero().reshape(-1)  # (n,)
        if len(changed) <= 1:
            break
        trials = current.repeat(len(changed), 1)  # (n, 784)
        rows = torch.arange(len(changed), device=trials.device)
        trials[rows, changed] = original[changed]
        margins = ctx.score(trials.reshape(-1, 28, 28)).margin  # (n,)
        best = int(torch.argmax(margins))
        # A small allowance: the polished trial is scored again in another batch, where float
        # sums may differ in the last bits, and must still reach the margin there.
        if not float(margins[best]) >= min_margin + 1e-4:
            break
        pixel = int(changed[best])
        current[pixel] = original[pixel]
        undone.append(pixel)
    return tuple(sorted(undone))


def _polish(
    study: optuna.Study, ctx: EditContext, settings: StudySettings
) -> tuple[float, float] | None:
    """Add the pruned best safe edit as a finished trial; None when there is nothing to prune.

    The trial is added whole (``add_trial``), never enqueued: a waiting trial could be taken
    twice by processes sharing the study on a storage without row locks.
    """
    trial = _best_safe(study, settings)
    if trial is None:
        return None
    recipe = Recipe.from_dict(trial.user_attrs[RECIPE_KEY])
    attribution = ctx.attributions.get(recipe.method, recipe.target)
    edit = apply_recipe(ctx.pixels, attribution, recipe)
    keep = prune(ctx, edit, settings.min_margin, recipe.keep)
    if keep == recipe.keep:
        return None

    pruned = Recipe(**{**recipe.__dict__, "keep": keep})
    scores = ctx.score(apply_recipe(ctx.pixels, attribution, pruned)[None])
    value_margin, value_preserved = float(scores.margin[0]), float(scores.preserved[0])
    violation = float(constraint(scores.preserved[0], settings.min_preserve))
    study.add_trial(
        optuna.trial.create_trial(
            params=trial.params,
            distributions=trial.distributions,
            values=[value_margin, value_preserved],
            user_attrs={
                RECIPE_KEY: pruned.to_dict(),
                "edited_prediction": int(scores.predicted[0]),
                "edits_scored": 1,
                "polished_from": trial.number,
                "fixed_pixels": pruned.pixels,
                "fixed_strength": pruned.strength,
                "fixed_keep": list(keep),
            },
            system_attrs={"constraints": [violation]},
            constraints={"min_preserve": violation},
        )
    )
    return value_margin, value_preserved


def _slice(scores: Scores, start: int, stop: int) -> Scores:
    return Scores(
        scores.logits[start:stop],
        scores.margin[start:stop],
        scores.preserved[start:stop],
        scores.predicted[start:stop],
    )
