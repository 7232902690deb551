"""The benchmark's pure helpers; the benchmark itself runs with ``make bench``, not here."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bench_summarize_counts_fixed_and_takes_median_and_worst_of_fixed_only() -> None:
    bench = _bench()
    rows = [
        bench.Row("m", "a.png", 1.0, True, 0.99, 1.2, 10, 1.0),
        bench.Row("m", "b.png", 1.0, True, 0.97, 1.1, 30, 3.0),
        bench.Row("m", "c.png", 1.0, False, 0.50, -0.3, 20, 2.0),
        bench.Row("m", "a.png", 0.0, True, 0.999, 0.1, 5, 0.5),
    ]
    summary = bench.summarize(rows, "m", 1.0)
    assert summary["images"] == 3 and summary["fixed"] == 2
    assert summary["median"] == 0.98 and summary["worst"] == 0.97
    assert summary["seconds"] == 2.0 and summary["scored"] == 20


def test_bench_budget_and_png_round_trip_keep_the_uint8_grid() -> None:
    bench = _bench()
    assert bench.baselines.budget(0.6) == 313
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8)
    assert torch.equal(bench.baselines.png_round_trip(pixels), pixels)
