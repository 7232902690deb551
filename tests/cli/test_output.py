"""What every command's output promises: strict JSON, one JSON shape per image, quiet pipes,
clean Ctrl-C at start-up, the same exit code with --debug."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.trial import TrialState, create_trial

from edit_search.cli import main
from edit_search.cli._common import json_line
from edit_search.cli._results import Outcome, render_table_file
from edit_search.optimizer import open_storage

EDIT_SEARCH = str(Path(sys.executable).with_name("edit-search"))
FAST = ("--trials", "4", "--methods", "saliency,occlusion_white", "--max-regions", "0")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# The per-image JSON object of run, resume and worker.
KEYS = {
    "image",
    "label",
    "original_prediction",
    "edited_prediction",
    "preserved",
    "margin",
    "trials",
    "failed",
    "seconds",
    "status",
    "reason",
    "study",
    "export",
}


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _strict(line: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(line, parse_constant=refuse)


def test_json_line_non_finite_floats_become_null() -> None:
    line = json_line({"margin": math.nan, "front": [{"m": -math.inf}], "ok": 1.5})
    assert _strict(line) == {"margin": None, "front": [{"m": None}], "ok": 1.5}


def test_outcome_non_finite_margin_prints_null_in_run_json() -> None:
    outcome = Outcome("a.png", 3, 8, 8, 0.9, math.nan, 4, 1.0, "not fixed", "", "s", None)
    assert _strict(json_line(outcome.to_dict()))["margin"] is None


def test_results_csv_non_finite_margin_is_an_empty_cell() -> None:
    outcome = Outcome("a.png", 3, 8, 8, 0.9, math.nan, 4, 1.0, "not fixed", "", "s", None)
    rows = render_table_file([outcome], Path("t.csv")).splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert row[header.index("margin")] == ""


def test_run_resume_worker_json_objects_have_one_shape(image_path: Path) -> None:
    Path("digits").mkdir()
    shutil.copy(image_path, "digits")
    run = _strict(_cli("run", "--images", "digits", *FAST, "--format", "json").stdout)
    resume = _strict(_cli("resume", run["study"], "--trials", "2", "--format", "json").stdout)
    worker = _cli("worker", "--images", "digits", *FAST, "--format", "json")
    assert set(run) == set(resume) == set(_strict(worker.stdout)) == KEYS
    assert resume["status"] in ("fixed", "fixed below margin")


def test_run_resume_trials_count_complete_and_failed_separately(image_path: Path) -> None:
    first = _strict(_cli("run", str(image_path), *FAST, "--format", "json").stdout)
    study = optuna.load_study(study_name=first["study"], storage=open_storage())
    study.add_trial(create_trial(state=TrialState.FAIL))
    resumed = _strict(_cli("resume", first["study"], "--trials", "2", "--format", "json").stdout)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert resumed["trials"] == len(complete) == first["trials"] + 2
    assert resumed["failed"] == 1
    listed = _strict(_cli("studies", "--format", "json").stdout)
    assert listed["trials"] == resumed["trials"] and listed["failed"] == 1


def test_pareto_json_is_one_object_with_a_front(image_path: Path) -> None:
    study = _strict(_cli("run", str(image_path), *FAST, "--format", "json").stdout)["study"]
    record = _strict(_cli("pareto", study, "--format", "json").stdout)
    assert set(record) == {"study", "feasible", "front"}
    assert record["front"] and {"trial", "margin", "preserved"} <= set(record["front"][0])


def test_run_json_into_closed_pipe_exits_quietly(image_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [EDIT_SEARCH, "run", str(image_path), *FAST, "--format", "json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Error" not in done.stderr and "Broken pipe" not in done.stderr
    assert "Exception ignored" not in done.stderr


def test_verify_table_into_closed_pipe_exits_quietly(challenge_dir: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [EDIT_SEARCH, "verify", str(challenge_dir), "--originals", str(challenge_dir)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_ctrl_c_while_importing_prints_interrupted_exits_130(image_path: Path) -> None:
    # A real SIGINT, sent by the process to itself as torch starts to import.
    code = (
        "import os, signal, sys\n"
        "class Hook:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
        f"sys.argv = ['edit-search', 'run', {str(image_path)!r}]\n"
        "from edit_search.cli import entry\n"
        "entry()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "Interrupted."


@pytest.mark.parametrize(
    "args",
    [
        ("run", "absent_label3.png"),
        ("export", "no-such-study"),
        ("apply", "absent.json", "--image", "absent_label3.png"),
    ],
)
def test_debug_keeps_the_exit_code_and_adds_a_traceback(args: tuple[str, ...]) -> None:
    plain = CliRunner().invoke(main, list(args))
    debug = CliRunner().invoke(main, ["--debug", *args])
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr


def test_worker_image_already_right_gets_no_study_and_its_row_says_so(image_path: Path) -> None:
    Path("digits").mkdir()
    Path("digits/x_label8.png").write_bytes(image_path.read_bytes())  # the model says 8
    result = _cli("worker", "--images", "digits", *FAST, "--format", "json")
    record = _strict(result.stdout)
    assert record["status"] == "already right" and record["study"] is None
    assert optuna.get_all_study_summaries(open_storage(), False) == []
