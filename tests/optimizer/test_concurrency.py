"""Eight processes running trials on one study at once, on a journal file and on SQLite.

Each process runs the study on both storages, one after the other, so the eight share one
start-up each (importing torch dominates a process's cost on a small machine).
"""

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from edit_search.optimizer import open_storage

PROCESSES = 8
TRIALS = 3

# Each process imports everything, signs in as ready, waits for the common start, then opens
# the storage and runs the same study as every other process: storage creation, study
# creation and every trial race for real.
_WORKER = """
import json, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
from edit_search.data.checkpoint import load_model
from edit_search.data.images import load_image
from edit_search.optimizer import open_storage
from edit_search.runs import run_study, settings_for
from edit_search.search_spaces import SearchSpace

image_path, ready, go, trials, *urls = sys.argv[1:]
model = load_model()
image = load_image(image_path)
space = SearchSpace(methods=("saliency",), max_regions=0)
settings = settings_for(image, model_path=None, arch=None, min_preserve=0.6, min_margin=1.0,
                        sampler="tpe", space=space)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
for index, url in enumerate(urls):
    result = run_study(open_storage(url), settings, model, image, n_trials=int(trials),
                       out_dir=Path(f"exports{index}"))
    print(json.dumps({"url": url, "study": result.study}))
"""


def _run_at_once(urls: list[str], image_path: Path) -> list[dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(image_path), f"ready{i}", "go", str(TRIALS)]
            + urls,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while sum(Path(f"ready{i}").exists() for i in range(PROCESSES)) < PROCESSES:
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    Path("go").touch()

    records = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "database is locked" not in stderr
        records += [json.loads(line) for line in stdout.strip().splitlines()[-len(urls) :]]
    return records


@pytest.mark.slow
def test_eight_processes_one_study_every_trial_recorded(image_path: Path) -> None:
    urls = ["runs/studies.journal", "sqlite:///runs/studies.db"]
    records = _run_at_once(urls, image_path)

    assert len(records) == PROCESSES * len(urls)
    assert len({r["study"] for r in records}) == 1
    for index, url in enumerate(urls):
        study = optuna.load_study(study_name=records[0]["study"], storage=open_storage(url))
        states = Counter(t.state for t in study.trials)
        assert states == {optuna.trial.TrialState.COMPLETE: PROCESSES * TRIALS}, url
        assert sorted(t.number for t in study.trials) == list(range(PROCESSES * TRIALS))

        # All eight wrote the same exports, each through a rename: no temporary file is left.
        exports = sorted(p.name for p in Path(f"exports{index}").iterdir())
        assert "2_label3.png" in exports and not [n for n in exports if n.endswith(".tmp")]
