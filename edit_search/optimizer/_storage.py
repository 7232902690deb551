"""Study storages: the default journal file under runs/, or any Optuna storage URL."""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import random
import re
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from edit_search.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "runs/studies.journal"
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
_SCHEMA_ATTEMPTS = 8
# Every record Optuna writes to a journal file starts like this.
_JOURNAL_SIGNATURE = b'{"op_code":'


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    heartbeat_interval: int = 30,
    grace_period: int = 120,
) -> BaseStorage:
    """Open a storage.

    Args:
        url: a journal file path (``*.journal`` or ``journal:PATH``), or a database URL
            (``sqlite:///FILE``, ``postgresql://...``, ``mysql://...``). None opens the
            default journal file under runs/.
        create: make the file (and its folder) when it does not exist; False for commands
            that only read, which then refuse a journal or SQLite file that is not there.
        heartbeat_interval: seconds between heartbeats of a RUNNING trial (databases only).
        grace_period: seconds without a heartbeat before a RUNNING trial is failed and
            enqueued again once (databases only).

    Raises:
        InputError: the URL is empty or does not parse, its folder cannot be created or
            written, or (``create=False``) the file does not exist.
    """
    if url is None:
        url = DEFAULT_STORAGE
    if not url.strip():
        raise InputError(
            "--storage is empty; pass a journal file path or a database URL, or leave the "
            f"option out for {DEFAULT_STORAGE}."
        )
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in _RDB_SCHEMES:
        return _open_rdb(url, scheme, heartbeat_interval, grace_period, create)
    if "://" in url:
        raise InputError(
            f"storage {_shown(url)!r} has an unknown scheme {scheme!r}; use a journal file path, "
            "sqlite:///FILE, postgresql://USER@HOST/DB or mysql://USER@HOST/DB."
        )
    path = Path(url.removeprefix("journal:"))
    if path.is_dir():
        raise InputError(
            f"storage {_shown(url)!r} is a folder; pass a file path such as "
            f"{str(path / 'studies.journal')!r}."
        )
    if not create:
        _check_exists(path)
    _check_writable_folder(path)
    # Optuna makes the file on the first record; made now, an opened storage exists for readers.
    if not path.exists():
        path.touch(exist_ok=True)
    # An open(O_EXCL)-based lock works on local disks and on NFSv3+, where symlinks may not.
    lock = JournalFileOpenLock(str(path))
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            head = handle.read(len(_JOURNAL_SIGNATURE))
        if head != _JOURNAL_SIGNATURE:
            raise InputError(
                f"storage {str(path)!r} is not an Optuna journal file (it starts with "
                f"{head[:12]!r}); pass another --storage, or move the file away to start afresh."
            )
        _drop_torn_tail(path, lock)
        _check_last_record(path)
    backend = _JournalFile(str(path), lock_obj=lock)
    try:
        return JournalStorage(backend)
    # json.JSONDecodeError is a ValueError; Optuna asserts on an unknown op_code.
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise InputError(
            f"storage {str(path)!r} is not an Optuna journal file ({type(exc).__name__}: "
            f"{str(exc)[:120]}); pass another --storage, or move the file away to start afresh."
        ) from None


class _JournalFile(JournalFileBackend):
    """Optuna's journal file, with the same format and lock, that fsyncs at most 4 times a second.

    Optuna's backend fsyncs after every record, and a trial writes a dozen records (one per
    parameter and attribute), so syncing dominated a study's bookkeeping. Every record still
    reaches the operating system before the lock is released, so other processes read it at
    once and a killed process loses nothing it wrote; only a power cut can lose the last
    quarter of a second.
    """

    sync_interval = 0.25

    def __init__(self, file_path: str, lock_obj: JournalFileOpenLock) -> None:
        # An absolute path: the process may change folders before the sync at exit.
        super().__init__(os.path.abspath(file_path), lock_obj=lock_obj)
        self._lock_obj = lock_obj
        self._last_sync = time.monotonic()
        self._unsynced = False

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self._lock_obj.acquire()
        try:
            with open(self._file_path, "ab") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                if time.monotonic() - self._last_sync >= self.sync_interval:
                    os.fsync(handle.fileno())
                    self._last_sync = time.monotonic()
                    self._unsynced = False
                    _UNSYNCED.discard(self)
                else:
                    self._unsynced = True
                    _UNSYNCED.add(self)
        finally:
            self._lock_obj.release()

    def sync(self) -> None:
        """Force what this process wrote onto the disk; runs by itself when the process exits."""
        if not self._unsynced:
            return
        try:
            descriptor = os.open(self._file_path, os.O_RDONLY)
        except FileNotFoundError:  # removed since: nothing left to keep
            return
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        self._unsynced = False
        self._last_sync = time.monotonic()


