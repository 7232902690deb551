"""Bad input and faults end in one clear line, the documented exit code, and nothing lost."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from edit_search.cli import main
from edit_search.data.checkpoint import DEFAULT_CHECKPOINT
from edit_search.data.model import SmallCNN, Transform
from edit_search.optimizer import all_study_names, load_settings, open_storage
from edit_search.runs import context_for

FAST = ("--trials", "8", "--methods", "saliency", "--max-regions", "0")


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _one_error_line(result: Result, exit_code: int) -> str:
    """The single ``Error: ...`` line a failed command printed on stderr."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _nothing_written() -> None:
    """No study was created and no edit exported."""
    if Path("runs").exists():
        assert not [p for p in Path("runs").rglob("*") if p.suffix in (".png", ".json")]
        assert all_study_names(open_storage()) == []


@pytest.fixture
def digit(image_path: Path) -> np.ndarray:
    return np.asarray(Image.open(image_path), dtype=np.uint8).copy()


def _text(name: str) -> str:
    Path(name).write_text("not a picture\n")
    return name


def _png(pixels: np.ndarray, name: str) -> str:
    Image.fromarray(pixels).save(name)
    return name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "absent_label3.png", "image 'absent_label3.png' does not exist"),
        (lambda d: _text("t_label3.png"), "cannot identify"),
        (lambda d: _png(np.zeros((28, 28), np.uint8), "b_label3.png"), "is blank"),
        (lambda d: _png(255 - d, "w_label3.png"), "light background .* pass --invert"),
        (lambda d: _png(np.zeros((32, 28), np.uint8), "s_label3.png"), "is 28x32 pixels"),
        (lambda d: _png(d, "digit.png"), "no label for 'digit.png'"),
        (lambda d: _png(d, "2_label12.png"), "label 12 of '2_label12.png' is outside"),
    ],
)
def test_run_bad_image_exits_2_with_one_line_and_writes_nothing(
    digit: np.ndarray, make, message: str
) -> None:
    line = _one_error_line(_invoke("run", make(digit), *FAST), 2)
    assert re.search(message, line), line
    _nothing_written()


def test_run_truncated_png_exits_2(image_path: Path) -> None:
    Path("cut_label3.png").write_bytes(image_path.read_bytes()[:150])
    line = _one_error_line(_invoke("run", "cut_label3.png", *FAST), 2)
    assert "cannot read 'cut_label3.png' as an image" in line
    _nothing_written()


def test_run_label_flag_contradicting_name_exits_2(image_path: Path) -> None:
    line = _one_error_line(_invoke("run", str(image_path), "--label", "5", *FAST), 2)
    assert "--label 5 contradicts the label 3" in line
    _nothing_written()


def test_run_folder_without_images_exits_2() -> None:
    Path("empty").mkdir()
    line = _one_error_line(_invoke("run", "--images", "empty", *FAST), 2)
    assert "no image files in 'empty'" in line


def test_run_zero_one_ink_is_scaled_and_said(digit: np.ndarray) -> None:
    path = _png((digit > 127).astype(np.uint8), "mask_label3.png")
    result = _invoke("run", path, *FAST, "--format", "json")
    assert result.exit_code in (0, 3), result.output
    assert "Note: mask_label3.png: ink values are only 0 and 1" in result.stderr


def test_run_whole_pickled_module_refused_then_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = SmallCNN()
    net.load_state_dict(torch.load(DEFAULT_CHECKPOINT, weights_only=True))
    torch.save(net, "whole.pt")
    image = str(Path(__file__).resolve().parents[2] / "data" / "challenge" / "2_label3.png")

    line = _one_error_line(_invoke("run", image, "--model", "whole.pt", *FAST), 2)
    assert "would run code" in line and "--trust-checkpoint" in line
    _nothing_written()

    trusted = _invoke("run", image, "--model", "whole.pt", "--trust-checkpoint", *FAST)
    assert trusted.exit_code == 0, trusted.output
    assert "it may run code" in caplog.text  # logged as a warning on stderr


def test_run_checkpoint_of_other_shapes_exits_2_listing_keys(image_path: Path) -> None:
    torch.save(SmallCNN(channels=8).state_dict(), "wide.pt")
    line = _one_error_line(_invoke("run", str(image_path), "--model", "wide.pt", *FAST), 2)
    assert "mis-shaped: conv1.bias (8,) != (4,)" in line


@pytest.mark.parametrize("value", ["0.1", "a,b", "0.1,0", "0.1,nan"])
def test_run_bad_transform_is_a_usage_error(image_path: Path, value: str) -> None:
    result = _invoke("run", str(image_path), "--transform", value, *FAST)
    assert result.exit_code == 2
    assert "Invalid value for '--transform'" in result.stderr.strip().splitlines()[-1]


