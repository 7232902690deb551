"""After the run: ``studies``, ``pareto``, ``export``, ``resume`` and ``apply``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edit_search.cli._common import (
    check_out_dir,
    check_out_file,
    echo_json,
    err,
    handle_errors,
    margin_value,
    print_table,
    storage_option,
)
from edit_search.cli._results import Outcome
from edit_search.data.checkpoint import resolve_device
from edit_search.errors import EXIT_INTERRUPTED
from edit_search.optimizer import (
    RECIPE_KEY,
    SETTINGS_KEY,
    StudySettings,
    all_study_names,
    load_study,
    open_storage,
)
from edit_search.optimizer import Progress as TrialProgress
from edit_search.reapply import apply_recipe_file, read_recipe_file
from edit_search.runs import (
    NOT_FIXED,
    PICKS,
    context_for,
    edit_status,
    export_dir,
    export_trial,
    find_trial,
    is_feasible,
    pareto_front,
    pick_trial,
    resume_study,
    summarize,
    write_pareto_plot,
)

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


@click.command()
@storage_option
@_FORMAT
@handle_errors
def studies(storage: str | None, fmt: str) -> None:
    """List the studies in a storage, with how far each got."""
    backend = open_storage(storage, create=False)
    summaries = []
    for name in all_study_names(backend):
        study = optuna.load_study(study_name=name, storage=backend)
        if SETTINGS_KEY in study.user_attrs:
            summaries.append(summarize(study))
    if fmt == "json":
        for summary in summaries:
            echo_json(summary.to_dict())
        return
    if not summaries:
        err.print("No edit-search studies in this storage; 'edit-search run' makes one.")
        return
    table = Table(title="edit-search studies")
    for column in ("study", "image", "min-preserve", "trials", "feasible", "best preserved"):
        table.add_column(column, justify="left" if column in ("study", "image") else "right")
    table.add_column("margin", justify="right")
    for s in summaries:
        trials = str(s.trials) + "".join(
            f" (+{n} {word})" for n, word in ((s.running, "running"), (s.failed, "failed")) if n
        )
        table.add_row(
            s.study,
            s.image,
            f"{s.min_preserve:.0%}",
            trials,
            str(s.feasible),
            _percent(s.best_preserved),
            "-" if s.best_margin is None else f"{s.best_margin:.3f}",
        )
    print_table(table)


def _row(trial: optuna.trial.FrozenTrial, label: int) -> dict[str, Any]:
    recipe = trial.user_attrs[RECIPE_KEY]
    regions = recipe.get("regions", [])
    return {
        "trial": trial.number,
        "method": recipe["method"],
        "target": recipe["target"],
        "top_k": recipe["pixels"],
        "operation": recipe["operation"],
        "strength": recipe["strength"],
        "regions": len(regions),
        "margin": trial.values[0],
        "preserved": trial.values[1],
        "prediction": trial.user_attrs.get("edited_prediction"),
        "right": trial.user_attrs.get("edited_prediction") == label,
        "feasible": is_feasible(trial),
    }


@click.command()
@click.argument("study_name", metavar="STUDY")
@storage_option
@_FORMAT
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw every trial, the front and the min-preserve line into FILE.png.",
)
@handle_errors
def pareto(study_name: str, storage: str | None, fmt: str, plot: Path | None) -> None:
    """The Pareto front of margin x preserved among the feasible trials of STUDY.

    When no trial is feasible, the front of the infeasible trials is shown instead.
    """
    check_out_file(plot, "--plot")
    study = load_study(open_storage(storage, create=False), study_name)
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    front = pareto_front(study)
    feasible = bool(front)
    if not feasible:
        front = pareto_front(study, feasible=False)
        err.print(
            f"[yellow]Note:[/] no trial keeps {settings.min_preserve:.0%} of the pixels; "
            "showing the front of the infeasible trials."
        )
    rows = [_row(t, settings.label) for t in front]
    if plot is not None:
        write_pareto_plot(study, plot)
        err.print(f"Plot written to {plot}", highlight=False)

    if fmt == "json":
        echo_json({"study": study_name, "feasible": feasible, "front": rows})
        return
    kind = "feasible" if feasible else "infeasible"
    table = Table(
        title=f"Pareto front of {study_name} ({kind}; {settings.image}, true {settings.label}, "
        f"min-preserve {settings.min_preserve:.0%})"
    )
    columns = ("trial", "method", "target", "top-k", "operation", "strength", "regions")
    for column in (*columns, "margin", "preserved", "prediction"):
        numeric = column in ("trial", "top-k", "strength", "regions", "margin", "preserved")
        table.add_column(column, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(
            str(r["trial"]),
            r["method"],
            r["target"],
            str(r["top_k"]),
            r["operation"],
            f"{r['strength']:.2f}",
            str(r["regions"]),
            f"{r['margin']:.3f}",
            f"{r['preserved']:.2%}",
            f"{r['prediction']}" + (" ✓" if r["right"] else ""),
        )
    print_table(table)


@click.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--trial", "number", type=click.IntRange(min=0), default=None, help="Trial number.")
@click.option(
    "--pick",
    type=click.Choice(PICKS),
    default=None,
    help="Which feasible trial to export [default: most-preserved].",
)
@click.option(
    "--min-margin",
    type=float,
    default=None,
    callback=margin_value,
    help="Safety margin (logits, >= 0) for --pick most-preserved [default: the study's].",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the files [default: runs/STUDY].",
)
@storage_option
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True
)
@_FORMAT
@handle_errors
def export(
    study_name: str,
    number: int | None,
    pick: str | None,
    min_margin: float | None,
    out_dir: Path | None,
    storage: str | None,
    device: str,
    fmt: str,
) -> None:
    """Write an edit of STUDY: the PNG, its recipe JSON and a panel picture."""
    if number is not None and (pick is not None or min_margin is not None):
        raise click.UsageError("--trial names one trial; drop --pick and --min-margin with it.")
    check_out_dir(out_dir, "--out")
    study = load_study(open_storage(storage, create=False), study_name)
    settings = StudySettings.from_dict(study.user_attrs[SETTINGS_KEY])
    if number is not None:
        trial = find_trial(study, number)
        if not is_feasible(trial):
            err.print(
                f"[yellow]Note:[/] trial {number} keeps {trial.values[1]:.2%} of the pixels, "
                f"less than the study's {settings.min_preserve:.0%}."
            )
    else:
        trial = pick_trial(study, pick or PICKS[0], min_margin)
    ctx = context_for(settings, resolve_device(device))
    stem = Path(settings.image).stem
    png = export_trial(
        study, trial, ctx, out_dir or export_dir(study_name), f"{stem}_trial{trial.number}"
    )
    record = json.loads(png.with_suffix(".json").read_text())
    threshold = settings.min_margin if min_margin is None else min_margin
    status, reason = edit_status(record, settings.label, settings.min_preserve, threshold)
    if status == NOT_FIXED and record["edited_prediction"] != settings.label:
        err.print(
            f"[yellow]Note:[/] trial {trial.number} does not fix the image: {reason}.",
            highlight=False,
        )
    elif reason and status != NOT_FIXED:
        err.print(f"[yellow]Note:[/] {status}: {reason}.", highlight=False)
    files = [str(png), str(png.with_suffix(".json")), str(png.with_name(record["panel"]))]
    if fmt == "json":
        echo_json({**record, "status": status, "reason": reason, "files": files})
        return
    click.echo(
        f"trial {trial.number}: {record['description']}\n"
        f"prediction {record['original_prediction']} -> {record['edited_prediction']} "
        f"(true {record['label']}), margin {record['margin']:.3f}, "
        f"preserved {record['preserved']:.2%} ({record['changed_pixels']} pixels changed)"
    )
    for path in files:
        click.echo(path)


@click.command()
@click.argument("study_name", metavar="STUDY")
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Trials to add [default: what the last run asked for and did not finish, else 48].",
)
@storage_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the best edit [default: runs/STUDY].",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@_FORMAT
@handle_errors
def resume(
    study_name: str,
    trials: int | None,
    storage: str | None,
    out_dir: Path | None,
    device: str,
    fmt: str,
) -> None:
    """More trials on STUDY, with its stored image, model and settings."""
    check_out_dir(out_dir, "--out")
    backend = open_storage(storage, create=False)
    with Progress(
        TextColumn(study_name),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=fmt == "json" and not err.is_terminal,
    ) as bars:
        task = bars.add_task(study_name, total=trials)

        def show(p: TrialProgress) -> None:
            bars.update(task, completed=p.done, total=p.total)

        try:
            result = resume_study(
                backend,
                study_name,
                n_trials=trials,
                device=resolve_device(device),
                out_dir=out_dir,
                on_progress=show,
            )
        except KeyboardInterrupt:
            bars.stop()
            err.print("Interrupted: the trials already scored are saved in the study's storage.")
            command = ["edit-search", "resume", study_name]
            if storage:
                command += ["--storage", storage]
            err.print(f"Resume with: {shlex.join(command)}", highlight=False)
            sys.exit(EXIT_INTERRUPTED)

    if result.reason:
        err.print(f"[yellow]Note:[/] {result.status}: {result.reason}.", highlight=False)
    if fmt == "json":
        echo_json(Outcome.from_result(result).to_dict())
        return
    failed = f", {result.failed} failed" if result.failed else ""
    margin = "-" if result.margin is None else f"{result.margin:.3f}"
    click.echo(
        f"{result.study}: {result.trials} complete trials{failed}; prediction "
        f"{result.original_prediction} -> {result.edited_prediction} (true {result.label}), "
        f"margin {margin}, preserved {_percent(result.preserved)}, {result.status}\n"
        f"{result.export}"
    )


@click.command(name="apply")
@click.argument("recipe_path", metavar="RECIPE.json", type=click.Path(path_type=Path))
@click.option(
    "--image", "image_path", required=True, type=click.Path(path_type=Path), help="Image to edit."
)
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The edited PNG [default: IMAGE-STEM_edited.png in the current folder].",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A state_dict checkpoint [default: the shipped SmallCNN].",
)
@click.option("--arch", default=None, metavar="MODULE:CLASS", help="[default: the recipe's]")
@click.option(
    "--label", type=int, default=None, help="[default: the file name's, else the recipe's]"
)
@click.option(
    "--force", is_flag=True, help="Apply even if image or model differ from the recipe's."
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True
)
@_FORMAT
@handle_errors
def apply_command(
    recipe_path: Path,
    image_path: Path,
    out_path: Path | None,
    model_path: Path | None,
    arch: str | None,
    label: int | None,
    force: bool,
    device: str,
    fmt: str,
) -> None:
    """Re-apply an exported RECIPE.json to an image and write the edited PNG."""
    check_out_file(out_path, "--out")
    record = read_recipe_file(recipe_path)
    out_path = out_path or Path(f"{image_path.stem}_edited.png")
    applied = apply_recipe_file(
        record,
        image_path,
        out_path,
        model_path=model_path,
        arch=arch,
        label=label,
        force=force,
        device=resolve_device(device),
    )
    for mismatch in applied.mismatches:
        err.print(f"[yellow]Warning:[/] {mismatch} (applied with --force).")
    if fmt == "json":
        echo_json(applied.to_dict())
        return
    same = "identical to the exported edit" if applied.identical else "differs from the export"
    click.echo(
        f"prediction {applied.original_prediction} -> {applied.edited_prediction} "
        f"(true {applied.label}), margin {applied.margin:.3f}, preserved "
        f"{applied.preserved:.2%} ({applied.changed_pixels} pixels changed)\n"
        f"{applied.path} ({same})"
    )
