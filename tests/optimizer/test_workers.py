import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from edit_search.data.images import load_image
from edit_search.data.model import Classifier
from edit_search.optimizer import open_storage
from edit_search.optimizer._workers import (
    HEARTBEAT_KEY,
    SURPLUS_KEY,
    WORKER_KEY,
    Job,
    _Heart,
    _TargetStudy,
    batch_size_for,
    count_trials,
    fail_stale,
    open_study,
    pending_studies,
    run_worker,
)
from edit_search.runs import settings_for
from edit_search.search_spaces import SearchSpace


def _job(path: Path, model: Classifier) -> Job:
    image = load_image(path)
    settings = settings_for(
        image,
        model_path=None,
        arch=None,
        min_preserve=0.6,
        min_margin=1.0,
        sampler="tpe",
        space=SearchSpace(),
    )
    return Job(settings, image.pixels, image.label)


def _complete(storage: optuna.storages.BaseStorage, job: Job) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=job.study_name, storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_run_worker_target_not_a_multiple_of_batch_ends_with_exactly_target(
    model: Classifier, challenge_dir: Path
) -> None:
    storage = open_storage()
    jobs = [_job(challenge_dir / name, model) for name in ("0_label5.png", "1_label3.png")]
    report = run_worker(storage, jobs, model, 10, worker="solo", trials_per_batch=4)
    for job in jobs:
        complete = _complete(storage, job)
        assert len(complete) == 10
        assert {t.user_attrs[WORKER_KEY] for t in complete} == {"solo"}
    assert report.told == {job.study_name: 10 for job in jobs}
    assert report.surplus == 0 and pending_studies(storage, jobs, 10) == []


def test_run_worker_study_already_at_target_adds_nothing(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    jobs = [_job(image_path, model)]
    run_worker(storage, jobs, model, 4, worker="first", trials_per_batch=4)
    report = run_worker(storage, jobs, model, 4, worker="second", trials_per_batch=4)
    assert report.told == {} and len(_complete(storage, jobs[0])) == 4


def test_target_study_two_workers_racing_past_target_tell_surplus_as_fail(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    job = _job(image_path, model)
    base = open_study(storage, job.settings)
    with _Heart(storage, 30) as heart:
        first = _TargetStudy(base, 3, "a", heart)
        second = _TargetStudy(base, 3, "b", heart)
        # Both counted zero trials and ask three each: six asked for a target of three.
        trials = [s.ask() for s in (first, second) for _ in range(3)]
        for trial in reversed(trials):
            study = first if trial.user_attrs[WORKER_KEY] == "a" else second
            study.tell(trial, [1.0, 0.9])
    states = {t.number: t.state for t in base.get_trials(deepcopy=False)}
    complete = sorted(n for n, s in states.items() if s == TrialState.COMPLETE)
    assert complete == [0, 1, 2]
    surplus = [t for t in base.trials if t.user_attrs.get(SURPLUS_KEY)]
    assert len(surplus) == 3 and all(t.state == TrialState.FAIL for t in surplus)
    assert first.surplus + second.surplus == 3


def test_target_study_polished_trial_added_past_target_is_surplus_fail(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    base = open_study(storage, _job(image_path, model).settings)
    waiting = len(base.trials)  # The warm start, enqueued: they count toward the target.
    with _Heart(storage, 30) as heart:
        study = _TargetStudy(base, waiting + 1, "a", heart)
        first = study.ask()
        study.tell(first, [1.0, 0.9])
        finished = storage.get_trial(first._trial_id)
        polished = optuna.trial.create_trial(
            params=finished.params,
            distributions=finished.distributions,
            values=[2.0, 0.95],
            user_attrs={"polished_from": first.number},
        )
        study.add_trial(polished)  # The last one the target has room for.
        study.add_trial(polished)  # One more: surplus.
    trials = base.get_trials(deepcopy=False)
    assert [t.state for t in trials if t.number >= waiting] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    added = [t for t in trials if t.user_attrs.get("polished_from") == first.number]
    assert added[0].values == [2.0, 0.95] and added[0].user_attrs[WORKER_KEY] == "a"
    assert added[1].user_attrs[SURPLUS_KEY] is True
    assert study.completed == 2 and study.surplus == 1
    assert first.number == 0 and trials[0].state == TrialState.COMPLETE


def test_fail_stale_journal_trial_without_fresh_heartbeat_fails_and_is_enqueued_again(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    study = open_study(storage, _job(image_path, model).settings)
    stale = study.ask()
    storage.set_trial_system_attr(stale._trial_id, HEARTBEAT_KEY, time.time() - 60)
    fresh = study.ask()
    storage.set_trial_system_attr(fresh._trial_id, HEARTBEAT_KEY, time.time())
    assert fail_stale(study, grace_period=30) == 1
    assert storage.get_trial(stale._trial_id).state == TrialState.FAIL
    assert storage.get_trial(fresh._trial_id).state == TrialState.RUNNING
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == stale.number]
    assert len(retried) == 1 and retried[0].state == TrialState.WAITING
    assert retried[0].params == storage.get_trial(stale._trial_id).params


def test_run_worker_study_held_by_dead_worker_is_swept_and_completed(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    job = _job(image_path, model)
    study = open_study(storage, job.settings)
    dead = study.ask()  # A worker that died right after asking: RUNNING, no heartbeat since.
    dead.set_user_attr(WORKER_KEY, "dead")
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_KEY, time.time() - 10)
    assert count_trials(storage, job.study_name, "alive").others == 1

    report = run_worker(storage, [job], model, 6, worker="alive", grace_period=1)
    assert report.stale_failed == 1
    assert storage.get_trial(dead._trial_id).state == TrialState.FAIL
    assert len(_complete(storage, job)) == 6
    assert count_trials(storage, job.study_name).running == 0


def test_run_worker_busy_study_without_wait_is_left_to_its_worker(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage()
    job = _job(image_path, model)
    study = open_study(storage, job.settings)
    busy = study.ask()
    busy.set_user_attr(WORKER_KEY, "other")
    storage.set_trial_system_attr(busy._trial_id, HEARTBEAT_KEY, time.time())
    report = run_worker(storage, [job], model, 4, worker="me", grace_period=60, wait=False)
    assert report.told == {} and storage.get_trial(busy._trial_id).state == TrialState.RUNNING


def test_run_worker_target_below_one_raises(model: Classifier, image_path: Path) -> None:
    with pytest.raises(ValueError, match="target must be at least 1; received 0"):
        run_worker(open_storage(), [_job(image_path, model)], model, 0)


def test_batch_size_for_cuda_is_larger_than_for_cpu() -> None:
    assert batch_size_for("cuda") > batch_size_for(torch.device("cpu")) == 1024


def test_fail_stale_sqlite_trial_whose_worker_stopped_beating_fails_and_is_retried(
    model: Classifier, image_path: Path
) -> None:
    storage = open_storage("sqlite:///runs/studies.db", heartbeat_interval=1, grace_period=1)
    base = open_study(storage, _job(image_path, model).settings)
    with _Heart(storage, 1) as heart:
        trial = _TargetStudy(base, 4, "gone", heart).ask()  # Its first heartbeat is recorded.
    # The heart has stopped, as if the worker were killed: the trial goes stale.
    time.sleep(2.5)
    assert fail_stale(base, grace_period=1) == 1
    assert storage.get_trial(trial._trial_id).state == TrialState.FAIL
    retried = [t for t in base.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retried) == 1 and retried[0].state == TrialState.WAITING
