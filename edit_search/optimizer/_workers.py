"""Many workers on the studies of one folder, through one shared Optuna storage.

Optuna's own distributed mode is the engine: every worker opens the same studies in the same
storage (PostgreSQL across machines, a journal file on one machine) and asks and tells trials.
Three rules on top of it keep the work exact:

- The count rule. A study is done when it holds ``target`` COMPLETE trials. A worker asks at
  most ``target - COMPLETE - RUNNING`` trials at a time, and when it tells a trial it first
  counts the trials numbered below it that are COMPLETE, RUNNING or WAITING: when there are
  already ``target`` of them the trial is surplus and is told FAIL (user attr ``surplus``).
  So a study never holds more than ``target`` COMPLETE trials, even when two workers share
  it; a study ends with fewer only while a trial it counted is still running.
- The claim. A worker takes only studies in which no other worker has a trial RUNNING. Two
  workers that pick the same idle study in the same instant share it for one batch, which the
  count rule keeps exact; afterwards the one that sees the other's trials moves on.
- The heartbeat. While a trial runs, its worker records a heartbeat every
  ``heartbeat_interval`` seconds (Optuna's on a relational storage, a trial system attr on a
  journal file). Any worker fails RUNNING trials whose heartbeat is older than
  ``grace_period`` and enqueues them again once (Optuna's
  ``RetryHeartbeatStaleTrialCallback``), so a killed worker leaves no trial RUNNING for ever
  and loses no work beyond the trials it held.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from edit_search.data.model import Classifier
from edit_search.errors import StudyError
from edit_search.optimizer._context import EditContext
from edit_search.optimizer._loop import Progress, optimize
from edit_search.optimizer._study import SETTINGS_KEY, StudySettings, create_or_resume

logger = logging.getLogger(__name__)

WORKER_KEY = "worker"
SURPLUS_KEY = "surplus"
HEARTBEAT_KEY = "edit_search.heartbeat"
LIVE_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def batch_size_for(device: torch.device | str) -> int:
    """Edits per forward pass: 1,024 on a CPU (its sweet spot), 16,384 on a GPU."""
    return 16384 if torch.device(device).type == "cuda" else 1024


def default_worker_id() -> str:
    """``HOST-PID``: unique among the workers sharing a storage."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Job:
    """One image of the folder and the settings of its study.

    Attributes:
        settings: the study's settings; its name is derived from them.
        pixels: the image's uint8 values, shape (28, 28).
        label: the true class.
    """

    settings: StudySettings
    pixels: torch.Tensor
    label: int

    @property
    def study_name(self) -> str:
        return self.settings.study_name()


@dataclass(frozen=True)
class StudyCount:
    """Trials of one study by state; ``mine`` counts this worker's RUNNING trials."""

    complete: int = 0
    running: int = 0
    waiting: int = 0
    mine: int = 0

    @property
    def others(self) -> int:
        return self.running - self.mine


@dataclass
class WorkerReport:
    """What one worker did.

    Attributes:
        worker: its id.
        told: trials it told COMPLETE, by study name.
        surplus: trials it told FAIL because the study already had its target.
        stale_failed: other workers' trials it failed for a stale heartbeat.
    """

    worker: str
    told: dict[str, int] = field(default_factory=dict)
    surplus: int = 0
    stale_failed: int = 0


