import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edit_search.cli import main


@pytest.fixture
def mixed_folder(challenge_dir: Path, tmp_path: Path) -> Path:
    """Two challenge digits, a file that is not an image and a digit without a label."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("2_label3.png", "3_label7.png"):
        (folder / name).write_bytes((challenge_dir / name).read_bytes())
    (folder / "5_label1.png").write_bytes(b"not an image")
    (folder / "nolabel.png").write_bytes((challenge_dir / "0_label5.png").read_bytes())
    return folder


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False, terminal_width=250)


def test_run_many_failed_loads_are_rows_with_reasons_others_fixed_exit_2(
    mixed_folder: Path,
) -> None:
    result = _run("--images", str(mixed_folder), "--trials", "8", "--table", "results.md")
    assert result.exit_code == 2, result.output
    lines = Path("results.md").read_text().splitlines()
    assert lines[0] == (
        "| image | true label | original prediction | edited prediction | preserved % | margin "
        "| trials | time | status | export |"
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert list(rows) == ["2_label3.png", "3_label7.png", "5_label1.png", "nolabel.png"]
    assert "| 3 | 8 | 3 |" in rows["2_label3.png"] and "| fixed |" in rows["2_label3.png"]
    assert "| 7 | 1 | 7 |" in rows["3_label7.png"]
    assert "failed to load: cannot read '5_label1.png' as an image" in rows["5_label1.png"]
    assert "failed to load: no label for 'nolabel.png'" in rows["nolabel.png"]
    # The printed table carries the same rows, and stderr names each failure.
    assert "nolabel.png" in result.stdout and "fixed" in result.stdout
    assert "failed to load: nolabel.png: no label" in result.stderr


def test_run_many_csv_table_parses_with_one_row_per_image(mixed_folder: Path) -> None:
    result = _run("--images", str(mixed_folder), "--trials", "8", "--table", "out/r.csv")
    assert result.exit_code == 2
    with open("out/r.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == [
        "2_label3.png",
        "3_label7.png",
        "5_label1.png",
        "nolabel.png",
    ]
    fixed = rows[0]
    assert fixed["status"] == "fixed" and fixed["true_label"] == "3"
    assert fixed["original_prediction"] == "8" and fixed["edited_prediction"] == "3"
    assert 60.0 <= float(fixed["preserved_pct"]) <= 100.0 and float(fixed["margin"]) > 0
    assert int(fixed["trials"]) == 8 and float(fixed["seconds"]) > 0
    assert Path(fixed["export"]).is_file()
    assert rows[3]["status"] == "failed to load" and rows[3]["true_label"] == ""
    assert rows[3]["reason"].startswith("no label for 'nolabel.png'")
    assert not list(Path("out").glob(".*.tmp"))


def test_run_many_json_gives_one_object_per_image_with_status(mixed_folder: Path) -> None:
    result = _run("--images", str(mixed_folder), "--trials", "8", "--format", "json")
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["status"] for r in records] == ["fixed", "fixed", "failed to load", "failed to load"]
    assert records[0]["edited_prediction"] == records[0]["label"] == 3
    assert records[2]["export"] is None and "cannot read" in records[2]["reason"]


def test_run_many_no_feasible_edit_rows_and_exit_3(challenge_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("0_label5.png", "4_label2.png"):
        (folder / name).write_bytes((challenge_dir / name).read_bytes())
    # Keeping every pixel leaves nothing to edit: no image can be fixed.
    result = _run(
        "--images", str(folder), "--trials", "4", "--min-preserve", "1.0", "--format", "json"
    )
    assert result.exit_code == 3
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["status"] for r in records] == ["no feasible edit", "no feasible edit"]
    assert [r["label"] for r in records] == [5, 2]
    assert [r["original_prediction"] for r in records] == [3, 5]
    # Trials run in whole batches, so at least the 4 asked for are recorded.
    assert all(r["trials"] >= 4 and "lower --min-preserve" in r["reason"] for r in records)


def test_run_many_all_fixed_exits_0_and_markdown_table_is_complete(
    challenge_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("1_label3.png", "4_label2.png"):
        (folder / name).write_bytes((challenge_dir / name).read_bytes())
    result = _run("--images", str(folder), "--trials", "8", "--table", "t.markdown")
    assert result.exit_code == 0, result.output
    lines = Path("t.markdown").read_text().splitlines()
    assert len(lines) == 4 and all("| fixed |" in line for line in lines[2:])


def test_run_table_with_unknown_suffix_is_a_usage_error_before_any_study(
    image_path: Path,
) -> None:
    result = CliRunner().invoke(main, ["run", str(image_path), "--table", "results.xlsx"])
    assert result.exit_code == 2
    assert "received 'results.xlsx', expected one of .csv, .md, .markdown" in result.stderr
    assert not Path("runs").exists()
