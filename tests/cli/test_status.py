"""What run, export, apply and verify report about an edit: fixed only when it is."""

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from edit_search.cli import main
from edit_search.optimizer import open_storage

FAST = ("--trials", "4", "--methods", "saliency,occlusion_white", "--max-regions", "0")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5"])
@pytest.mark.parametrize("command", ["run", "export", "worker"])
def test_min_margin_non_finite_or_negative_exits_2(
    image_path: Path, command: str, value: str
) -> None:
    target = {"run": [str(image_path)], "export": ["some-study"], "worker": ["--images", "."]}
    result = _cli(command, *target[command], "--min-margin", value)
    assert result.exit_code == 2, result.output
    assert "must be a finite number of logits >= 0" in result.stderr
    assert not Path("runs").exists()


def test_run_min_margin_zero_fixes_the_sample(image_path: Path) -> None:
    result = _cli("run", str(image_path), *FAST, "--min-margin", "0", "--format", "json")
    record = json.loads(result.stdout)
    assert result.exit_code == 0 and record["status"] == "fixed"
    assert record["edited_prediction"] == record["label"] == 3


def test_run_image_already_right_exports_it_unedited_and_says_so(
    image_path: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "x_label8.png"  # the model predicts 8 for the sample digit
    renamed.write_bytes(image_path.read_bytes())
    result = _cli("run", str(renamed), *FAST, "--format", "json")
    record = json.loads(result.stdout)
    assert result.exit_code == 0
    assert record["status"] == "already right" and record["study"] is None
    assert record["preserved"] == 1.0 and record["trials"] == 0
    assert Path(record["export"]).read_bytes() == renamed.read_bytes()
    assert "Note: x_label8.png: already right" in result.stderr
    table = _cli("run", str(renamed), *FAST)
    assert "already right" in table.stdout


def test_run_no_edit_reaches_min_margin_is_fixed_below_margin_with_note(
    image_path: Path,
) -> None:
    result = _cli("run", str(image_path), *FAST, "--min-margin", "50", "--format", "json")
    record = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert record["status"] == "fixed below margin" and record["margin"] < 50
    assert f"exported the largest margin, {record['margin']:.3f}" in record["reason"]
    assert "Note: 2_label3.png: fixed below margin" in result.stderr
    assert "--min-margin 50" in result.stderr

    resumed = _cli("resume", record["study"], "--trials", "1", "--format", "json")
    assert json.loads(resumed.stdout)["status"] == "fixed below margin"
    assert "Note: fixed below margin" in resumed.stderr
    exported = _cli("export", record["study"], "-o", "e", "--format", "json")
    assert json.loads(exported.stdout)["status"] == "fixed below margin"
    assert "Note: fixed below margin" in exported.stderr


def test_export_trial_that_does_not_fix_writes_it_with_a_note(image_path: Path) -> None:
    study_name = json.loads(_cli("run", str(image_path), *FAST, "--format", "json").stdout)[
        "study"
    ]
    study = optuna.load_study(study_name=study_name, storage=open_storage())
    wrong = [t for t in study.trials if t.user_attrs.get("edited_prediction") not in (None, 3)]
    if not wrong:
        pytest.skip("every trial of this short study fixed the digit")
    number = wrong[0].number
    result = _cli("export", study_name, "--trial", str(number), "-o", "e", "--format", "json")
    assert result.exit_code == 0
    assert f"Note: trial {number} does not fix the image" in result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "not fixed" and Path(record["files"][0]).exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keep": [99999]}, "keep[0] is 99999"),
        ({"regions": [[1, 2]]}, "regions[0] is [1, 2]"),
        ({"regions": [{"x": 1}]}, "regions[0].y is missing"),
        ({"pixels": -5}, "pixels is -5"),
        ({"pixels": 100000}, "pixels is 100000"),
        ({"strength": float("nan")}, "strength is nan"),
    ],
)
def test_apply_hand_edited_recipe_exits_2_naming_the_field(
    image_path: Path, change: dict, field: str
) -> None:
    record = json.loads(_cli("run", str(image_path), *FAST, "--format", "json").stdout)
    recipe_file = Path(record["export"]).with_suffix(".json")
    data = json.loads(recipe_file.read_text())
    data["recipe"] = {**data["recipe"], **change}
    Path("edited.json").write_text(json.dumps(data))
    result = _cli("apply", "edited.json", "--image", str(image_path), "-o", "x.png")
    assert result.exit_code == 2, result.output
    assert f"recipe field {field}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not Path("x.png").exists()


def test_verify_original_without_label_says_to_rename_it(image_path: Path) -> None:
    Path("edited").mkdir()
    Path("originals").mkdir()
    Path("edited/plain.png").write_bytes(image_path.read_bytes())
    Path("originals/plain.png").write_bytes(image_path.read_bytes())
    result = _cli("verify", "edited", "--originals", "originals")
    assert result.exit_code == 1
    assert "has no label in its name; rename it like" in result.stdout
    assert "--label" not in result.output