def test_run_transform_flag_makes_its_own_study_and_is_reloaded(image_path: Path) -> None:
    plain = _invoke("run", str(image_path), *FAST, "--format", "json")
    assert plain.exit_code == 0, plain.output
    other = _invoke("run", str(image_path), "--transform", "0.2,0.5", *FAST, "--format", "json")
    assert other.exit_code in (0, 3), other.output

    studies = sorted(all_study_names(open_storage()))
    assert len(studies) == 2  # the same image under another transform is another model
    for name in studies:
        settings = load_settings(open_storage(), name)
        model = context_for(settings).model
        expected = Transform(**settings.transform) if settings.transform else Transform()
        assert model.transform == expected


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("notes.txt/studies.journal", "'notes.txt' is a file, not a folder"),
        ("redis://localhost/0", "unknown scheme 'redis'"),
        ("sqlite://", "in-memory database"),
    ],
)
def test_run_bad_storage_exits_2(image_path: Path, storage: str, message: str) -> None:
    Path("notes.txt").write_text("keep\n")
    line = _one_error_line(_invoke("run", str(image_path), "--storage", storage, *FAST), 2)
    assert message in line
    assert Path("notes.txt").read_text() == "keep\n"


@pytest.mark.parametrize(
    ("change", "differ"),
    [(("--min-preserve", "0.9"), "min_preserve"), (("--methods", "occlusion"), "space")],
)
def test_run_study_name_with_other_settings_exits_2_and_keeps_it(
    image_path: Path, change: tuple[str, str], differ: str
) -> None:
    args = ("run", str(image_path), "--study", "mine", *FAST)
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    before = len(optuna.load_study(study_name="mine", storage=open_storage()).trials)

    line = _one_error_line(_invoke(*args, *change), 2)  # the last value of an option wins
    assert f"study 'mine' exists with other settings ({differ} differ)" in line
    assert len(optuna.load_study(study_name="mine", storage=open_storage()).trials) == before


def test_run_no_feasible_edit_exits_3_and_keeps_trials(image_path: Path) -> None:
    result = _invoke("run", str(image_path), "--min-preserve", "1.0", "--study", "s", *FAST)
    line = _one_error_line(result, 3)
    assert "no edit in study 's' makes the model right" in line
    study = optuna.load_study(study_name="s", storage=open_storage())
    assert len(study.trials) == 8


class _FullDisk:
    """A file whose writes stop halfway with ENOSPC, like a disk that fills up mid-write."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def test_run_full_disk_while_exporting_keeps_previous_export(
    image_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk cannot be made safely here: the exporter's file handle fails instead.
    args = ("run", str(image_path), "--study", "s", *FAST)
    first = _invoke(*args, "--format", "json")
    assert first.exit_code == 0, first.output
    export = Path(json.loads(first.stdout.strip().splitlines()[-1])["export"])
    saved = {p: p.read_bytes() for p in (export, export.with_suffix(".json"))}

    real_fdopen = os.fdopen
    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
        full = _invoke(*args)

    line = _one_error_line(full, 1)
    assert "No space left on device" in line and "earlier exports are intact" in line
    assert {p: p.read_bytes() for p in saved} == saved
    assert sorted(p.name for p in export.parent.iterdir() if p.name.endswith(".tmp")) == []
    # The trials of the failed run are in the study all the same.
    assert len(optuna.load_study(study_name="s", storage=open_storage()).trials) == 16


def test_run_debug_bad_image_prints_traceback_and_keeps_exit_code_2(image_path: Path) -> None:
    result = CliRunner().invoke(main, ["--debug", "run", "absent_label3.png", *FAST])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "InputError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: image 'absent_label3.png'")


def test_run_debug_runtime_error_keeps_exit_code_1(tmp_path: Path) -> None:
    # A storage URL whose folder is a file fails at run time without --debug too.
    Path("blocker").write_text("")
    plain = CliRunner().invoke(main, ["studies", "--storage", "blocker/x.journal"])
    debug = CliRunner().invoke(main, ["--debug", "studies", "--storage", "blocker/x.journal"])
    assert plain.exit_code == debug.exit_code != 0
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("edit-search")), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )


def _wait_for_complete_trials(process: subprocess.Popen, count: int = 8) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        journal = Path("runs/studies.journal")
        if journal.exists() and journal.read_bytes().count(b'"state":1') >= count:
            return
        time.sleep(0.1)
    raise AssertionError("no trial finished in time")


def _states(name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=open_storage())
    names = [t.state.name for t in study.trials]
    return {state: names.count(state) for state in set(names)}


LONG = ["--study", "long", "--trials", "100000", "--min-margin", "1000", "--methods", "saliency"]


@pytest.mark.slow
def test_run_ctrl_c_exits_130_with_resume_line_and_trials_safe(image_path: Path) -> None:
    process = _start(["run", str(image_path), *LONG])
    _wait_for_complete_trials(process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Resume with: edit-search resume long" in stderr
    states = _states("long")
    assert states.get("COMPLETE", 0) >= 8 and "RUNNING" not in states


@pytest.mark.slow
def test_run_after_sigkill_continues_the_study(image_path: Path) -> None:
    process = _start(["run", str(image_path), *LONG])
    _wait_for_complete_trials(process)
    process.kill()
    process.communicate(timeout=60)
    done = _states("long").get("COMPLETE", 0)

    again = _invoke("run", str(image_path), *LONG[:2], "--trials", "8", *LONG[4:])
    assert again.exit_code in (0, 3), again.output
    assert "Traceback" not in again.output
    states = _states("long")
    assert states["COMPLETE"] >= done + 8 and "RUNNING" not in states
