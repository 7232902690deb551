"""``edit-search worker``: one of many processes sharing the studies of a folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from optuna.storages import BaseStorage

from edit_search.cli._common import (
    err,
    handle_errors,
    margin_value,
    methods_option,
    min_preserve_option,
    storage_option,
)
from edit_search.cli._results import NO_FEASIBLE, Outcome, print_results
from edit_search.data.checkpoint import load_model, resolve_device
from edit_search.data.images import list_images, load_image
from edit_search.data.model import Classifier
from edit_search.errors import EXIT_INTERRUPTED, NoFeasibleEditError
from edit_search.optimizer import SAMPLERS, EditContext, Progress, load_study, open_storage
from edit_search.optimizer._workers import Job, batch_size_for, default_worker_id, run_worker
from edit_search.runs import (
    already_right_result,
    export_dir,
    export_trial,
    is_already_right,
    pick_trial,
    result_of,
    settings_for,
    trial_counts,
)
from edit_search.search_spaces import SearchSpace


@click.command()
@click.option(
    "--images",
    "folder",
    required=True,
    type=click.Path(path_type=Path),
    help="The folder of images whose studies the workers share.",
)
@storage_option
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=48,
    show_default=True,
    help="COMPLETE trials every study of the folder should end with (a total, not an increment).",
)
@click.option(
    "--batch",
    "trials_per_batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Trials a worker takes from a study at a time.",
)
@min_preserve_option
@click.option(
    "--min-margin",
    type=float,
    default=1.0,
    show_default=True,
    callback=margin_value,
    help="Safety margin of the best edit (logits, >= 0).",
)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@methods_option("search")
@click.option("--max-regions", type=click.IntRange(0, 4), default=2, show_default=True)
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None)
@click.option("--arch", default=None, metavar="MODULE:CLASS")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--worker-id", default=None, help="This worker's name [default: HOST-PID].")
@click.option(
    "--heartbeat-interval",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Seconds between heartbeats of this worker's running trials.",
)
@click.option(
    "--grace-period",
    type=click.IntRange(min=1),
    default=120,
    show_default=True,
    help="Seconds without a heartbeat before another worker fails a running trial.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for studies busy with other workers instead of leaving them to those workers.",
)
@click.option(
    "--results/--no-results",
    default=True,
    show_default=True,
    help="When every study is done, export each best edit and print the results table.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@handle_errors
def worker(
    folder: Path,
    storage: str | None,
    trials: int,
    trials_per_batch: int,
    min_preserve: float,
    min_margin: float,
    sampler: str,
    methods: tuple[str, ...],
    max_regions: int,
    model_path: Path | None,
    arch: str | None,
    device: str,
    worker_id: str | None,
    heartbeat_interval: int,
    grace_period: int,
    wait: bool,
    results: bool,
    fmt: str,
) -> None:
    """Work on the studies of a folder, shared with any number of other workers.

    Start as many as you like, on one machine (the default journal file) or many (one
    PostgreSQL --storage). Each takes studies that still need trials and no other worker is
    running; when every study holds --trials COMPLETE trials, each prints the results table.
    """
    chosen = methods
    paths = list_images(folder)
    model = load_model(model_path, device=resolve_device(device), arch=arch)
    space = SearchSpace(methods=chosen, max_regions=max_regions)
    backend = open_storage(
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period
    )
    jobs = []
    for path in paths:
        image = load_image(path, num_classes=model.num_classes)
        settings = settings_for(
            image,
            model_path=model_path,
            arch=arch,
            min_preserve=min_preserve,
            min_margin=min_margin,
            sampler=sampler,
            space=space,
        )
        jobs.append(Job(settings, image.pixels, image.label))
    # An image the model already gets right needs no study (see run_study); its row is the
    # unedited image.
    wrong = [job for job in jobs if not _predicts_label(model, job)]

    name = worker_id or default_worker_id()
    device_used = next(model.parameters()).device
    err.print(
        f"worker {name}: {len(wrong)} studies, {trials} trials each, on {device_used} "
        f"(batch {batch_size_for(device_used)})",
        highlight=False,
    )

    def show(study: str, complete: int, p: Progress) -> None:
        best = "" if p.best_preserved is None else f", best {p.best_preserved:.2%} kept"
        err.print(f"{study}: {complete}/{trials} complete{best}", highlight=False)

    contexts: dict[str, EditContext] = {}
    try:
        report = run_worker(
            backend,
            wrong,
            model,
            trials,
            worker=name,
            trials_per_batch=trials_per_batch,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            wait=wait,
            on_batch=show,
            contexts=contexts,
        )
    except KeyboardInterrupt:
        err.print(
            "Interrupted: the trials already scored are saved; start the worker again to continue."
        )
        sys.exit(EXIT_INTERRUPTED)
    err.print(
        f"worker {name}: told {sum(report.told.values())} trials in {len(report.told)} "
        f"studies, {report.surplus} surplus, {report.stale_failed} stale failed",
        highlight=False,
    )
    if results:
        print_results(_collect(backend, jobs, model, contexts), fmt)


def _collect(
    backend: BaseStorage, jobs: list[Job], model: Classifier, contexts: dict[str, EditContext]
) -> list[Outcome]:
    """The folder's results table, read from storage, with each study's best edit exported."""
    outcomes = []
    for job in jobs:
        ctx = contexts.get(job.study_name) or EditContext(model, job.pixels, job.label)
        folder = export_dir(job.study_name)
        if is_already_right(ctx):
            result = already_right_result(job.settings, ctx, folder, 0.0)
            outcomes.append(Outcome.from_result(result))
            continue
        study = load_study(backend, job.study_name)
        try:
            png = export_trial(study, pick_trial(study), ctx, folder)
        except NoFeasibleEditError as exc:
            complete, failed = trial_counts(study)
            outcomes.append(
                Outcome(
                    image=job.settings.image,
                    label=job.label,
                    original_prediction=ctx.predicted,
                    edited_prediction=None,
                    preserved=None,
                    margin=None,
                    trials=complete,
                    failed=failed,
                    seconds=0.0,
                    status=NO_FEASIBLE,
                    reason=str(exc),
                    study=study.study_name,
                    export=None,
                    exit_code=exc.exit_code,
                )
            )
        else:
            outcomes.append(Outcome.from_result(result_of(study, job.settings, ctx, png, 0.0)))
    return outcomes


def _predicts_label(model: Classifier, job: Job) -> bool:
    return EditContext(model, job.pixels, job.label).predicted == job.label
