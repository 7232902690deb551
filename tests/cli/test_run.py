import json
from pathlib import Path

import optuna
import torch
from click.testing import CliRunner

from edit_search.cli import main
from edit_search.data.checkpoint import load_model
from edit_search.data.images import load_image
from edit_search.objectives import margin, preserved
from edit_search.optimizer import open_storage


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def test_run_default_sample_fixes_it_and_export_reproduces_reported_scores(
    image_path: Path,
) -> None:
    result = _run(
        "--image", str(image_path), "--min-preserve", "0.6", "--trials", "16", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(record) >= {
        "image",
        "label",
        "original_prediction",
        "edited_prediction",
        "margin",
        "preserved",
        "study",
        "export",
    }
    assert record["label"] == 3 and record["original_prediction"] != 3
    assert record["edited_prediction"] == 3
    assert record["preserved"] >= 0.6 and record["margin"] > 0

    # The exported PNG, loaded again, gives exactly the reported prediction and preserved share.
    edited = load_image(record["export"], label=3)
    original = load_image(image_path)
    logits = load_model()(edited.image).double()
    assert int(logits.argmax()) == record["edited_prediction"]
    assert float(margin(logits, 3)[0]) == record["margin"]
    assert float(preserved(edited.pixels[None], original.pixels)[0]) == record["preserved"]
    recipe = json.loads(Path(record["export"]).with_suffix(".json").read_text())
    assert recipe["preserved"] == record["preserved"] and recipe["label"] == 3


def test_run_same_command_twice_continues_the_same_study(image_path: Path) -> None:
    args = ("--image", str(image_path), "--trials", "8", "--format", "json")
    first = json.loads(_run(*args).stdout.strip().splitlines()[-1])
    second = json.loads(_run(*args).stdout.strip().splitlines()[-1])
    assert first["study"] == second["study"]
    study = optuna.load_study(study_name=first["study"], storage=open_storage())
    assert len(study.trials) == second["trials"] > first["trials"]


def test_run_enqueues_hand_recipes_first_with_constraint_and_names(image_path: Path) -> None:
    record = json.loads(
        _run("--image", str(image_path), "--trials", "8", "--format", "json")
        .stdout.strip()
        .splitlines()[-1]
    )
    study = optuna.load_study(study_name=record["study"], storage=open_storage())
    assert study.metric_names == ["margin", "preserved"]
    first = study.trials[0]
    assert first.params["method"] == "integrated_gradients"
    assert first.user_attrs["recipe"]["pixels"] == round(0.3 * 784)
    assert first.user_attrs["recipe"]["strength"] == 0.9
    for trial in study.trials:
        assert trial.constraints["min_preserve"] == 0.6 - trial.values[1]


def test_run_table_output_names_image_and_export(image_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--image", str(image_path), "--trials", "8"],
        catch_exceptions=False,
        terminal_width=200,
    )
    assert result.exit_code == 0
    assert "2_label3.png" in result.stdout and "runs/" in result.stdout


def test_run_different_min_preserve_starts_a_different_study(image_path: Path) -> None:
    names = set()
    for share in ("0.6", "0.9"):
        out = _run(
            "--image",
            str(image_path),
            "--trials",
            "8",
            "--min-preserve",
            share,
            "--format",
            "json",
        )
        names.add(json.loads(out.stdout.strip().splitlines()[-1])["study"])
    assert len(names) == 2


def test_run_missing_label_exits_2_with_one_line(tmp_path: Path, image_path: Path) -> None:
    copy = tmp_path / "digit.png"
    copy.write_bytes(image_path.read_bytes())
    result = CliRunner().invoke(main, ["run", "--image", str(copy)])
    assert result.exit_code == 2
    assert "no label for 'digit.png'" in result.stderr
    assert not Path("runs").exists() or not any(Path("runs").glob("*/*.png"))
    assert torch.equal(load_image(copy, label=3).pixels, load_image(image_path).pixels)


def test_run_patience_stops_the_study_before_its_trial_budget(image_path: Path) -> None:
    result = _run(
        "--image", str(image_path), "--trials", "48", "--patience", "2", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["status"] == "fixed"
    assert record["trials"] < 48


def test_run_repeated_methods_are_the_same_study(image_path: Path) -> None:
    names = set()
    for methods in ("saliency", "saliency,saliency", " saliency ,"):
        out = _run(
            "--image", str(image_path), "--trials", "2", "--methods", methods, "--format", "json"
        )
        assert out.exit_code == 0, out.output
        names.add(json.loads(out.stdout.strip().splitlines()[-1])["study"])
    assert len(names) == 1
