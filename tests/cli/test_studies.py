import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner, Result
from optuna.trial import TrialState
from PIL import Image

from edit_search.cli import main
from edit_search.data.checkpoint import DEFAULT_CHECKPOINT
from edit_search.optimizer import open_storage

# Cheap attribution methods keep each run to seconds; the search itself is tested elsewhere.
FAST = ("--methods", "integrated_gradients,saliency,occlusion_white")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, challenge_dir: Path) -> dict[str, str]:
    """One finished study of the sample digit: its name, storage and export folder."""
    folder = tmp_path_factory.mktemp("done")
    storage = str(folder / "studies.journal")
    out = folder / "best"
    result = _cli(
        "run",
        "--image",
        str(challenge_dir / "2_label3.png"),
        "--trials",
        "16",
        *FAST,
        "--storage",
        storage,
        "-o",
        str(out),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    return {"study": record["study"], "storage": storage, "folder": str(folder)}


def test_studies_table_lists_study_with_image_and_best_preserved(done) -> None:
    result = _cli("studies", "--storage", done["storage"])
    assert result.exit_code == 0
    assert done["study"] in result.stdout and "2_label3.png" in result.stdout
    assert "60%" in result.stdout and "%" in result.stdout.split("2_label3.png")[1]


def test_studies_json_one_record_per_study(done) -> None:
    result = _cli("studies", "--storage", done["storage"], "--format", "json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["study"] for r in records] == [done["study"]]
    assert records[0]["trials"] == 16 and records[0]["feasible"] >= 1
    assert 0.6 <= records[0]["best_preserved"] <= 1.0


def test_studies_empty_storage_says_how_to_make_one() -> None:
    open_storage()  # the default journal, with no study in it
    result = _cli("studies")
    assert result.exit_code == 0
    assert result.stdout == "" and "'edit-search run' makes one" in result.stderr


def test_studies_missing_storage_exits_2_without_creating_it() -> None:
    result = _cli("studies")
    assert result.exit_code == 2 and "no storage at" in result.stderr
    assert not Path("runs").exists()


def test_pareto_table_shows_front_with_recipe_columns(done) -> None:
    result = _cli("pareto", done["study"], "--storage", done["storage"])
    assert result.exit_code == 0
    header = result.stdout.splitlines()[2]
    for column in ("trial", "method", "target", "top-k", "operation", "strength", "regions"):
        assert column in header
    for column in ("margin", "preserved", "prediction"):
        assert column in header
    assert "feasible" in result.stdout.splitlines()[0]


def test_pareto_json_and_plot_match_storage(done, tmp_path: Path) -> None:
    plot = tmp_path / "front.png"
    result = _cli(
        "pareto",
        done["study"],
        "--storage",
        done["storage"],
        "--format",
        "json",
        "--plot",
        str(plot),
    )
    assert result.exit_code == 0
    front = json.loads(result.stdout)
    assert front["feasible"] is True
    study = optuna.load_study(study_name=done["study"], storage=open_storage(done["storage"]))
    assert {r["trial"] for r in front["front"]} == {t.number for t in study.best_trials}
    with Image.open(plot) as picture:
        assert picture.format == "PNG" and picture.width > 300


def test_pareto_unknown_study_exits_2_with_one_line(done) -> None:
    result = _cli("pareto", "nope", "--storage", done["storage"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: no study named 'nope' in this storage; 'edit-search studies' lists them."
    ]


def test_export_default_pick_writes_png_recipe_and_panel(done, tmp_path: Path) -> None:
    result = _cli(
        "export",
        done["study"],
        "--storage",
        done["storage"],
        "-o",
        str(tmp_path),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    for path in record["files"]:
        assert Path(path).is_file()
    assert record["edited_prediction"] == record["label"] == 3
    assert record["preserved"] >= record["min_preserve"]
    for key in ("recipe", "model_sha256", "image_sha256", "version", "original_prediction"):
        assert key in record
    assert Path(record["files"][2]).name.endswith("_panel.png")


def test_export_then_apply_on_original_is_byte_identical(
    done, tmp_path: Path, image_path: Path
) -> None:
    front = json.loads(
        _cli("pareto", done["study"], "--storage", done["storage"], "--format", "json").stdout
    )["front"]
    number = front[-1]["trial"]
    exported = _cli(
        "export", done["study"], "--trial", str(number), "--storage", done["storage"], "-o", "x"
    )
    assert exported.exit_code == 0, exported.output
    png = Path("x") / f"2_label3_trial{number}.png"
    applied = _cli(
        "apply", str(png.with_suffix(".json")), "--image", str(image_path), "-o", "y.png"
    )
    assert applied.exit_code == 0, applied.output
    assert Path("y.png").read_bytes() == png.read_bytes()
    assert "identical to the exported edit" in applied.stdout


def test_export_missing_trial_exits_2_naming_range(done) -> None:
    result = _cli("export", done["study"], "--storage", done["storage"], "--trial", "999")
    assert result.exit_code == 2
    assert "has no trial 999 (its trials are 0-15)" in result.stderr


def test_export_trial_with_pick_is_usage_error(done) -> None:
    result = _cli(
        "export",
        done["study"],
        "--storage",
        done["storage"],
        "--trial",
        "1",
        "--pick",
        "largest-margin",
    )
    assert result.exit_code == 2 and "--trial names one trial" in result.stderr


def _exported(done) -> Path:
    result = _cli("export", done["study"], "--storage", done["storage"], "-o", "e")
    assert result.exit_code == 0, result.output
    return next(Path("e").glob("*_trial*.json"))


def test_apply_other_image_refused_exit_2_unless_force(done, challenge_dir: Path) -> None:
    recipe = _exported(done)
    other = challenge_dir / "1_label3.png"
    refused = _cli("apply", str(recipe), "--image", str(other), "-o", "o.png")
    assert refused.exit_code == 2 and not Path("o.png").exists()
    assert refused.stderr.strip().splitlines() == [
        "Error: image '1_label3.png' is not the recipe's '2_label3.png' (their hashes differ); "
        "pass --force to apply the recipe anyway."
    ]
    forced = _cli("apply", str(recipe), "--image", str(other), "-o", "o.png", "--force")
    assert forced.exit_code == 0 and Path("o.png").is_file()
    assert "Warning:" in forced.stderr and "differs from the export" in forced.stdout


def test_apply_other_model_refused_exit_2(done, image_path: Path, tmp_path: Path) -> None:
    recipe = _exported(done)
    state = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 0.01
    checkpoint = tmp_path / "other.pt"
    torch.save(state, checkpoint)
    shutil.copy(DEFAULT_CHECKPOINT.with_suffix(".json"), checkpoint.with_suffix(".json"))
    result = _cli("apply", str(recipe), "--image", str(image_path), "--model", str(checkpoint))
    assert result.exit_code == 2
    assert "model 'other.pt' is not the recipe's checkpoint" in result.stderr


def test_apply_missing_recipe_exits_2(image_path: Path) -> None:
    result = _cli("apply", "missing.json", "--image", str(image_path))
    assert result.exit_code == 2 and "recipe 'missing.json' does not exist" in result.stderr


def test_resume_adds_trials_with_stored_settings(image_path: Path) -> None:
    first = _cli("run", "--image", str(image_path), "--trials", "8", *FAST, "--format", "json")
    name = json.loads(first.stdout.strip().splitlines()[-1])["study"]
    result = _cli("resume", name, "--trials", "8", "--format", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["study"] == name and record["trials"] >= 9
    study = optuna.load_study(study_name=name, storage=open_storage())
    assert study.user_attrs["edit_search.settings"]["min_preserve"] == 0.6
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_resume_changed_image_refused_before_any_trial(
    image_path: Path, challenge_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "2_label3.png"
    shutil.copy(image_path, copy)
    first = _cli("run", "--image", str(copy), "--trials", "8", *FAST, "--format", "json")
    name = json.loads(first.stdout.strip().splitlines()[-1])["study"]
    before = len(optuna.load_study(study_name=name, storage=open_storage()).trials)
    shutil.copy(challenge_dir / "1_label3.png", copy)  # another 3 under the same name

    result = _cli("resume", name)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "image_sha256 differ" in lines[0]
    assert "edit-search run --image" in lines[0]
    study = optuna.load_study(study_name=name, storage=open_storage())
    assert len(study.trials) == before
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_run_min_preserve_one_exits_3_no_png_and_pareto_shows_infeasible(
    image_path: Path,
) -> None:
    result = _cli(
        "run", "--image", str(image_path), "--trials", "8", *FAST, "--min-preserve", "1.0"
    )
    assert result.exit_code == 3
    assert "keeping 100% of the pixels; lower --min-preserve" in result.stderr
    assert not list(Path(".").rglob("*.png"))

    name = json.loads(_cli("studies", "--format", "json").stdout)["study"]
    shown = _cli("pareto", name, "--format", "json")
    assert shown.exit_code == 0
    front = json.loads(shown.stdout)
    assert front["feasible"] is False and front["front"]
    assert all(not r["feasible"] for r in front["front"])
    assert "showing the front of the infeasible trials" in shown.stderr
    exported = _cli("export", name)
    assert exported.exit_code == 3 and not list(Path(".").rglob("*.png"))
