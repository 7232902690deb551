"""What a study's trials add up to: counts, feasibility, the Pareto front and its picture."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edit_search.data.images import write_atomic
from edit_search.optimizer import RECIPE_KEY, SETTINGS_KEY, StudySettings
from edit_search.pictures import PlotPoint, pareto_png


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """COMPLETE and FAIL trials of a study."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return states.count(TrialState.COMPLETE), states.count(TrialState.FAIL)


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


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, both coordinates maximized.

    A point is dominated when another is at least as large in both coordinates and larger in
    one; equal points do not dominate each other. Points with a NaN or infinite coordinate
    are never on the front.

    Args:
        points: (margin, preserved) pairs.

    Returns:
        The front's indices in ascending order.
    """
    finite = [i for i, (a, b) in enumerate(points) if math.isfinite(a) and math.isfinite(b)]
    # Largest margin first; a point is on the front when it preserves more than every point
    # before it, or equals the last point put on the front.
    order = sorted(finite, key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
        elif front and tuple(points[i]) == tuple(points[front[-1]]):
            front.append(i)
    return sorted(front)


def pareto_front(study: optuna.Study, *, feasible: bool = True) -> list[FrozenTrial]:
    """The Pareto front of margin x preserved among feasible (or infeasible) trials.

    Sorted by preserved share, most preserved first.
    """
    trials = [t for t in completed_trials(study) if is_feasible(t) == feasible]
    front = [trials[i] for i in pareto_indices([(t.values[0], t.values[1]) for t in trials])]
    return sorted(front, key=lambda t: (-t.values[1], -t.values[0], t.number))


def plot_points(study: optuna.Study) -> list[PlotPoint]:
    """Every scored trial of a study, marked feasible or not and on its front or not."""
    on_front = {t.number for t in pareto_front(study)}
    on_front |= {t.number for t in pareto_front(study, feasible=False)}
    return [
        PlotPoint(t.number, t.values[0], t.values[1], is_feasible(t), t.number in on_front)
        for t in completed_trials(study)
    ]


def write_pareto_plot(study: optuna.Study, path: Path) -> Path:
    """Draw a study's trials, front and constraint into a PNG at ``path``."""
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    picture = pareto_png(
        plot_points(study),
        min_preserve=settings.min_preserve,
        title=f"{study.study_name}: {settings.image}, true class {settings.label}",
    )
    write_atomic(path, picture)
    return path


@dataclass(frozen=True)
class StudySummary:
    """One study, as ``edit-search studies`` lists it.

    Attributes:
        study: the study's name.
        image: the image's file name.
        label: the true class.
        min_preserve: the constraint.
        trials: complete trials.
        failed: failed trials.
        running: trials still marked RUNNING.
        feasible: complete trials that keep ``min_preserve`` of the pixels.
        best_preserved: the most preserved share of a feasible trial that makes the model
            right, or None when there is none.
        best_margin: that trial's margin.
    """

    study: str
    image: str
    label: int
    min_preserve: float
    trials: int
    failed: int
    running: int
    feasible: int
    best_preserved: float | None
    best_margin: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(study: optuna.Study) -> StudySummary:
    """The summary of one edit-search study."""
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    states = [t.state for t in study.get_trials(deepcopy=False)]
    feasible = [t for t in completed_trials(study) if is_feasible(t)]
    right = [t for t in feasible if t.values[0] > 0]
    best = max(right, key=lambda t: (t.values[1], t.values[0]), default=None)
    return StudySummary(
        study=study.study_name,
        image=settings.image,
        label=settings.label,
        min_preserve=settings.min_preserve,
        trials=states.count(TrialState.COMPLETE),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        feasible=len(feasible),
        best_preserved=best.values[1] if best else None,
        best_margin=best.values[0] if best else None,
    )
