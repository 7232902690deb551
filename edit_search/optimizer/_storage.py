"""Study storages: the default journal file under runs/, or any Optuna storage URL."""

from __future__ import annotations

import importlib.util
import logging
import random
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from edit_search.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "runs/studies.journal"
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
_SCHEMA_ATTEMPTS = 8


def open_storage(
    url: str | None = None, *, heartbeat_interval: int = 30, grace_period: int = 120
) -> BaseStorage:
    """Open a storage.

    Args:
        url: a journal file path (``*.journal`` or ``journal:PATH``), or a database URL
            (``sqlite:///FILE``, ``postgresql://...``, ``mysql://...``). None opens the
            default journal file under runs/.
        heartbeat_interval: seconds between heartbeats of a RUNNING trial (databases only).
        grace_period: seconds without a heartbeat before a RUNNING trial is failed and
            enqueued again once (databases only).

    Raises:
        InputError: the URL does not parse, or its folder cannot be created or written.
    """
    url = url or DEFAULT_STORAGE
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in _RDB_SCHEMES:
        return _open_rdb(url, scheme, heartbeat_interval, grace_period)
    if "://" in url:
        raise InputError(
            f"storage {url!r} has an unknown scheme {scheme!r}; use a journal file path, "
            "sqlite:///FILE, postgresql://USER@HOST/DB or mysql://USER@HOST/DB."
        )
    path = Path(url.removeprefix("journal:"))
    _check_writable_folder(path)
    # An open(O_EXCL)-based lock works on local disks and on NFSv3+, where symlinks may not.
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return JournalStorage(backend)


def _check_writable_folder(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the storage folder {str(folder)!r} ({exc.strerror}); "
            "pass --storage with a writable path."
        ) from None
    probe = folder / f".{path.name}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"the storage folder {str(folder)!r} is not writable ({exc.strerror}); "
            "pass --storage with a writable path."
        ) from None


def _open_rdb(url: str, scheme: str, heartbeat_interval: int, grace_period: int) -> BaseStorage:
    engine_kwargs: dict[str, object] = {}
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL; the postgres extra
        # installs psycopg2.
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    if scheme == "sqlite":
        file = url.split(":///", 1)[-1]
        if file and file != ":memory:":
            _check_writable_folder(Path(file))
        # Wait for a busy database instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=1
                    ),
                )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
                # Processes that open a new SQLite file (or a new PostgreSQL database) at once
                # race to create its tables and version row; the losers find them made on the
                # next try.
                raced = scheme == "sqlite" or isinstance(exc, sqlalchemy.exc.IntegrityError)
                if not raced or attempt == _SCHEMA_ATTEMPTS - 1:
                    raise
                logger.debug("storage %s: schema creation raced, retrying", url)
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises
    except (ImportError, ModuleNotFoundError) as exc:
        raise InputError(
            f"storage {url!r} needs a database driver that is not installed ({exc}); "
            "install it (for PostgreSQL: pip install 'edit-search[postgres]')."
        ) from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or server.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot open storage {url!r}: {first[:200]}") from None


def all_study_names(storage: BaseStorage) -> list[str]:
    """Names of every study in a storage, oldest first."""
    return [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
