"""The recipe: one point of the search space, and its region masks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from edit_search.attribution import METHODS, TARGETS
from edit_search.errors import InputError

# Operations of a region, and of the top-k pixels; ``push`` moves each top-k pixel the way its
# signed attribution says helps (lighten where positive, darken where negative).
OPERATIONS = ("lighten", "darken")
TOPK_OPERATIONS = ("lighten", "darken", "push")
POLARITIES = ("positive", "negative", "absolute")
SIDE = 28
NUM_PIXELS = SIDE * SIDE


@dataclass(frozen=True)
class Region:
    """A rectangle of pixels with its own operation.

    Attributes:
        x: left column, 0-27.
        y: top row, 0-27.
        width: columns covered, clipped at the image's edge.
        height: rows covered, clipped at the image's edge.
        operation: ``lighten`` (``x + s(1 - x)``) or ``darken`` (``x(1 - s)``).
        strength: s in (0, 1].
    """

    x: int
    y: int
    width: int
    height: int
    operation: str
    strength: float


@dataclass(frozen=True)
class Recipe:
    """What to change: the top-ranked pixels of an attribution map, then any regions.

    Attributes:
        method: attribution method, one of ``attribution.METHODS``.
        target: ``true``, ``predicted`` or ``margin``.
        polarity: rank by the map (``positive``), its negation, or its absolute value.
        pixels: how many top-ranked pixels are changed (the top-k, as a count).
        operation: ``lighten``, ``darken`` or ``push`` for those pixels; only pixels the
            operation can change (not already white for lighten, not already black for darken)
            are ranked.
        strength: s in (0, 1].
        regions: rectangles applied after the top-k edit, in order.
        keep: flat pixel indices (row * 28 + column) left unchanged after everything else;
            the search's final prune records the changes it found unnecessary here.
    """

    method: str
    target: str
    polarity: str
    pixels: int
    operation: str
    strength: float
    regions: tuple[Region, ...] = field(default=())
    keep: tuple[int, ...] = field(default=())

    @property
    def top_k(self) -> float:
        """The top-k as a fraction of the image's pixels."""
        return self.pixels / NUM_PIXELS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` reads it back."""
        data = asdict(self)
        data["regions"] = [asdict(r) for r in self.regions]
        data["keep"] = list(self.keep)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Rebuild a recipe from ``to_dict`` output; recipes without ``keep`` read as before.

        Every field is checked, so a hand-edited recipe fails here with one line instead of
        deep inside the edit code.

        Raises:
            InputError: a field is missing, of the wrong type or outside its range.
        """
        if not isinstance(data, dict):
            raise InputError(
                f"recipe must be a JSON object; received {type(data).__name__}; "
                "pass a recipe written by 'edit-search export'."
            )
        regions = data.get("regions", ())
        if not isinstance(regions, (list, tuple)):
            _bad("regions", regions, "a list of region objects")
        keep = data.get("keep", ())
        if not isinstance(keep, (list, tuple)):
            _bad("keep", keep, f"a list of pixel indices 0-{NUM_PIXELS - 1}")
        return cls(
            method=_choice(data, "method", METHODS),
            target=_choice(data, "target", TARGETS),
            polarity=_choice(data, "polarity", POLARITIES),
            pixels=_integer(data, "pixels", 1, NUM_PIXELS),
            operation=_choice(data, "operation", TOPK_OPERATIONS),
            strength=_strength(data, "strength"),
            regions=tuple(_region(r, i) for i, r in enumerate(regions)),
            keep=tuple(
                _integer({"keep": k}, "keep", 0, NUM_PIXELS - 1, f"keep[{i}]")
                for i, k in enumerate(keep)
            ),
        )

    def describe(self) -> str:
        """A short human-readable summary."""
        text = (
            f"{self.method}[{self.target},{self.polarity}] top {self.pixels} px "
            f"{self.operation} {self.strength:.2f}"
        )
        for r in self.regions:
            text += f" + {r.operation} {r.strength:.2f} @({r.x},{r.y},{r.width}x{r.height})"
        if self.keep:
            text += f" keeping {len(self.keep)} px"
        return text


def _bad(name: str, value: object, allowed: str) -> NoReturn:
    raise InputError(
        f"recipe field {name} is {value!r}; it must be {allowed}. Fix the recipe file or "
        "export it again with 'edit-search export'."
    )


def _get(data: dict[str, Any], key: str, name: str) -> Any:
    if key not in data:
        raise InputError(
            f"recipe field {name} is missing; export the recipe again with 'edit-search export'."
        )
    return data[key]


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], name: str = "") -> str:
    value = _get(data, key, name or key)
    if value not in allowed:
        _bad(name or key, value, f"one of {', '.join(allowed)}")
    return str(value)


def _integer(data: dict[str, Any], key: str, low: int, high: int, name: str = "") -> int:
    value = _get(data, key, name or key)
    # bool is an int to Python, and 3.0 reads as 3; anything else is refused.
    whole = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, int) or whole):
        _bad(name or key, value, f"a whole number from {low} to {high}")
    if not low <= int(value) <= high:
        _bad(name or key, value, f"a whole number from {low} to {high}")
    return int(value)


def _strength(data: dict[str, Any], key: str, name: str = "") -> float:
    value = _get(data, key, name or key)
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0.0 < number <= 1.0:
        _bad(name or key, value, "a finite number in (0, 1]")
    return float(value)


def _region(data: object, index: int) -> Region:
    name = f"regions[{index}]"
    if not isinstance(data, dict):
        _bad(name, data, "an object with x, y, width, height, operation and strength")
    unknown = sorted(set(data) - {"x", "y", "width", "height", "operation", "strength"})
    if unknown:
        _bad(f"{name}.{unknown[0]}", data[unknown[0]], "absent (not a region field)")
    x = _integer(data, "x", 0, SIDE - 1, f"{name}.x")
    y = _integer(data, "y", 0, SIDE - 1, f"{name}.y")
    return Region(
        x=x,
        y=y,
        # Inside the image: the search clips a rectangle at the edge before recording it.
        width=_integer(data, "width", 1, SIDE - x, f"{name}.width"),
        height=_integer(data, "height", 1, SIDE - y, f"{name}.height"),
        operation=_choice(data, "operation", OPERATIONS, f"{name}.operation"),
        strength=_strength(data, "strength", f"{name}.strength"),
    )
