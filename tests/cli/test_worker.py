import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edit_search.cli import main
from edit_search.optimizer import open_storage
from edit_search.optimizer._workers import SURPLUS_KEY, WORKER_KEY

IMAGES = ("0_label5.png", "2_label3.png", "3_label7.png")
TARGET = 12
BATCH = 4


def _folder(challenge_dir: Path, names: tuple[str, ...] = IMAGES) -> Path:
    folder = Path("digits")
    folder.mkdir()
    for name in names:
        shutil.copy(challenge_dir / name, folder / name)
    return folder


def _start(folder: Path, storage: str, worker_id: str, *extra: str) -> subprocess.Popen[str]:
    """One ``edit-search worker`` process, as a user would start it."""
    command = [
        str(Path(sys.executable).parent / "edit-search"),
        "worker",
        "--images",
        str(folder),
        "--storage",
        storage,
        "--trials",
        str(TARGET),
        "--batch",
        str(BATCH),
        "--device",
        "cpu",
        "--worker-id",
        worker_id,
        "--format",
        "json",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[list[dict], str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines() if line.strip()], stderr


def _told(stderr: str) -> int:
    """The trials a worker reports it told COMPLETE (its last stderr line says so)."""
    line = next(x for x in stderr.splitlines() if " told " in x)
    return int(line.split(" told ", 1)[1].split()[0])


def check_studies(storage: optuna.storages.BaseStorage, records: list[dict]) -> int:
    """Every study of the records: exactly TARGET COMPLETE trials, none RUNNING, numbers unique.

    Returns the COMPLETE trials of all studies together.
    """
    total = 0
    for record in records:
        study = optuna.load_study(study_name=record["study"], storage=storage)
        trials = study.get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert sorted(numbers) == list(range(len(trials))), record["study"]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TARGET == record["trials"], record["study"]
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert all(t.user_attrs.get(WORKER_KEY) for t in complete)
        assert not any(t.user_attrs.get(SURPLUS_KEY) for t in complete)
        total += len(complete)
    return total


def run_many(folder: Path, storage: str, workers: int) -> tuple[list[dict], int]:
    """Start ``workers`` processes together; their results and the trials they told in all."""
    processes = [_start(folder, storage, f"w{i}") for i in range(workers)]
    finished = [_finish(p) for p in processes]
    records = finished[0][0]
    for other, _ in finished[1:]:
        assert [r["study"] for r in other] == [r["study"] for r in records]
    return records, sum(_told(stderr) for _, stderr in finished)


def kill_mid_run(folder: Path, storage: str, extra: tuple[str, ...]) -> str:
    """Start a worker, SIGKILL it while it holds RUNNING trials; returns the study it held."""
    victim = _start(folder, storage, "victim", *extra)
    backend = open_storage(storage)
    deadline = time.monotonic() + 300
    held = None
    while held is None and time.monotonic() < deadline and victim.poll() is None:
        for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=backend)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.user_attrs.get(WORKER_KEY) == "victim" for t in running):
                held = summary.study_name
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert held is not None, "the worker finished before it could be killed"
    return held


def test_worker_one_process_completes_every_study_and_prints_results(
    challenge_dir: Path,
) -> None:
    folder = _folder(challenge_dir, IMAGES[:2])
    result = CliRunner().invoke(
        main,
        ["worker", "--images", str(folder), "--trials", "6", "--batch", "4", "--format", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == list(IMAGES[:2])
    storage = open_storage()
    for record in records:
        study = optuna.load_study(study_name=record["study"], storage=storage)
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6 == record["trials"]
        assert record["edited_prediction"] == record["label"]
        assert Path(record["export"]).is_file()
    assert "told 12 trials in 2 studies" in result.stderr


def test_worker_again_after_done_adds_no_trials_and_shares_run_studies(
    challenge_dir: Path,
) -> None:
    folder = _folder(challenge_dir, IMAGES[:1])
    run = CliRunner().invoke(
        main, ["run", "--images", str(folder), "--trials", "8", "--format", "json"]
    )
    assert run.exit_code == 0, run.output
    study = json.loads(run.stdout.splitlines()[-1])["study"]
    result = CliRunner().invoke(
        main, ["worker", "--images", str(folder), "--trials", "8", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["study"] == study
    assert "told 0 trials" in result.stderr


def test_worker_missing_folder_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(main, ["worker", "--images", "nowhere"])
    assert result.exit_code == 2
    assert "'nowhere' is not a directory" in result.stderr


def test_worker_unknown_method_exits_2_naming_choices(challenge_dir: Path) -> None:
    folder = _folder(challenge_dir, IMAGES[:1])
    result = CliRunner().invoke(main, ["worker", "--images", str(folder), "--methods", "magic"])
    assert result.exit_code == 2
    assert "unknown method(s) magic" in result.stderr


@pytest.mark.slow
def test_worker_four_processes_on_journal_file_complete_each_study_exactly_once(
    challenge_dir: Path,
) -> None:
    folder = _folder(challenge_dir)
    records, told = run_many(folder, "runs/studies.journal", workers=4)
    assert check_studies(open_storage("runs/studies.journal"), records) == told
    assert all(r["edited_prediction"] == r["label"] for r in records)


@pytest.mark.slow
def test_worker_killed_mid_run_on_journal_file_leaves_nothing_running(
    challenge_dir: Path,
) -> None:
    folder = _folder(challenge_dir)
    storage = "runs/studies.journal"
    held = kill_mid_run(folder, storage, ("--heartbeat-interval", "1", "--grace-period", "3"))
    records, _ = _finish(
        _start(folder, storage, "rescuer", "--heartbeat-interval", "1", "--grace-period", "3")
    )
    check_studies(open_storage(storage), records)
    study = optuna.load_study(study_name=held, storage=open_storage(storage))
    victims = [t for t in study.trials if t.user_attrs.get(WORKER_KEY) == "victim"]
    assert any(t.state == TrialState.FAIL for t in victims)
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in victims)
