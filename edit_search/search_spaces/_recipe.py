"""The recipe: one point of the search space, and its region masks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Operations of a region, and of the top-k pixels; ``push`` moves each top-k pixel the way its
# signed attribution says helps (lighten where positive, darken where negative).
OPERATIONS = ("lighten", "darken")
TOPK_OPERATIONS = ("lighten", "darken", "push")
POLARITIES = ("positive", "negative", "absolute")
NUM_PIXELS = 28 * 28


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
        """Rebuild a recipe from ``to_dict`` output; recipes without ``keep`` read as before."""
        fields = {k: data[k] for k in ("method", "target", "polarity", "operation")}
        regions = tuple(Region(**r) for r in data.get("regions", ()))
        return cls(
            pixels=int(data["pixels"]),
            strength=float(data["strength"]),
            regions=regions,
            keep=tuple(int(i) for i in data.get("keep", ())),
            **fields,
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
