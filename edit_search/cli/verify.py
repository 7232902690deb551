"""``edit-search verify``: grade a folder of edited digits against their originals."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from edit_search.cli._common import (
    err,
    handle_errors,
    min_preserve_option,
    model_options,
    print_table,
)
from edit_search.data.checkpoint import load_model
from edit_search.data.model import Transform
from edit_search.verify import Report, verify_folder

#: Exit code when at least one edit fails.
EXIT_FAILED = 1


@click.command()
@click.argument("edited_dir", type=click.Path(path_type=Path))
@click.option(
    "--originals",
    "originals_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of the unedited digits, named with their labels like 2_label3.png.",
)
@min_preserve_option
@model_options
@handle_errors
def verify(
    edited_dir: Path,
    originals_dir: Path,
    min_preserve: float,
    model_path: Path | None,
    arch: str | None,
    transform: Transform | None,
    trust_checkpoint: bool,
) -> None:
    """Check every edit in EDITED_DIR against the original of the same name.

    An edit passes when the model predicts the label in the original's name and at least
    --min-preserve of its pixels equal the original's. Exit code 0 only when all pass, 1 when
    any fails, 2 on bad input.
    """
    model = load_model(
        model_path, arch=arch, transform=transform, trust_checkpoint=trust_checkpoint
    )
    report = verify_folder(model, edited_dir, originals_dir, min_preserve)

    if report.unmatched:
        count = len(report.unmatched)
        names = ", ".join(report.unmatched[:5]) + (", ..." if count > 5 else "")
        err.print(
            f"[yellow]Note:[/] skipped {count} file{'s' if count > 1 else ''} with no original "
            f"of the same name in {escape(str(originals_dir))}: {escape(names)}.",
            highlight=False,
        )
    _print_report(report)
    click.echo(report.summary())
    if report.failed:
        sys.exit(EXIT_FAILED)


def _print_report(report: Report) -> None:
    table = Table(title="edit-search verify")
    for column in ("image", "label", "predicted", "margin", "preserved", "result", "reason"):
        table.add_column(column, justify="right" if column in ("margin", "preserved") else "left")
    for v in report.verdicts:
        table.add_row(
            v.image,
            "-" if v.label is None else str(v.label),
            "-" if v.predicted is None else str(v.predicted),
            "-" if v.margin is None else f"{v.margin:.3f}",
            "-" if v.preserved is None else f"{v.preserved:.2%}",
            "[green]pass[/]" if v.passed else "[red]FAIL[/]",
            escape(v.reason),
        )
    print_table(table)
