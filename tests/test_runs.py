import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image
from torch import nn

from edit_search.attribution import TARGETS
from edit_search.data.images import load_image
from edit_search.optimizer import (
    EditContext,
    create_or_resume,
    fail_stale_trials,
    open_storage,
    optimize,
    register_worker,
)
from edit_search.optimizer._recovery import WORKER_PREFIX
from edit_search.runs import (
    ALREADY_RIGHT,
    FIXED,
    FIXED_BELOW_MARGIN,
    NOT_FIXED,
    completed_trials,
    edit_status,
    export_dir,
    export_trial,
    is_feasible,
    is_safe_study_name,
    pareto_front,
    pareto_indices,
    pick_trial,
    plot_points,
    run_study,
    safe_file_name,
    settings_for,
    summarize,
)
from edit_search.search_spaces import SearchSpace

SPACE = SearchSpace(methods=("integrated_gradients", "saliency", "occlusion_white"))


def _dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether b dominates a (reference definition)."""
    return b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, model: nn.Module, challenge_dir: Path):
    """A study of 16 trials on the shipped model and sample digit, in a journal file."""
    folder = tmp_path_factory.mktemp("study")
    storage = open_storage(str(folder / "studies.journal"))
    image = load_image(challenge_dir / "2_label3.png")
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="tpe",
        space=SPACE,
    )
    result = run_study(storage, settings, model, image, n_trials=16, out_dir=folder / "out")
    study = optuna.load_study(study_name=result.study, storage=storage)
    return study, image, folder


def test_pareto_indices_random_points_match_brute_force_reference() -> None:
    rng = random.Random(0)
    for _ in range(50):
        # Few distinct values, so ties and duplicates are common.
        points = [
            (rng.randint(-3, 3) / 2, rng.randint(0, 6) / 6) for _ in range(rng.randint(0, 30))
        ]
        expected = [i for i, a in enumerate(points) if not any(_dominated(a, b) for b in points)]
        assert pareto_indices(points) == expected


def test_pareto_indices_equal_points_both_on_front() -> None:
    assert pareto_indices([(1.0, 0.5), (1.0, 0.5), (0.5, 0.5)]) == [0, 1]


def test_pareto_indices_nan_or_inf_never_on_front() -> None:
    points = [(float("nan"), 1.0), (float("inf"), 0.9), (1.0, float("-inf")), (0.1, 0.1)]
    assert pareto_indices(points) == [3]


def test_pareto_front_finished_study_matches_optuna_best_trials(finished) -> None:
    study, _, _ = finished
    front = pareto_front(study)
    assert front, "the sample digit has feasible trials"
    assert all(is_feasible(t) for t in front)
    # Optuna's own front of a constrained study counts only feasible trials.
    assert {t.number for t in front} == {t.number for t in study.best_trials}
    preserved = [t.values[1] for t in front]
    assert preserved == sorted(preserved, reverse=True)


def test_plot_points_finished_study_marks_every_scored_trial(finished) -> None:
    study, _, _ = finished
    points = plot_points(study)
    assert len(points) == len(completed_trials(study))
    assert {p.number for p in points if p.on_front and p.feasible} == {
        t.number for t in pareto_front(study)
    }


def test_summarize_finished_study_counts_trials_and_best_preserved(finished) -> None:
    study, _, _ = finished
    summary = summarize(study)
    assert summary.image == "2_label3.png" and summary.label == 3
    assert summary.trials == 16 and summary.running == 0
    best = max(
        (t for t in completed_trials(study) if is_feasible(t) and t.values[0] > 0),
        key=lambda t: t.values[1],
    )
    assert summary.best_preserved == best.values[1]


def test_export_trial_any_trial_writes_png_json_and_panel(finished, model: nn.Module) -> None:
    study, image, folder = finished
    trial = pareto_front(study)[-1]
    ctx = EditContext(model, image.pixels, image.label)
    png = export_trial(study, trial, ctx, folder / "any", name="chosen")
    record = json.loads(png.with_suffix(".json").read_text())
    panel = png.with_name("chosen_panel.png")
    assert record["trial"] == trial.number and record["panel"] == panel.name
    assert record["margin"] == pytest.approx(trial.values[0], abs=1e-4)
    assert record["preserved"] == trial.values[1]
    with Image.open(panel) as picture:
        assert picture.width > 5 * 100 and picture.height > 100
    assert torch.equal(
        load_image(png, label=3).pixels.ne(image.pixels).sum(),
        torch.tensor(record["changed_pixels"]),
    )


def test_pick_trial_most_preserved_is_safe_front_point(finished) -> None:
    study, _, _ = finished
    chosen = pick_trial(study)
    safe = [t for t in pareto_front(study) if t.values[0] >= 1.0]
    if safe:
        assert chosen.values[1] == max(t.values[1] for t in safe)


class _NaNAfterSetup(nn.Module):
    """The shipped model, returning NaN logits once ``broken`` is set."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.broken = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return torch.full_like(logits, float("nan")) if self.broken else logits


def test_optimize_model_returning_nan_fails_trials_never_on_front(
    model: nn.Module, image_path: Path
) -> None:
    storage = open_storage()
    image = load_image(image_path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="random",
        space=SearchSpace(methods=("saliency",), max_regions=0),
    )
    study = create_or_resume(storage, settings)
    wrapped = _NaNAfterSetup(model)
    ctx = EditContext(wrapped, image.pixels, image.label)
    for target in TARGETS:
        ctx.attributions.get("saliency", target)  # maps from the healthy model
    wrapped.broken = True
    optimize(study, ctx, 8, polish=False)

    states = {t.state for t in study.trials}
    assert states == {TrialState.FAIL}
    assert pareto_front(study) == [] and pareto_front(study, feasible=False) == []
    assert completed_trials(study) == []


