"""The search space as Optuna distributions: a trial proposes a recipe family.

A trial samples everything but the top-k count and the strength; the optimizer sweeps those
two exhaustively in one batched forward pass, because they are cheap to score together and
the count is the one parameter the preserved share depends on directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from edit_search.attribution import METHODS, TARGETS
from edit_search.search_spaces._recipe import (
    NUM_PIXELS,
    OPERATIONS,
    POLARITIES,
    TOPK_OPERATIONS,
    Region,
)

DEFAULT_STRENGTHS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class SearchSpace:
    """Which recipes a study may try.

    Attributes:
        methods: attribution methods to choose from.
        targets: attribution targets to choose from.
        polarities: ranking polarities to choose from.
        operations: operations on the top-k pixels.
        strengths: the strengths swept for every top-k count.
        max_regions: at most this many rectangular region masks per recipe.
        max_region_size: the longest side of a region, in pixels.
    """

    methods: tuple[str, ...] = METHODS
    targets: tuple[str, ...] = TARGETS
    polarities: tuple[str, ...] = POLARITIES
    operations: tuple[str, ...] = TOPK_OPERATIONS
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    max_regions: int = 2
    max_region_size: int = 6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for recording beside a study."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """Read back ``to_dict`` output."""
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class Family:
    """What one trial samples: a recipe without its top-k count and strength."""

    method: str
    target: str
    polarity: str
    operation: str
    regions: tuple[Region, ...] = field(default=())


def suggest_family(trial: optuna.Trial, space: SearchSpace) -> Family:
    """Sample a recipe family from ``space`` through Optuna's suggest API."""
    method = trial.suggest_categorical("method", list(space.methods))
    target = trial.suggest_categorical("target", list(space.targets))
    polarity = trial.suggest_categorical("polarity", list(space.polarities))
    operation = trial.suggest_categorical("operation", list(space.operations))

    regions: list[Region] = []
    count = trial.suggest_int("regions", 0, space.max_regions) if space.max_regions else 0
    for i in range(count):
        x = trial.suggest_int(f"region{i}_x", 0, 27)
        y = trial.suggest_int(f"region{i}_y", 0, 27)
        width = trial.suggest_int(f"region{i}_width", 1, space.max_region_size)
        height = trial.suggest_int(f"region{i}_height", 1, space.max_region_size)
        op = trial.suggest_categorical(f"region{i}_operation", list(OPERATIONS))
        strength = trial.suggest_float(f"region{i}_strength", 0.05, 1.0)
        regions.append(
            Region(x, y, min(width, 28 - x), min(height, 28 - y), op, round(strength, 4))
        )
    return Family(method, target, polarity, operation, tuple(regions))


def sweep_counts(budget: int) -> list[int]:
    """Top-k pixel counts to sweep: every count up to 32, then coarser steps up to ``budget``."""
    budget = max(1, min(budget, NUM_PIXELS))
    counts: list[int] = []
    step, count = 1, 1
    while count <= budget:
        counts.append(count)
        if count >= 32 * step:
            step *= 2
        count += step
    if counts[-1] != budget:
        counts.append(budget)
    return counts
