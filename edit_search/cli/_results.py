"""The results of ``edit-search run`` over many images: rows, exit code, CSV and Markdown."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from edit_search.cli._common import echo_json, print_table
from edit_search.errors import EditSearchError, InputError, NoFeasibleEditError
from edit_search.runs import ALREADY_RIGHT, FIXED, FIXED_BELOW_MARGIN, NOT_FIXED, RunResult

__all__ = ["ALREADY_RIGHT", "FIXED", "FIXED_BELOW_MARGIN", "NOT_FIXED", "Outcome"]

#: Statuses that are a success: exit code 0, not shown in red.
GOOD = (FIXED, FIXED_BELOW_MARGIN, ALREADY_RIGHT)
NO_FEASIBLE = "no feasible edit"
LOAD_FAILED = "failed to load"
ERROR = "error"
TABLE_SUFFIXES = (".csv", ".md", ".markdown")


@dataclass(frozen=True)
class Outcome:
    """One image's row of the results table, fixed or not; ``to_dict`` is the one JSON shape
    of an image's result in every command (run, resume, worker)."""

    image: str
    label: int | None
    original_prediction: int | None
    edited_prediction: int | None
    preserved: float | None
    margin: float | None
    trials: int
    seconds: float
    status: str
    reason: str
    study: str | None
    export: str | None
    failed: int = 0
    exit_code: int = field(default=0, repr=False)

    @classmethod
    def from_result(cls, result: RunResult, seconds: float | None = None) -> Outcome:
        """The row of a study that ran to its export; an edit that does not fix the image
        exits 3, like no feasible edit."""
        return cls(
            image=result.image,
            label=result.label,
            original_prediction=result.original_prediction,
            edited_prediction=result.edited_prediction,
            preserved=result.preserved,
            margin=result.margin,
            trials=result.trials,
            failed=result.failed,
            seconds=result.seconds if seconds is None else seconds,
            status=result.status,
            reason=result.reason,
            study=result.study,
            export=result.export,
            exit_code=NoFeasibleEditError.exit_code if result.status == NOT_FIXED else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["exit_code"]
        record["seconds"] = round(self.seconds, 3)
        return record


def status_of(exc: EditSearchError) -> str:
    """The status word of an image whose study raised ``exc``."""
    if isinstance(exc, NoFeasibleEditError):
        return NO_FEASIBLE
    if isinstance(exc, InputError):
        return LOAD_FAILED
    return ERROR


def exit_code(outcomes: list[Outcome]) -> int:
    """2 when any image failed on bad input, else 1 on another error, else 3 when any had no
    feasible edit, else 0."""
    codes = {o.exit_code for o in outcomes}
    for code in (2, 1, 3):
        if code in codes:
            return code
    return 0


@dataclass(frozen=True)
class Column:
    """One column of the printed and Markdown tables: its title, how a row's cell reads."""

    title: str
    text: Callable[[Outcome], str]
    numeric: bool = False


def _maybe(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


COLUMNS = (
    Column("image", lambda o: o.image),
    Column("true label", lambda o: _maybe(o.label)),
    Column("original prediction", lambda o: _maybe(o.original_prediction)),
    Column("edited prediction", lambda o: _maybe(o.edited_prediction)),
    Column(
        "preserved %",
        lambda o: _maybe(None if o.preserved is None else 100 * o.preserved, "{:.2f}"),
        numeric=True,
    ),
    Column("margin", lambda o: _maybe(o.margin, "{:.3f}"), numeric=True),
    Column(
        "trials",
        lambda o: str(o.trials) + (f" (+{o.failed} failed)" if o.failed else ""),
        numeric=True,
    ),
    Column("time", lambda o: f"{o.seconds:.1f}s", numeric=True),
    Column("status", lambda o: o.status if not o.reason else f"{o.status}: {o.reason}"),
    Column("export", lambda o: _maybe(o.export)),
)
STATUS_COLUMN = COLUMNS[8]
CSV_FIELDS = (
    "image",
    "true_label",
    "original_prediction",
    "edited_prediction",
    "preserved_pct",
    "margin",
    "trials",
    "failed",
    "seconds",
    "status",
    "reason",
    "study",
    "export",
)


def render_table_file(outcomes: list[Outcome], path: Path) -> str:
    """The results as CSV (``.csv``) or a Markdown table (``.md``), chosen by the suffix."""
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for o in outcomes:
            preserved_pct = None if o.preserved is None else round(100 * o.preserved, 4)
            values = (
                o.image,
                o.label,
                o.original_prediction,
                o.edited_prediction,
                preserved_pct,
                o.margin if o.margin is not None and math.isfinite(o.margin) else None,
                o.trials,
                o.failed,
                round(o.seconds, 3),
                o.status,
                o.reason,
                o.study,
                o.export,
            )
            writer.writerow(["" if v is None else v for v in values])
        return buffer.getvalue()

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [
        row([c.title for c in COLUMNS]),
        "| " + " | ".join("---:" if c.numeric else "---" for c in COLUMNS) + " |",
    ]
    lines += [row([c.text(o) for c in COLUMNS]) for o in outcomes]
    return "\n".join(lines) + "\n"


def print_results(outcomes: list[Outcome], fmt: str) -> None:
    """The results on stdout: one JSON object per image, or the table."""
    if fmt == "json":
        for outcome in outcomes:
            echo_json(outcome.to_dict())
        return
    table = Table(title="edit-search results")
    for column in COLUMNS:
        table.add_column(
            column.title, justify="right" if column.numeric else "left", overflow="fold"
        )
    for outcome in outcomes:
        cells = [escape(column.text(outcome)) for column in COLUMNS]
        if outcome.status != FIXED:
            colour = "yellow" if outcome.status in GOOD else "red"
            index = COLUMNS.index(STATUS_COLUMN)
            cells[index] = f"[{colour}]{cells[index]}[/]"
        table.add_row(*cells)
    print_table(table)