def test_fail_stale_trials_dead_worker_fails_its_running_trial(image_path: Path) -> None:
    storage = open_storage()
    image = load_image(image_path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="random",
        space=SPACE,
    )
    study = create_or_resume(storage, settings)
    # A process that signed in and is gone: a child that has exited and been reaped.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(child.stdout)
    study.set_user_attr(
        f"{WORKER_PREFIX}test:{dead}",
        {"host": socket.gethostname(), "pid": dead, "started": "2000-01-01T00:00:00"},
    )
    orphan = study.ask()
    assert fail_stale_trials(study) == [orphan.number]
    assert study.trials[orphan.number].state == TrialState.FAIL


def test_fail_stale_trials_live_worker_keeps_its_running_trial(image_path: Path) -> None:
    storage = open_storage()
    image = load_image(image_path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="random",
        space=SPACE,
    )
    study = create_or_resume(storage, settings)
    register_worker(study)
    mine = study.ask()
    assert fail_stale_trials(study) == []
    assert study.trials[mine.number].state == TrialState.RUNNING
    assert fail_stale_trials(study, grace_seconds=-1.0) == [mine.number]


def test_fail_stale_trials_trial_tagged_by_live_worker_kept(image_path: Path) -> None:
    storage = open_storage()
    image = load_image(image_path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="random",
        space=SPACE,
    )
    study = create_or_resume(storage, settings)
    # An earlier run that has exited signed in; a live worker process tagged its trial.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    study.set_user_attr(
        f"{WORKER_PREFIX}test:{child.stdout.strip()}",
        {"host": socket.gethostname(), "pid": int(child.stdout), "started": "2000-01-01"},
    )
    theirs = study.ask()
    theirs.set_user_attr("worker", f"{socket.gethostname()}-{os.getpid()}")
    assert fail_stale_trials(study) == []
    gone = study.ask()
    gone.set_user_attr("worker", f"{socket.gethostname()}-{child.stdout.strip()}")
    assert fail_stale_trials(study) == [gone.number]


def _record(predicted: int, margin: float, preserved: float = 0.9) -> dict:
    return {"edited_prediction": predicted, "margin": margin, "preserved": preserved}


@pytest.mark.parametrize(
    ("record", "status"),
    [
        (_record(3, 1.5), FIXED),
        (_record(3, 0.4), FIXED_BELOW_MARGIN),
        (_record(8, 0.4), NOT_FIXED),
        (_record(3, float("nan")), NOT_FIXED),
        (_record(3, float("inf")), NOT_FIXED),
        (_record(3, 1.5, preserved=0.5), NOT_FIXED),
    ],
)
def test_edit_status_only_right_feasible_edits_are_fixed(record: dict, status: str) -> None:
    assert edit_status(record, label=3, min_preserve=0.6, min_margin=1.0)[0] == status


def test_edit_status_below_margin_reason_names_both_margins() -> None:
    _, reason = edit_status(_record(3, 0.4), label=3, min_preserve=0.6, min_margin=1.0)
    assert "--min-margin 1" in reason and "0.400" in reason


@pytest.mark.parametrize("name", ["../x", "a/b", ".x", "a\\b", "x\ny", "", "a" * 201])
def test_safe_file_name_unsafe_study_name_stays_one_plain_folder(name: str) -> None:
    assert not is_safe_study_name(name)
    folder = export_dir(name)
    assert folder.parent == Path("runs") and not folder.name.startswith(".")
    assert "/" not in folder.name and "\\" not in folder.name and len(folder.name) < 120
    assert safe_file_name(name) != safe_file_name(name + "!")


@pytest.mark.parametrize("name", ["2_label3-bc229c0075", "sp ace_label3", "ü_label3"])
def test_safe_file_name_plain_name_unchanged(name: str) -> None:
    assert safe_file_name(name) == name


def test_run_study_unsafe_name_from_storage_exports_inside_runs(
    image_path: Path, model: nn.Module
) -> None:
    image = load_image(image_path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.3,
        min_margin=0.0,
        sampler="random",
        space=SearchSpace(methods=("saliency",), max_regions=0),
    )
    result = run_study(open_storage(), settings, model, image, n_trials=2, study_name="../../x")
    assert Path(result.export).resolve().is_relative_to(Path("runs").resolve())


def test_run_study_image_already_right_exports_it_unedited_without_study(
    tmp_path: Path, image_path: Path, model: nn.Module
) -> None:
    # The model predicts 8 for the sample digit: named as an 8, it is already right.
    renamed = tmp_path / "x_label8.png"
    renamed.write_bytes(image_path.read_bytes())
    image = load_image(renamed)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="tpe",
        space=SPACE,
    )
    storage = open_storage()
    result = run_study(storage, settings, model, image, n_trials=4)
    assert result.status == ALREADY_RIGHT and result.study is None and result.trials == 0
    assert result.preserved == 1.0 and result.edited_prediction == 8
    assert "below --min-margin 1" in result.reason
    assert load_image(result.export, label=8).pixels.equal(image.pixels)
    assert optuna.get_all_study_summaries(storage, False) == []
