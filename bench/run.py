"""Benchmark edit-search against its anchors on the shipped model: ``make bench``.

All methods run in the same process, on the same images (the five challenge digits and the
sixty in data/misclassified/), at min-preserve 0.6; every edit is scored after a PNG round trip.
Prints one table and writes it, with the per-image rows, as Markdown under bench/results/.

    python bench/run.py            # everything (under 10 minutes on 2 CPU cores)
    python bench/run.py --quick    # the five challenge digits, no process scaling
    python bench/run.py --limit 25 # the first 25 images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines  # noqa: E402
from baselines import CountingModel, Edit  # noqa: E402

from edit_search.data.checkpoint import load_model  # noqa: E402
from edit_search.data.images import list_images, load_image  # noqa: E402
from edit_search.objectives import margin, preserved  # noqa: E402
from edit_search.optimizer import (  # noqa: E402
    DEFAULT_PATIENCE,
    OBJECTIVE_NAMES,
    SETTINGS_KEY,
    EditContext,
    create_or_resume,
    open_storage,
    optimize,
)
from edit_search.runs import run_study, settings_for  # noqa: E402
from edit_search.search_spaces import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_PRESERVE = 0.6
TRIALS = 48
MARGINS = (0.0, 1.0)
METHODS = (
    "edit-search",
    "hand recipe",
    "random search",
    "captum MinParam",
    "greedy L0",
    "foolbox L0FMN",
)
console = Console(stderr=True)


@dataclass
class Row:
    """One method on one image at one required margin, scored after a PNG round trip."""

    method: str
    image: str
    need: float
    fixed: bool
    preserved: float | None
    margin: float | None
    images_scored: int
    seconds: float


def summarize(rows: list[Row], method: str, need: float) -> dict[str, float | int | None]:
    """Success count, median and worst preserved share among fixed images, median time."""
    mine = [r for r in rows if r.method == method and r.need == need]
    kept = [r.preserved for r in mine if r.fixed and r.preserved is not None]
    return {
        "images": len(mine),
        "fixed": sum(r.fixed for r in mine),
        "median": statistics.median(kept) if kept else None,
        "worst": min(kept) if kept else None,
        "seconds": statistics.median(r.seconds for r in mine) if mine else None,
        "scored": int(statistics.median(r.images_scored for r in mine)) if mine else 0,
    }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def score_edit(
    model: torch.nn.Module, original: torch.Tensor, label: int, edit: Edit, need: float
) -> tuple[bool, float | None, float | None]:
    """Fixed (margin past ``need``, preserved >= min-preserve), preserved and margin."""
    if edit.pixels is None:
        return False, None, None
    pixels = baselines.png_round_trip(edit.pixels)  # (28, 28) uint8
    with torch.inference_mode():
        logits = model(pixels.to(torch.float32)[None, None] / 255.0).to(torch.float64)
    value = float(margin(logits, label)[0])
    kept = float(preserved(pixels[None], original)[0])
    reached = value > 0 if need == 0 else value >= need
    return reached and kept >= MIN_PRESERVE - 1e-12, kept, value


def edit_search(
    model: CountingModel,
    path: Path,
    need: float,
    folder: Path,
    sampler: str,
    trials: int = TRIALS,
) -> tuple[Edit, int]:
    """One default study (tpe, warm start, patience) or a plain random one of ``trials``."""
    image = load_image(path, num_classes=model.num_classes)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=MIN_PRESERVE,
        min_margin=need,
        sampler=sampler,
        space=SearchSpace(),
    )
    storage = open_storage(str(folder / f"{sampler}.journal"))
    start, before = time.perf_counter(), model.images
    if sampler == "tpe":
        result = run_study(
            storage,
            settings,
            model,
            image,
            n_trials=trials,
            out_dir=folder,
            patience=DEFAULT_PATIENCE,
        )
        exported = load_image(Path(result.export), label=image.label) if result.export else None
        pixels = None if exported is None else exported.pixels
        return Edit(pixels, model.images - before, time.perf_counter() - start), result.trials

    # Random search: the same space, sweep and budget, without the warm start.
    study = optuna.create_study(
        study_name=f"{settings.study_name()}-random",
        storage=storage,
        directions=["maximize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_metric_names(OBJECTIVE_NAMES)
    study.set_user_attr(SETTINGS_KEY, settings.to_dict())
    ctx = EditContext(model, image.pixels, image.label)
    optimize(study, ctx, trials, polish=False)
    from edit_search.runs import export_trial, pick_trial

    try:
        png = export_trial(study, pick_trial(study), ctx, folder / "random")
        pixels = load_image(png, label=image.label).pixels
    except Exception:  # no feasible trial: counted as not fixed
        pixels = None
    return Edit(pixels, model.images - before, time.perf_counter() - start), len(study.trials)


def compare(model: CountingModel, paths: list[Path], folder: Path) -> list[Row]:
    """Every method on every image, at margin > 0 and at margin >= 1."""
    rows: list[Row] = []
    limit = baselines.budget(MIN_PRESERVE)
    for index, path in enumerate(paths):
        image = load_image(path, num_classes=model.num_classes)
        pixels, label = image.pixels, image.label
        edits: dict[tuple[str, float], Edit] = {}
        budget = TRIALS
        for need in MARGINS:
            edits["edit-search", need], budget = edit_search(model, path, need, folder, "tpe")
            edits["captum MinParam", need] = baselines.min_param_perturbation(
                model, pixels, label, need, limit
            )
        hand = baselines.hand_recipe(model, pixels, label)
        # Random search gets as many trials as the default study used at the last margin.
        random = edit_search(model, path, MARGINS[-1], folder, "random", budget)[0]
        fool = baselines.foolbox_l0fmn(model, pixels, label, limit)
        greedy = baselines.greedy_l0(model, pixels, label, MARGINS, limit)
        for need in MARGINS:
            edits["hand recipe", need] = hand
            edits["random search", need] = random
            edits["foolbox L0FMN", need] = fool
            edits["greedy L0", need] = greedy[need]
        for (method, need), edit in edits.items():
            fixed, kept, value = score_edit(model, pixels, label, edit, need)
            rows.append(
                Row(method, path.name, need, fixed, kept, value, edit.images_scored, edit.seconds)
            )
        console.print(f"[dim]{index + 1}/{len(paths)} {path.name}[/]")
    return rows


class _TimedContext(EditContext):
    """An EditContext that adds up the seconds its forward passes take."""

    score_seconds: float = 0.0

    def score(self, edits: torch.Tensor):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return super().score(edits)
        finally:
            self.score_seconds += time.perf_counter() - start


def throughput(model: CountingModel, path: Path, folder: Path) -> dict[str, float]:
    """Pure forward rate, edits scored per second in a real study, bookkeeping per edit."""
    results: dict[str, float] = {}
    for batch in (256, 1024):
        images = torch.rand(batch, 1, 28, 28)
        with torch.inference_mode():
            model(images)
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < 1.0:
                model(images)
                count += batch
        results[f"forward/s at batch {batch}"] = count / (time.perf_counter() - start)

    image = load_image(path, num_classes=model.num_classes)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=MIN_PRESERVE,
        min_margin=1.0,
        sampler="tpe",
        space=SearchSpace(),
    )
    study = create_or_resume(open_storage(str(folder / "throughput.journal")), settings)
    ctx = _TimedContext(model, image.pixels, image.label)
    for method in settings.space.methods:  # maps first, so the loop alone is timed
        for target in settings.space.targets:
            ctx.attributions.get(method, target)
    start = time.perf_counter()
    optimize(study, ctx, TRIALS)
    seconds = time.perf_counter() - start
    scored = ctx.edits_scored - 1
    results["edits scored/s in a study"] = scored / seconds
    results["journal bookkeeping s/edit"] = (seconds - ctx.score_seconds) / scored
    results["sqlite one trial per edit s/edit"] = baselines.sqlite_trial_cost(str(folder))
    return results


def worker_scaling(paths: list[Path], folder: Path) -> dict[int, float]:
    """Wall seconds for ``edit-search worker`` over the same images with 1 and 2 processes."""
    images = folder / "scaling"
    images.mkdir()
    for path in paths:
        shutil.copy(path, images / path.name)
    executable = Path(sys.executable).with_name("edit-search")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seconds: dict[int, float] = {}
    for workers in (1, 2):
        storage = str(folder / f"workers{workers}.journal")
        command = [str(executable), "worker", "--images", str(images), "--storage", storage]
        command += ["--trials", str(TRIALS), "--format", "json"]
        start = time.perf_counter()
        running = [
            subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        codes = [p.wait() for p in running]
        seconds[workers] = time.perf_counter() - start
        if any(codes):
            console.print(f"[yellow]worker exit codes {codes} with {workers} process(es)[/]")
    return seconds


def build_table(rows: list[Row], rates: dict[str, float], scaling: dict[str, float]) -> Table:
    """The one table: per-method summary, then throughput and scaling rows."""
    table = Table(title=f"edit-search vs anchors, min-preserve {MIN_PRESERVE}")
    for column in (
        "method / measure",
        "fixed m>0",
        "median kept m>0",
        "worst kept m>0",
        "fixed m>=1",
        "median kept m>=1",
        "worst kept m>=1",
        "median images scored",
        "median s/image",
    ):
        table.add_column(column, justify="left" if column.startswith("method") else "right")
    for method in METHODS:
        low, high = summarize(rows, method, 0.0), summarize(rows, method, 1.0)
        table.add_row(
            method,
            f"{low['fixed']}/{low['images']}",
            percent(low["median"]),
            percent(low["worst"]),
            f"{high['fixed']}/{high['images']}",
            percent(high["median"]),
            percent(high["worst"]),
            f"{low['scored']} / {high['scored']}",
            f"{low['seconds']:.2f} / {high['seconds']:.2f}",
        )
    table.add_section()
    for name, value in {**rates, **scaling}.items():
        text = f"{value:.2e}" if value < 0.01 else f"{value:,.2f}"
        table.add_row(name, text, *[""] * 7)
    return table


def markdown(table: Table, rows: list[Row], header: str) -> str:
    """The table and the per-image rows as Markdown."""
    lines = [header, "", "| " + " | ".join(str(c.header) for c in table.columns) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    for i in range(table.row_count):
        cells = [str(list(c.cells)[i]) for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Per image", "", "| method | image | need | fixed | kept | margin | images "]
    lines[-1] += "scored | s |"
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        margin_text = "-" if r.margin is None else f"{r.margin:.3f}"
        lines.append(
            f"| {r.method} | {r.image} | {r.need:g} | {'yes' if r.fixed else 'no'} | "
            f"{percent(r.preserved)} | {margin_text} | {r.images_scored} | {r.seconds:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="challenge digits only")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    model = CountingModel(load_model(device="cpu"))
    paths = list_images(ROOT / "data" / "challenge")
    if not args.quick:
        paths += list_images(ROOT / "data" / "misclassified")
    paths = paths[: args.limit]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = compare(model, paths, folder)
        rates = throughput(model, paths[0], folder)
        times = [r.seconds for r in rows if r.method == "edit-search" and r.need == 1.0]
        scaling = {
            f"one process, first {n} image(s), s": sum(times[:n])
            for n in sorted({1, min(10, len(times)), len(times)})
        }
        if not args.quick and len(paths) >= 11:
            # Six studies: enough to show the split, short enough to keep the bench in budget.
            workers = worker_scaling(paths[5:11], folder)
            scaling |= {f"`edit-search worker` x{n}, 6 images, s": s for n, s in workers.items()}

    table = build_table(rows, rates, scaling)
    Console(width=max(Console().width, 170)).print(table)
    elapsed = time.perf_counter() - started
    header = (
        f"# edit-search benchmark\n\n`python bench/run.py {' '.join(argv or sys.argv[1:])}`, "
        f"{len(paths)} images, {elapsed:.0f} s in all; {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / time.strftime("bench-%Y%m%d-%H%M%S.md")
    target.write_text(markdown(table, rows, header))
    (args.out / "latest.json").write_text(json.dumps({"seconds": elapsed, "file": target.name}))
    console.print(f"Wrote {target} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
