"""Output paths and study names are checked before any work, and never leave their folder."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from edit_search.cli import main

FAST = ("--trials", "2", "--methods", "saliency", "--max-regions", "0")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def _one_line_error(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and all(part in error[0] for part in parts), result.stderr


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "..", "tab\there", ""])
def test_run_unsafe_study_name_exits_2_before_any_study(image_path: Path, name: str) -> None:
    result = _cli("run", str(image_path), "--study", name, *FAST)
    _one_line_error(result, "--study", "a study name becomes a folder name")
    assert not Path("runs").exists()


def test_run_plain_study_name_exports_under_runs(image_path: Path) -> None:
    result = _cli("run", str(image_path), "--study", "my-study_1", *FAST, "--format", "json")
    assert result.exit_code in (0, 3), result.output
    assert Path("runs/my-study_1").is_dir() or result.exit_code == 3


def test_run_out_through_a_file_exits_2_before_any_study(image_path: Path) -> None:
    Path("afile").write_text("")
    for out in ("afile", "afile/sub"):
        _one_line_error(_cli("run", str(image_path), "-o", out, *FAST), "'afile' is a file")
    assert not Path("runs").exists()


def test_run_table_through_a_file_or_at_a_folder_exits_2_before_any_study(
    image_path: Path,
) -> None:
    Path("afile").write_text("")
    Path("folder.csv").mkdir()
    _one_line_error(_cli("run", str(image_path), "--table", "afile/t.csv", *FAST), "'afile'")
    _one_line_error(_cli("run", str(image_path), "--table", "folder.csv", *FAST), "is a folder")
    assert not Path("runs").exists()


def test_export_and_resume_out_through_a_file_exit_2() -> None:
    Path("afile").write_text("")
    for command in ("export", "resume"):
        _one_line_error(_cli(command, "some-study", "-o", "afile/x"), "'afile' is a file")


@pytest.mark.parametrize(
    "args",
    [
        ("pareto", "some-study", "--plot", "p.jpg"),
        ("apply", "r.json", "--image", "x_label3.png", "-o", "x.jpg"),
        ("explain", "x_label3.png", "-o", "x.jpeg"),
        ("analyze", "--plot", "x.svg"),
    ],
)
def test_png_outputs_with_another_suffix_exit_2(args: tuple[str, ...]) -> None:
    _one_line_error(_cli(*args), "written as PNG", "use a .png name")


def test_run_folder_with_same_stem_and_out_exits_2_naming_both(image_path: Path) -> None:
    Path("digits").mkdir()
    shutil.copy(image_path, "digits/d_label3.png")
    Image.open(image_path).save("digits/d_label3.bmp")
    result = _cli("run", "--images", "digits", "-o", "best", *FAST)
    _one_line_error(result, "d_label3.bmp", "d_label3.png", "would both be exported")
    assert not Path("runs").exists()


def test_run_folder_with_same_stem_without_out_exports_both(image_path: Path) -> None:
    Path("digits").mkdir()
    shutil.copy(image_path, "digits/d_label3.png")
    Image.open(image_path).save("digits/d_label3.bmp")
    result = _cli("run", "--images", "digits", *FAST, "--min-preserve", "0.3", "--format", "json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    exports = [r["export"] for r in records if r["export"]]
    assert len(records) == 2 and len(set(exports)) == len(exports)