# Journal files with records not yet synced; synced when the process exits.
_UNSYNCED: weakref.WeakSet[_JournalFile] = weakref.WeakSet()


@atexit.register
def _sync_at_exit() -> None:
    for backend in list(_UNSYNCED):
        try:
            backend.sync()
        except OSError as exc:
            logger.warning("could not sync %s: %s", backend._file_path, exc)


def _drop_torn_tail(path: Path, lock: JournalFileOpenLock) -> None:
    """Cut an incomplete last record (a write cut short by a full disk) off a journal file.

    Optuna skips such a record when reading but appends the next one onto it, which makes the
    whole line unreadable; no writer is mid-record while the lock is held.
    """
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
    lock.acquire()
    try:
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(keep)
            logger.warning(
                "%s: dropped an incomplete last record of %d bytes (a write cut short)",
                path,
                len(data) - keep,
            )
    finally:
        lock.release()


def _check_last_record(path: Path) -> None:
    """Refuse a journal whose last complete line is not a record.

    Optuna skips an unreadable last line when reading, but the next write lands after it and
    leaves it in the middle of the file, where it makes every study unreadable.
    """
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - (1 << 16)))
        last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        record = json.loads(last)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise InputError(
            f"the last line of journal {str(path)!r} is not a journal record "
            f"({last[:40]!r}); remove that line, or pass another --storage."
        )


def _serialize_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    SQLite ignores SELECT ... FOR UPDATE, so two processes could both read a WAITING trial
    (an enqueued recipe) and both run it; with BEGIN IMMEDIATE the second waits and then
    sees it RUNNING.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below start them

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks are replaced by hooked ones


def _shown(url: str) -> str:
    """A storage URL as messages show it: any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise InputError(
            f"no storage at {str(path)!r}; run `edit-search run` first or check --storage."
        )


def _check_writable_folder(path: Path) -> None:
    folder = path.parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(
            f"the storage folder {str(folder)!r} cannot be made: {str(blocking)!r} is a file, "
            "not a folder; pass --storage with a path inside a folder."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the storage folder {str(folder)!r} ({exc.strerror}); "
            "pass --storage with a writable path."
        ) from None
    # A private probe file per call: processes starting at once must not delete each other's.
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise InputError(
            f"the storage folder {str(folder)!r} is not writable ({exc.strerror}); "
            "pass --storage with a writable path."
        ) from None


def _open_rdb(
    url: str, scheme: str, heartbeat_interval: int, grace_period: int, create: bool = True
) -> BaseStorage:
    engine_kwargs: dict[str, object] = {}
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL; the postgres extra
        # installs psycopg2.
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    if scheme == "sqlite":
        file = url.split(":///", 1)[1] if ":///" in url else ""
        if file in ("", ":memory:"):
            raise InputError(
                f"storage {_shown(url)!r} is an in-memory database: every trial would be lost "
                "when the command ends; pass sqlite:///FILE or a journal file path."
            )
        if Path(file).is_dir():
            raise InputError(
                f"storage {_shown(url)!r} names a folder; pass a file such as "
                f"sqlite:///{(Path(file) / 'studies.db').as_posix()}."
            )
        if not create:
            _check_exists(Path(file))
        _check_writable_folder(Path(file))
        # Wait for a busy database instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=1
                    ),
                )
                if scheme == "sqlite":
                    _serialize_sqlite_transactions(storage.engine)
                return storage
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
    except (ImportError, ModuleNotFoundError):
        raise InputError(
            f"storage {_shown(url)!r} needs a database driver that is not installed; install it "
            "(PostgreSQL: pip install 'edit-search[postgres]'; MySQL: pip install pymysql)."
        ) from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or server.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot open storage {_shown(url)!r}: {first[:200]}; check the URL "
            "(sqlite:///FILE, postgresql://USER:PASSWORD@HOST:PORT/DB) and that the file is a "
            "database or the server is up."
        ) from None


def all_study_names(storage: BaseStorage) -> list[str]:
    """Names of every study in a storage, oldest first."""
    return [
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    ]
