"""``edit-search run``: one study per image, the best edit exported, a results table."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edit_search.attribution import METHODS
from edit_search.cli._common import err, handle_errors, print_table, storage_option
from edit_search.data.checkpoint import load_model, resolve_device
from edit_search.data.images import list_images, load_image
from edit_search.errors import EXIT_INTERRUPTED
from edit_search.optimizer import SAMPLERS, open_storage
from edit_search.optimizer import Progress as TrialProgress
from edit_search.runs import RunResult, run_study, settings_for
from edit_search.search_spaces import SearchSpace


def _unit_interval(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"must be between 0 and 1; received {value}.")
    return value


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--image",
    "extra",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An image to fix (repeatable); its label comes from a name like 2_label3.png.",
)
@click.option(
    "--images",
    "folder",
    type=click.Path(path_type=Path),
    help="A folder of images: one study per image.",
)
@click.option("--label", type=int, default=None, help="The true class, when the name has none.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A state_dict checkpoint [default: the shipped SmallCNN].",
)
@click.option(
    "--arch",
    default=None,
    metavar="MODULE:CLASS",
    help="The network class of --model [default: SmallCNN].",
)
@click.option(
    "--min-preserve",
    type=float,
    default=0.6,
    show_default=True,
    callback=_unit_interval,
    help="Least share of pixels an edit must keep unchanged.",
)
@click.option(
    "--min-margin",
    type=float,
    default=1.0,
    show_default=True,
    help="Safety margin: the best edit is the most preserved one at least this far "
    "past the decision boundary (in logits).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=48,
    show_default=True,
    help="Trials to add to each study; each trial scores a whole sweep of edits.",
)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option(
    "--methods",
    default=",".join(METHODS),
    show_default=False,
    help="Comma-separated attribution methods to search [default: all].",
)
@click.option(
    "--max-regions",
    type=click.IntRange(0, 4),
    default=2,
    show_default=True,
    help="At most this many rectangular region masks per recipe.",
)
@storage_option
@click.option(
    "--study",
    "study_name",
    default=None,
    help="Study name to use instead of the one derived from image and settings.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for exported edits [default: runs/STUDY].",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--invert", is_flag=True, help="Images are dark digits on a light background.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@handle_errors
def run(
    images: tuple[Path, ...],
    extra: tuple[Path, ...],
    folder: Path | None,
    label: int | None,
    model_path: Path | None,
    arch: str | None,
    min_preserve: float,
    min_margin: float,
    trials: int,
    sampler: str,
    methods: str,
    max_regions: int,
    storage: str | None,
    study_name: str | None,
    out_dir: Path | None,
    device: str,
    invert: bool,
    fmt: str,
) -> None:
    """Fix misclassified IMAGES: search edits, export the best one of each."""
    paths = list(images) + list(extra) + (list_images(folder) if folder else [])
    if not paths:
        raise click.UsageError("give an image (--image PATH) or a folder (--images DIR).")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(METHODS)}.",
            param_hint="--methods",
        )
    if study_name and len(paths) > 1:
        raise click.UsageError("--study names one study; use it with a single image.")

    model = load_model(model_path, device=resolve_device(device), arch=arch)
    space = SearchSpace(methods=chosen, max_regions=max_regions)
    backend = open_storage(storage)
    results: list[RunResult] = []
    current: dict[str, str] = {}

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=fmt == "json" and not err.is_terminal,
    ) as bars:
        overall = bars.add_task("images", total=len(paths), best="") if len(paths) > 1 else None
        try:
            for path in paths:
                image = load_image(path, label=label, num_classes=model.num_classes, invert=invert)
                for note in image.notes:
                    err.print(f"[yellow]Note:[/] {path.name}: {note}")
                settings = settings_for(
                    image,
                    model_path=model_path,
                    arch=arch,
                    min_preserve=min_preserve,
                    min_margin=min_margin,
                    sampler=sampler,
                    space=space,
                )
                task = bars.add_task(path.name, total=trials, best="")

                def show(p: TrialProgress, task: int = task) -> None:
                    best = (
                        ""
                        if p.best_preserved is None
                        else (f"best {p.best_preserved:.2%} kept, margin {p.best_margin:.2f}")
                    )
                    bars.update(task, completed=p.done, best=best)

                def remember(study: optuna.Study) -> None:
                    current["study"] = study.study_name

                result = run_study(
                    backend,
                    settings,
                    model,
                    image,
                    n_trials=trials,
                    out_dir=out_dir,
                    study_name=study_name,
                    on_progress=show,
                    on_study=remember,
                )
                bars.update(task, completed=trials)
                results.append(result)
                if overall is not None:
                    bars.advance(overall)
        except KeyboardInterrupt:
            bars.stop()
            _print_resume(current.get("study"), storage)
            sys.exit(EXIT_INTERRUPTED)

    _print_results(results, fmt)


def _print_resume(study: str | None, storage: str | None) -> None:
    err.print("Interrupted: the trials already scored are saved in the study's storage.")
    if study:
        command = ["edit-search", "resume", study]
        if storage:
            command += ["--storage", storage]
        err.print(f"Resume with: {shlex.join(command)}", highlight=False)


def _print_results(results: list[RunResult], fmt: str) -> None:
    if fmt == "json":
        for r in results:
            record = {
                "image": r.image,
                "label": r.label,
                "original_prediction": r.original_prediction,
                "edited_prediction": r.edited_prediction,
                "margin": r.margin,
                "preserved": r.preserved,
                "trials": r.trials,
                "study": r.study,
                "export": r.export,
                "seconds": round(r.seconds, 3),
            }
            click.echo(json.dumps(record))
        return
    table = Table(title="edit-search results")
    for column in (
        "image",
        "true",
        "predicted",
        "edited",
        "margin",
        "preserved",
        "trials",
        "study",
        "export",
    ):
        justify = "right" if column in ("margin", "preserved", "trials") else "left"
        table.add_column(column, justify=justify)
    for r in results:
        table.add_row(
            r.image,
            str(r.label),
            str(r.original_prediction),
            str(r.edited_prediction),
            f"{r.margin:.3f}" if r.margin is not None else "-",
            f"{r.preserved:.2%}" if r.preserved is not None else "-",
            str(r.trials),
            r.study,
            r.export or "-",
        )
    print_table(table)
