"""Keeping a study whole across Ctrl-C and killed processes.

Three pieces: Ctrl-C is held off while a trial is being asked for or told, so the loop always
knows which trials it still has to close; every process that runs trials signs in on the study
before its first trial; and a later session fails the RUNNING trials whose process is gone.
RDB storages have Optuna's heartbeat for the last part; a journal file has none, so the
sign-ins stand in for it.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

WORKER_PREFIX = "edit_search.worker:"
TARGET_KEY = "edit_search.target_trials"
# The per-trial owner tag that ``worker`` processes set (see ``_workers``).
TRIAL_WORKER_KEY = "worker"
# A RUNNING trial no live process can be shown to own is failed once it is this old: a batch of
# trials is told within seconds, so an hour-old RUNNING trial has no owner left.
DEFAULT_GRACE_SECONDS = 3600.0


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block and raise it as it ends.

    Only the main thread receives SIGINT; elsewhere, or when someone else installed a handler,
    the block runs unchanged.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _now() -> datetime.datetime:
    # Optuna stamps trials with naive local time; compare like with like.
    return datetime.datetime.now()


def register_worker(study: optuna.Study) -> str:
    """Sign this process in on a study before it asks for trials; returns the key used."""
    host = socket.gethostname()
    started = _now()
    key = f"{WORKER_PREFIX}{host}:{os.getpid()}:{started.timestamp():.6f}"
    study.set_user_attr(key, {"host": host, "pid": os.getpid(), "started": started.isoformat()})
    return key


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(
    trial: FrozenTrial, workers: list[dict[str, object]], now: datetime.datetime, grace: float
) -> bool:
    started = trial.datetime_start or now
    if (now - started).total_seconds() > grace:
        return True
    host = socket.gethostname()
    tag = trial.user_attrs.get(TRIAL_WORKER_KEY)
    if isinstance(tag, str):
        # Tagged by a ``worker`` process (``HOST-PID``), which keeps its own heartbeat: stale
        # only when it ran here and is gone.
        owner, _, pid = tag.rpartition("-")
        return owner == host and pid.isdigit() and not _alive(int(pid))
    # Any process that signed in before the trial started may own it.
    owners = [w for w in workers if datetime.datetime.fromisoformat(str(w["started"])) <= started]
    if not owners:
        return False
    return all(w["host"] == host and not _alive(int(str(w["pid"]))) for w in owners)


def fail_stale_trials(
    study: optuna.Study, grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> list[int]:
    """Mark RUNNING trials whose process is gone as FAIL; returns their numbers.

    A trial is stale when every process that signed in on the study before it started ran on
    this machine and has exited, or when it has been RUNNING for more than ``grace_seconds``.
    RDB storages also get Optuna's own heartbeat check.

    Args:
        study: the study to clean.
        grace_seconds: the age after which a RUNNING trial is stale whoever asked for it.
    """
    storage = study._storage  # noqa: SLF001  (the study's own storage handle)
    failed: list[int] = []
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        before = {t.number for t in study.get_trials(False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(False, states=(TrialState.RUNNING,))}
        failed.extend(sorted(before - after))

    workers = [
        value
        for key, value in study.user_attrs.items()
        if key.startswith(WORKER_PREFIX) and isinstance(value, dict)
    ]
    now = _now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial, workers, now, grace_seconds):
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
        except (RuntimeError, ValueError):
            continue  # finished by its owner in the meantime
        failed.append(trial.number)
    if failed:
        logger.warning(
            "study %r: marked %d stale RUNNING trial(s) as failed: %s",
            study.study_name,
            len(failed),
            ", ".join(map(str, failed)),
        )
    return failed


def record_target(study: optuna.Study, n_trials: int) -> int:
    """Record how many complete trials this session aims the study at; returns that number."""
    target = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) + n_trials
    study.set_user_attr(TARGET_KEY, target)
    return target


def remaining_trials(study: optuna.Study) -> int:
    """Complete trials still missing from the last recorded target (0 when reached or unset)."""
    target = study.user_attrs.get(TARGET_KEY)
    if not isinstance(target, int):
        return 0
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return max(0, target - done)


def set_constraint(trial: optuna.Trial, name: str, violation: float) -> None:
    """Record a constraint so both Optuna and optuna-dashboard see it.

    Optuna keeps named constraints under ``constraints:NAME``; optuna-dashboard (0.21) shows
    only the list under ``constraints``, so the value is written in both forms.
    """
    trial.set_constraint(name, violation)
    trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [violation])  # noqa: SLF001