def count_trials(storage: BaseStorage, study_name: str, worker: str | None = None) -> StudyCount:
    """Trials of a study by state; a study not yet created counts as empty."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return StudyCount()
    trials = storage.get_all_trials(study_id, deepcopy=False, states=LIVE_STATES)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return StudyCount(
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        running=len(running),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
        mine=sum(t.user_attrs.get(WORKER_KEY) == worker for t in running) if worker else 0,
    )


def pending_studies(storage: BaseStorage, jobs: Sequence[Job], target: int) -> list[str]:
    """Names of the studies that still hold fewer than ``target`` COMPLETE trials."""
    return [j.study_name for j in jobs if count_trials(storage, j.study_name).complete < target]


class _TargetStudy(optuna.Study):
    """A study that applies the count rule when it tells and tracks the trials it asked."""

    def __init__(self, study: optuna.Study, target: int, worker: str, heart: _Heart) -> None:
        super().__init__(study.study_name, study._storage, sampler=study.sampler)
        self._target = target
        self._worker = worker
        self._heart = heart
        self.completed = 0
        self.surplus = 0

    def ask(self, fixed_distributions: Any = None) -> optuna.Trial:  # noqa: D102
        with warnings.catch_warnings():
            # Optuna expects heartbeats only inside Study.optimize; this worker records them.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = super().ask(fixed_distributions)
        trial.set_user_attr(WORKER_KEY, self._worker)
        self._heart.add(self, trial._trial_id)
        return trial

    def tell(  # noqa: D102
        self,
        trial: optuna.Trial | int,
        values: float | Sequence[float] | None = None,
        state: TrialState | None = None,
        skip_if_finished: bool = False,
    ) -> FrozenTrial:
        trial_id = trial._trial_id if isinstance(trial, optuna.Trial) else int(trial)
        try:
            if state in (None, TrialState.COMPLETE) and self._is_surplus(trial_id):
                self._storage.set_trial_user_attr(trial_id, SURPLUS_KEY, True)
                self.surplus += 1
                return super().tell(trial, state=TrialState.FAIL)
            frozen = super().tell(trial, values, state, skip_if_finished)
            self.completed += frozen.state == TrialState.COMPLETE
            return frozen
        finally:
            self._heart.remove(trial_id)

    def add_trial(self, trial: FrozenTrial) -> None:  # noqa: D102
        # A finished trial added whole (the loop's polished edit) obeys the count rule too: it
        # is stored RUNNING first, then finished as COMPLETE, or as FAIL when it is surplus.
        if trial.state != TrialState.COMPLETE:
            super().add_trial(trial)
            return
        running = copy.copy(trial)
        running.state, running.values, running.datetime_complete = TrialState.RUNNING, None, None
        running._user_attrs = {**trial.user_attrs, WORKER_KEY: self._worker}
        trial_id = self._storage.create_new_trial(self._study_id, template_trial=running)
        if self._is_surplus(trial_id):
            self._storage.set_trial_user_attr(trial_id, SURPLUS_KEY, True)
            self._storage.set_trial_state_values(trial_id, TrialState.FAIL)
            self.surplus += 1
            return
        self._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, trial.values)
        self.completed += 1

    def _is_surplus(self, trial_id: int) -> bool:
        number = self._storage.get_trial(trial_id).number
        trials = self._storage.get_all_trials(self._study_id, deepcopy=False, states=LIVE_STATES)
        return sum(t.number < number for t in trials) >= self._target


class _Heart:
    """Records heartbeats of this worker's RUNNING trials from a background thread."""

    def __init__(self, storage: BaseStorage, interval: float) -> None:
        self._storage = storage
        self._interval = interval
        self._trials: dict[int, optuna.Study] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edit-search-heartbeat")
        self._thread.daemon = True

    def __enter__(self) -> _Heart:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, study: optuna.Study, trial_id: int) -> None:
        with self._lock:
            self._trials[trial_id] = study
        self._beat(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._trials.pop(trial_id, None)

    def _beat(self, trial_id: int) -> None:
        try:
            if isinstance(self._storage, BaseHeartbeat) and is_heartbeat_enabled(self._storage):
                self._storage.record_heartbeat(trial_id)
            else:
                self._storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            self.remove(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trials)
            for trial_id in ids:
                try:
                    self._beat(trial_id)
                except Exception as exc:  # A storage hiccup must not kill the worker.
                    logger.warning("heartbeat of trial %d failed: %s", trial_id, exc)


def fail_stale(study: optuna.Study, grace_period: float, max_retry: int = 1) -> int:
    """Fail RUNNING trials whose heartbeat is older than ``grace_period``; returns how many.

    A relational storage uses Optuna's own heartbeat (and the callback it was opened with); a
    journal file uses the ``edit_search.heartbeat`` system attr, falling back to the trial's
    start time, and enqueues each failed trial again up to ``max_retry`` times.
    """
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        fail_stale_trials(study)
        return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - before

    now = time.time()
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT_KEY)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.replace(tzinfo=UTC).timestamp()
        if beat is None or now - float(beat) <= grace_period:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed += 1
                retry(study, storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # Another worker failed it first.
    return failed


def open_study(
    storage: BaseStorage, settings: StudySettings, timeout: float = 30.0
) -> optuna.Study:
    """``create_or_resume`` that tolerates another worker creating the same study meanwhile.

    Raises:
        StudyError: the study exists with other settings, or its creator never finished
            recording them within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return create_or_resume(storage, settings)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # Another worker created it between our look and our create.
        except StudyError:
            if _has_settings(storage, settings.study_name()) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise StudyError(
                f"study {settings.study_name()!r} was created by another worker that never "
                f"recorded its settings within {timeout:.0f} s; delete the study and rerun."
            )
        time.sleep(0.2)


def _has_settings(storage: BaseStorage, name: str) -> bool:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return SETTINGS_KEY in storage.get_study_user_attrs(study_id)


@dataclass
class _Claim:
    job: Job
    study: optuna.Study | None = None
    ctx: EditContext | None = None


def run_worker(
    storage: BaseStorage,
    jobs: Sequence[Job],
    model: Classifier,
    target: int,
    *,
    worker: str | None = None,
    trials_per_batch: int = 8,
    batch_size: int | None = None,
    heartbeat_interval: float = 30.0,
    grace_period: float = 120.0,
    wait: bool = True,
    on_batch: Callable[[str, int, Progress], None] | None = None,
    contexts: dict[str, EditContext] | None = None,
) -> WorkerReport:
    """Work on the studies of ``jobs`` until each holds ``target`` COMPLETE trials.

    Args:
        storage: shared by every worker; a relational storage should be opened with a
            heartbeat (``open_storage(url, heartbeat_interval=..., grace_period=...)``).
        jobs: one per image; every worker should get the same list, in any order.
        model: the classifier, on the device the edits are scored on.
        target: COMPLETE trials each study should end with.
        worker: this worker's id, unique among the workers [default: HOST-PID].
        trials_per_batch: trials asked for before their edits are scored together; also the
            most trials a worker takes from a study before it looks at the folder again.
        batch_size: edits per forward pass [default: ``batch_size_for`` the model's device].
        heartbeat_interval: seconds between heartbeats of this worker's RUNNING trials.
        grace_period: seconds without a heartbeat after which a RUNNING trial is failed.
        wait: when every unfinished study is busy with another worker, wait for it (and fail
            its trials if that worker dies) instead of returning.
        on_batch: called after each batch with the study name, its COMPLETE count and the
            loop's progress.
        contexts: filled with the image context of every study this worker opened, by study
            name, so a caller can export edits without computing attribution maps again.

    Raises:
        StudyError: a study of the folder exists with other settings.
    """
    if target < 1:
        raise ValueError(f"target must be at least 1; received {target}.")
    worker = worker or default_worker_id()
    device = next(model.parameters()).device
    batch_size = batch_size or batch_size_for(device)
    report = WorkerReport(worker)
    # Workers start at different places of the folder so they rarely meet.
    start = sum(worker.encode()) % max(len(jobs), 1)
    order = list(jobs[start:]) + list(jobs[:start])
    done: set[str] = set()
    claim: _Claim | None = None

    with _Heart(storage, heartbeat_interval) as heart:
        while True:
            claim, busy = _next_claim(storage, order, target, report, done, claim, grace_period)
            if claim is None:
                if busy and wait:
                    time.sleep(min(1.0, heartbeat_interval))
                    continue
                return report

            name = claim.job.study_name
            if claim.study is None:
                base = open_study(storage, claim.job.settings)
                claim.study = _TargetStudy(base, target, worker, heart)
                claim.ctx = contexts.get(name) if contexts is not None else None
                if claim.ctx is None:
                    claim.ctx = EditContext(
                        model, claim.job.pixels, claim.job.label, batch_size=batch_size
                    )
                if contexts is not None:
                    contexts[name] = claim.ctx
            count = count_trials(storage, claim.job.study_name, worker)
            wanted = min(trials_per_batch, target - count.complete - count.running)
            if wanted <= 0:
                continue
            study = claim.study
            assert isinstance(study, _TargetStudy) and claim.ctx is not None
            told, surplus = study.completed, study.surplus

            def progress(p: Progress, name: str = name) -> None:
                if on_batch is not None:
                    on_batch(name, count_trials(storage, name).complete, p)

            optimize(study, claim.ctx, wanted, trials_per_batch=wanted, on_progress=progress)
            report.told[name] = report.told.get(name, 0) + study.completed - told
            report.surplus += study.surplus - surplus


def _next_claim(
    storage: BaseStorage,
    order: Sequence[Job],
    target: int,
    report: WorkerReport,
    done: set[str],
    current: _Claim | None,
    grace_period: float,
) -> tuple[_Claim | None, bool]:
    """The study to work on next, and whether an unfinished study was skipped as busy."""
    busy = False
    candidates = ([current.job] if current is not None else []) + list(order)
    for job in candidates:
        name = job.study_name
        if name in done:
            continue
        count = count_trials(storage, name, report.worker)
        if count.complete >= target:
            done.add(name)
            continue
        if count.others > 0:
            # Busy elsewhere, or held by a worker that died: fail its stale trials, then skip.
            failed = _sweep(storage, name, grace_period)
            if failed:
                report.stale_failed += failed
                count = count_trials(storage, name, report.worker)
        if count.others > 0 or count.complete + count.running >= target:
            busy = True
            continue
        if current is not None and current.job is job:
            return current, busy
        return _Claim(job), busy
    return None, busy


def _sweep(storage: BaseStorage, name: str, grace_period: float) -> int:
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    failed = fail_stale(study, grace_period)
    if failed:
        logger.warning(
            "failed %d stale trial(s) of study %r at %s",
            failed,
            name,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
    return failed
