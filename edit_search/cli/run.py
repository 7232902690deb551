"""``edit-search run``: one study per image, the best edit exported, a results table."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click
import optuna
import torch
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edit_search.cli._common import (
    check_out_dir,
    check_out_file,
    err,
    handle_errors,
    margin_value,
    methods_option,
    min_preserve_option,
    model_options,
    storage_option,
    study_name_value,
)
from edit_search.cli._results import (
    TABLE_SUFFIXES,
    Outcome,
    exit_code,
    print_results,
    render_table_file,
    status_of,
)
from edit_search.data.checkpoint import load_model, resolve_device
from edit_search.data.images import LoadedImage, list_images, load_image, write_atomic
from edit_search.data.model import Classifier, Transform
from edit_search.errors import EXIT_INTERRUPTED, EditSearchError
from edit_search.optimizer import DEFAULT_PATIENCE, SAMPLERS, open_storage
from edit_search.optimizer import Progress as TrialProgress
from edit_search.runs import RunResult, run_study, settings_for, trial_counts
from edit_search.search_spaces import SearchSpace


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
@model_options
@min_preserve_option
@click.option(
    "--min-margin",
    type=float,
    default=1.0,
    show_default=True,
    callback=margin_value,
    help="Safety margin: the best edit is the most preserved one at least this far "
    "past the decision boundary (in logits, >= 0).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=48,
    show_default=True,
    help="Trials to add to each study; each trial scores a whole sweep of edits.",
)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@methods_option("search")
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=DEFAULT_PATIENCE,
    show_default=True,
    help="Stop a study early after this many trials without a better safe edit.",
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
    callback=study_name_value,
    help="Study name to use instead of the one derived from image and settings "
    "(a plain name: it is also the export folder's).",
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
@click.option(
    "--table",
    "table_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results table to FILE: CSV for .csv, Markdown for .md.",
)
@handle_errors
def run(
    images: tuple[Path, ...],
    extra: tuple[Path, ...],
    folder: Path | None,
    label: int | None,
    model_path: Path | None,
    arch: str | None,
    transform: Transform | None,
    trust_checkpoint: bool,
    min_preserve: float,
    min_margin: float,
    trials: int,
    sampler: str,
    methods: tuple[str, ...],
    patience: int,
    max_regions: int,
    storage: str | None,
    study_name: str | None,
    out_dir: Path | None,
    device: str,
    invert: bool,
    fmt: str,
    table_path: Path | None,
) -> None:
    """Fix misclassified IMAGES: search edits, export the best one of each.

    With several images, one that cannot be loaded or has no feasible edit is reported in the
    table with its reason and the others still run. Exit code: 0 when every image is fixed,
    2 when any failed to load, 1 when any hit another error, 3 when any had no feasible edit
    (the first of these that applies, in this order).
    """
    paths = list(images) + list(extra) + (list_images(folder) if folder else [])
    if not paths:
        raise click.UsageError("give an image (--image PATH) or a folder (--images DIR).")
    chosen = methods
    if study_name and len(paths) > 1:
        raise click.UsageError("--study names one study; use it with a single image.")
    check_out_file(table_path, "--table", TABLE_SUFFIXES, "CSV (.csv) or Markdown (.md)")
    check_out_dir(out_dir, "--out")
    if out_dir is not None:
        _refuse_same_export_name(paths, out_dir)

    model = load_model(
        model_path,
        device=resolve_device(device),
        arch=arch,
        transform=transform,
        trust_checkpoint=trust_checkpoint,
    )
    space = SearchSpace(methods=chosen, max_regions=max_regions)
    backend = open_storage(storage)
    outcomes: list[Outcome] = []
    current: dict[str, optuna.Study] = {}

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # bars on a pipe or file are noise
    ) as bars:
        overall = bars.add_task("images", total=len(paths), best="") if len(paths) > 1 else None
        trial_bar = bars.add_task("trials", total=trials, best="")

        def show(p: TrialProgress) -> None:
            best = (
                ""
                if p.best_preserved is None
                else f"best {p.best_preserved:.2%} kept, margin {p.best_margin:.2f}"
            )
            bars.update(trial_bar, completed=p.done, best=best)

        def remember(study: optuna.Study) -> None:
            current["study"] = study

        try:
            for path in paths:
                bars.reset(trial_bar, total=trials, description=path.name, best="")
                current.pop("study", None)
                started = time.perf_counter()
                image = None
                try:
                    image = load_image(
                        path, label=label, num_classes=model.num_classes, invert=invert
                    )
                    for note in image.notes:
                        err.print(f"[yellow]Note:[/] {escape(path.name)}: {escape(note)}")
                    settings = settings_for(
                        image,
                        model_path=model_path,
                        arch=arch,
                        min_preserve=min_preserve,
                        min_margin=min_margin,
                        sampler=sampler,
                        space=space,
                        transform=transform,
                    )
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
                        patience=patience,
                    )
                    _note(result)
                    outcomes.append(Outcome.from_result(result, time.perf_counter() - started))
                except EditSearchError as exc:
                    if len(paths) == 1:
                        raise
                    outcome = _failure(path, image, exc, model, current.get("study"), started)
                    err.print(
                        f"[red]{outcome.status}:[/] {escape(path.name)}: {escape(str(exc))}",
                        highlight=False,
                    )
                    outcomes.append(outcome)
                if overall is not None:
                    bars.advance(overall)
        except KeyboardInterrupt:
            bars.stop()
            study = current.get("study")
            _print_resume(study.study_name if study else None, storage)
            sys.exit(EXIT_INTERRUPTED)

    if table_path is not None:
        write_atomic(table_path, render_table_file(outcomes, table_path).encode())
    print_results(outcomes, fmt)
    code = exit_code(outcomes)
    if code:
        sys.exit(code)


def _refuse_same_export_name(paths: list[Path], out_dir: Path) -> None:
    """Two images with one stem (``d_label7.png``, ``d_label7.bmp``) would both export to
    ``OUT/d_label7.png``, the name ``verify`` matches to its original; refuse before any work."""
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(path.stem, path)
        if other != path:
            raise click.BadParameter(
                f"{str(other)!r} and {str(path)!r} would both be exported to "
                f"{str(out_dir / (path.stem + '.png'))!r}; rename one of them, or drop -o so "
                "each goes to its study's folder.",
                param_hint="--out",
            )


def _note(result: RunResult) -> None:
    """A Note on stderr for a result that is not plainly fixed."""
    if result.reason:
        err.print(
            f"[yellow]Note:[/] {escape(result.image)}: {result.status}: {escape(result.reason)}.",
            highlight=False,
        )


def _failure(
    path: Path,
    image: LoadedImage | None,
    exc: EditSearchError,
    model: Classifier,
    study: optuna.Study | None,
    started: float,
) -> Outcome:
    """The row of an image that was not fixed, with what is known about it."""
    original = None
    if image is not None:
        device = next(model.parameters()).device
        with torch.no_grad():
            original = int(model(image.image.to(device)).argmax(dim=1)[0])
    return Outcome(
        image=path.name,
        label=None if image is None else image.label,
        original_prediction=original,
        edited_prediction=None,
        preserved=None,
        margin=None,
        trials=trial_counts(study)[0] if study is not None else 0,
        failed=trial_counts(study)[1] if study is not None else 0,
        seconds=time.perf_counter() - started,
        status=status_of(exc),
        reason=str(exc),
        study=study.study_name if study is not None else None,
        export=None,
        exit_code=exc.exit_code,
    )


def _print_resume(study: str | None, storage: str | None) -> None:
    err.print("Interrupted: the trials already scored are saved in the study's storage.")
    if study:
        command = ["edit-search", "resume", study]
        if storage:
            command += ["--storage", storage]
        err.print(f"Resume with: {shlex.join(command)}", highlight=False)
