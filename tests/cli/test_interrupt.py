"""Ctrl-C and SIGKILL on a real ``edit-search run`` process."""

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

EDIT_SEARCH = str(Path(sys.executable).parent / "edit-search")
# A margin no edit reaches keeps the study from stopping early; cheap methods keep trials short.
ARGS = ("--min-margin", "50", "--methods", "integrated_gradients,saliency,occlusion_white")

pytestmark = pytest.mark.slow


def _start(image_path: Path, trials: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EDIT_SEARCH, "run", "--image", str(image_path), "--trials", str(trials), *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_complete_trials(process: subprocess.Popen[str], count: int) -> optuna.Study:
    """The run's study once it holds ``count`` complete trials (the process still running)."""
    journal = Path("runs/studies.journal")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if journal.exists():
            storage = open_storage(str(journal))
            names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
            if names:
                study = optuna.load_study(study_name=names[0], storage=storage)
                if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= count:
                    return study
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the run never reached {count} complete trials")


def _states(study: optuna.Study) -> dict[TrialState, int]:
    fresh = optuna.load_study(study_name=study.study_name, storage=open_storage())
    states: dict[TrialState, int] = {}
    for trial in fresh.get_trials(deepcopy=False):
        states[trial.state] = states.get(trial.state, 0) + 1
    return states


def test_run_sigint_exits_130_prints_resume_and_leaves_no_running_trial(
    image_path: Path,
) -> None:
    process = _start(image_path, 100000)
    study = _wait_for_complete_trials(process, 4)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert f"Resume with: edit-search resume {study.study_name}" in stderr
    assert "Traceback" not in stderr
    states = _states(study)
    assert states.get(TrialState.COMPLETE, 0) >= 4
    assert states.get(TrialState.RUNNING, 0) == 0


def test_run_sigkill_then_resume_completes_the_study(image_path: Path) -> None:
    process = _start(image_path, 40)
    study = _wait_for_complete_trials(process, 8)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)  # reaped: its pid is gone
    assert process.returncode == -signal.SIGKILL
    before = _states(study)
    assert before.get(TrialState.COMPLETE, 0) < 40

    result = CliRunner().invoke(main, ["resume", study.study_name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = _states(study)
    assert after.get(TrialState.RUNNING, 0) == 0
    assert after.get(TrialState.COMPLETE, 0) == 40
    # Trials the killed process held are failed, not lost silently.
    assert after.get(TrialState.FAIL, 0) == before.get(TrialState.RUNNING, 0)
    assert (Path("runs") / study.study_name / "2_label3.png").is_file()
