"""Opening storages: bad URLs and paths refused in one line, damaged files handled."""

import importlib.util
import os
from pathlib import Path

import optuna
import pytest

from edit_search.errors import InputError
from edit_search.optimizer import DEFAULT_STORAGE, all_study_names, open_storage


def _study_with_trials(storage: optuna.storages.BaseStorage, n: int) -> None:
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=n)


def test_open_storage_missing_runs_folder_is_created() -> None:
    assert not Path("runs").exists()
    storage = open_storage()
    assert Path(DEFAULT_STORAGE).parent.is_dir()
    assert all_study_names(storage) == []


@pytest.mark.parametrize("url", ["notes.txt/studies.journal", "sqlite:///notes.txt/studies.db"])
def test_open_storage_folder_is_a_regular_file_refused(url: str) -> None:
    # Running as root, a chmod-ed folder stays writable; a path through a regular file cannot
    # be created by anyone.
    Path("notes.txt").write_text("keep me\n")
    with pytest.raises(InputError, match="'notes.txt' is a file, not a folder"):
        open_storage(url)
    assert Path("notes.txt").read_text() == "keep me\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_open_storage_folder_nobody_can_write_refused() -> None:
    # /proc takes no new files, not even from root: a real unwritable folder on any Linux.
    with pytest.raises(InputError, match="the storage folder '/proc' is not writable"):
        open_storage("/proc/studies.journal")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_open_storage_read_only_folder_refused() -> None:
    Path("locked").mkdir(mode=0o555)
    with pytest.raises(InputError, match="is not writable"):
        open_storage("locked/studies.journal")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("somewhere", "storage 'somewhere' is a folder; pass a file path such as"),
        ("sqlite:///somewhere", "names a folder; pass a file such as sqlite:///somewhere/"),
    ],
)
def test_open_storage_folder_given_as_file_refused(url: str, message: str) -> None:
    Path("somewhere").mkdir()
    with pytest.raises(InputError, match=message):
        open_storage(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost/0", "has an unknown scheme 'redis'"),
        ("postgresql://me@localhost:notaport/db", "cannot open storage .*check the URL"),
        ("sqlite://", "in-memory database: every trial would be lost"),
        ("sqlite:///:memory:", "in-memory database: every trial would be lost"),
    ],
)
def test_open_storage_url_that_does_not_work_refused(url: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        open_storage(url)


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("pymysql", "MySQLdb")), reason="driver installed"
)
def test_open_storage_missing_driver_names_what_to_install() -> None:
    with pytest.raises(InputError, match="needs a database driver .* pip install pymysql"):
        open_storage("mysql://me@localhost/db")


def test_open_storage_message_hides_password() -> None:
    with pytest.raises(InputError) as refused:
        open_storage("postgresql://me:hunter2@localhost:notaport/db")
    assert "hunter2" not in str(refused.value) and "me:***@" in str(refused.value)


def test_open_storage_file_that_is_not_a_journal_refused() -> None:
    Path("studies.journal").write_text("this is not a journal\n")
    with pytest.raises(InputError, match="'studies.journal' is not an Optuna journal file"):
        open_storage("studies.journal")
    assert Path("studies.journal").read_text() == "this is not a journal\n"


def test_open_storage_file_that_is_not_a_database_refused() -> None:
    Path("studies.db").write_text("plain text")
    with pytest.raises(InputError, match="file is not a database"):
        open_storage("sqlite:///studies.db")


def test_open_storage_journal_with_torn_last_record_keeps_every_whole_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _study_with_trials(open_storage("studies.journal"), 3)
    whole = Path("studies.journal").read_bytes()
    with open("studies.journal", "ab") as handle:
        handle.write(b'{"op_code": 6, "worker_id": "w", "tri')  # a write cut short

    storage = open_storage("studies.journal")
    assert Path("studies.journal").read_bytes() == whole
    assert "dropped an incomplete last record" in caplog.text

    # New trials append cleanly and every earlier one is still there.
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    reread = optuna.load_study(study_name="s", storage=open_storage("studies.journal"))
    assert [t.state for t in reread.trials] == [optuna.trial.TrialState.COMPLETE] * 5


def test_open_storage_sqlite_created_and_reopened() -> None:
    _study_with_trials(open_storage("sqlite:///runs/studies.db"), 2)
    assert all_study_names(open_storage("sqlite:///runs/studies.db")) == ["s"]


