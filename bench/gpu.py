"""Edits per second on the CPU and, when there is one, on a GPU; then 1 vs 2 workers.

Run it from the repository root:

    .venv/bin/python bench/gpu.py                  # both parts
    .venv/bin/python bench/gpu.py --no-workers     # only the device part

The device part runs one study (the shipped sample digit, in memory) on each device and prints
edits scored per second; without CUDA it prints a skip line for the GPU. The workers part runs
``edit-search worker`` over the shipped challenge folder with one process and then two sharing
a journal file, and prints trials per second of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

from edit_search.data.checkpoint import load_model
from edit_search.data.images import load_image
from edit_search.optimizer import EditContext, create_or_resume, optimize
from edit_search.optimizer._workers import batch_size_for
from edit_search.runs import settings_for
from edit_search.search_spaces import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "challenge" / "2_label3.png"
CHALLENGE = ROOT / "data" / "challenge"


def edits_per_second(device: str, trials: int) -> tuple[float, int, int]:
    """One study of ``trials`` trials on ``device``: (edits/s, edits, batch size)."""
    model = load_model(device=device)
    image = load_image(SAMPLE)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1e9,  # Never "safely fixed", so the study runs every trial asked for.
        sampler="random",
        space=SearchSpace(),
    )
    study = create_or_resume(optuna.storages.InMemoryStorage(), settings)
    batch = batch_size_for(device)
    ctx = EditContext(model, image.pixels, image.label, batch_size=batch)
    # Warm up: every attribution map (computed once per study, not per edit), kernels, allocator.
    for method in settings.space.methods:
        for target in settings.space.targets:
            ctx.attributions.get(method, target)
    optimize(study, ctx, 8)
    ctx.edits_scored = 0
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    optimize(study, ctx, trials)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return ctx.edits_scored / seconds, ctx.edits_scored, batch


def workers_rate(workers: int, trials: int) -> tuple[float, float]:
    """``workers`` worker processes over the challenge folder: (seconds, trials per second)."""
    command = Path(sys.executable).parent / "edit-search"
    with tempfile.TemporaryDirectory() as folder:
        storage = str(Path(folder) / "studies.journal")
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [
                    str(command),
                    "worker",
                    "--images",
                    str(CHALLENGE),
                    "--storage",
                    storage,
                    "--trials",
                    str(trials),
                    "--device",
                    "cpu",
                    "--format",
                    "json",
                ],
                cwd=folder,
                # The workers share the cores: each gets its part, not all of them.
                env={
                    **os.environ,
                    "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        for process in processes:
            if process.wait() != 0:
                raise SystemExit(f"a worker exited with {process.returncode}")
        seconds = time.perf_counter() - started
    total = trials * len(list(CHALLENGE.glob("*.png")))
    return seconds, total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32, help="trials of the device study")
    parser.add_argument("--worker-trials", type=int, default=24, help="trials per study")
    parser.add_argument("--no-workers", action="store_true", help="skip the workers part")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"device   batch  edits       edits/s   ({args.trials} trials, one study)")
    rate, edits, batch = edits_per_second("cpu", args.trials)
    print(f"cpu      {batch:>5}  {edits:>9,}  {rate:>10,.0f}")
    if torch.cuda.is_available():
        cpu_rate = rate
        rate, edits, batch = edits_per_second("cuda", args.trials)
        name = torch.cuda.get_device_name()
        print(
            f"cuda     {batch:>5}  {edits:>9,}  {rate:>10,.0f}   {rate / cpu_rate:.1f}x ({name})"
        )
    else:
        print("cuda     skipped: no CUDA device here (torch.cuda.is_available() is False)")

    if args.no_workers:
        return
    print(
        f"\nworkers  seconds  trials/s   (5 studies x {args.worker_trials} trials, journal file)"
    )
    for workers in (1, 2):
        seconds, per_second = workers_rate(workers, args.worker_trials)
        print(f"{workers:>7}  {seconds:>7.1f}  {per_second:>8.2f}")


if __name__ == "__main__":
    main()