def test_open_storage_many_openers_at_once_none_fails_the_folder_check(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from edit_search.optimizer._storage import _check_writable_folder

    target = tmp_path / "shared" / "studies.journal"

    def check(_: int) -> None:
        for _ in range(50):
            _check_writable_folder(target)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(8)))
    assert [p.name for p in target.parent.iterdir()] == []


def test_open_storage_journal_records_are_readable_at_once_by_another_opener(tmp_path) -> None:
    import optuna

    from edit_search.optimizer import open_storage

    path = str(tmp_path / "studies.journal")
    writer = optuna.create_study(study_name="s", storage=open_storage(path))
    for value in range(5):
        writer.add_trial(optuna.trial.create_trial(value=float(value)))
    reader = optuna.load_study(study_name="s", storage=open_storage(path))
    assert [t.value for t in reader.trials] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "url", ["new/place/studies.journal", "journal:new/studies.journal", "sqlite:///new/s.db"]
)
def test_open_storage_create_false_missing_file_refused_creating_nothing(url: str) -> None:
    with pytest.raises(InputError) as refused:
        open_storage(url, create=False)
    message = str(refused.value)
    assert message.startswith("no storage at 'new/")
    assert "run `edit-search run` first or check --storage" in message
    assert not Path("new").exists()


@pytest.mark.parametrize("url", ["studies.journal", "sqlite:///studies.db"])
def test_open_storage_create_false_existing_file_opened(url: str) -> None:
    _study_with_trials(open_storage(url), 2)
    assert all_study_names(open_storage(url, create=False)) == ["s"]


@pytest.mark.parametrize("url", ["", "  "])
def test_open_storage_empty_url_refused_not_the_default(url: str) -> None:
    with pytest.raises(InputError, match="--storage is empty"):
        open_storage(url)
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["studies"],
        ["pareto", "s"],
        ["export", "s"],
        ["resume", "s", "--trials", "1"],
    ],
)
@pytest.mark.parametrize("url", ["new/place/studies.journal", "sqlite:///new/s.db"])
def test_reading_commands_missing_storage_exit_2_creating_nothing(
    args: list[str], url: str
) -> None:
    from click.testing import CliRunner

    from edit_search.cli import main

    result = CliRunner().invoke(main, [*args, "--storage", url], catch_exceptions=False)
    assert result.exit_code == 2
    assert "no storage at 'new/" in result.stderr.strip().splitlines()[-1]
    assert not Path("new").exists()


def test_reading_command_empty_storage_exit_2() -> None:
    from click.testing import CliRunner

    from edit_search.cli import main

    result = CliRunner().invoke(main, ["studies", "--storage", ""], catch_exceptions=False)
    assert result.exit_code == 2 and "--storage is empty" in result.stderr
    assert not Path("runs").exists()


def test_journal_sync_at_exit_after_a_change_of_folder_creates_no_file(
    tmp_path, monkeypatch
) -> None:
    import optuna

    from edit_search.optimizer import open_storage
    from edit_search.optimizer._storage import _sync_at_exit

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    study = optuna.create_study(study_name="s", storage=open_storage("studies.journal"))
    study.add_trial(optuna.trial.create_trial(value=1.0))
    monkeypatch.chdir(tmp_path / "b")
    _sync_at_exit()
    assert list((tmp_path / "b").iterdir()) == []
    assert (tmp_path / "a" / "studies.journal").stat().st_size > 0


def test_open_storage_new_journal_can_be_opened_for_reading_at_once() -> None:
    open_storage("fresh/studies.journal")
    assert all_study_names(open_storage("fresh/studies.journal", create=False)) == []


@pytest.mark.parametrize("tail", ['not json at all\n', '{"op_code": 99}\n'])
def test_open_storage_journal_with_a_bad_last_record_is_refused_unchanged(
    tmp_path, tail: str
) -> None:
    import optuna

    from edit_search.errors import InputError
    from edit_search.optimizer import open_storage

    path = tmp_path / "studies.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(path)))
    path.write_bytes(path.read_bytes() + tail.encode())
    before = path.read_bytes()
    with pytest.raises(InputError, match="journal"):
        open_storage(str(path))
    assert path.read_bytes() == before
