"""Workers sharing studies through a real PostgreSQL server.

The server's URL comes from ``EDIT_SEARCH_TEST_POSTGRES`` (``postgresql://USER@HOST:PORT/DB``);
``.ci/run`` starts one on 127.0.0.1 and sets it. Each test works in a database of its own,
created on that server and dropped afterwards, so reruns never see old studies.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edit_search.optimizer import open_storage
from edit_search.optimizer._workers import WORKER_KEY

URL = os.environ.get("EDIT_SEARCH_TEST_POSTGRES")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not URL,
        reason="EDIT_SEARCH_TEST_POSTGRES is not set; start PostgreSQL and set it to "
        "postgresql://USER@HOST:PORT/DB (.ci/run does both)",
    ),
]

# The process helpers of the worker command's tests: the same workers, another storage.
_spec = importlib.util.spec_from_file_location(
    "worker_helpers", Path(__file__).parents[1] / "cli" / "test_worker.py"
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def _admin(sql: str) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    connection = psycopg2.connect(URL)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test server; its URL."""
    assert URL is not None
    name = f"edit_search_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _best(records: list[dict]) -> dict[str, float]:
    return {r["image"]: r["preserved"] for r in records}


def test_postgres_four_workers_complete_every_study_exactly_as_well_as_one(
    challenge_dir: Path, database: str
) -> None:
    folder = helpers._folder(challenge_dir)
    records, told = helpers.run_many(folder, database, workers=4)
    storage = open_storage(database)
    assert helpers.check_studies(storage, records) == told
    workers = {
        t.user_attrs[WORKER_KEY]
        for r in records
        for t in optuna.load_study(study_name=r["study"], storage=storage).trials
        if t.state == TrialState.COMPLETE
    }
    assert len(workers) > 1

    # The same folder with one worker, on a journal file of its own.
    alone, _ = helpers.run_many(folder, "runs/alone.journal", workers=1)
    assert all(r["edited_prediction"] == r["label"] for r in records + alone)
    many, one = _best(records), _best(alone)
    # Same trial budget, same warm start: on average within one percentage point of preserved.
    assert sum(many.values()) / len(many) >= sum(one.values()) / len(one) - 0.01


def test_postgres_worker_killed_mid_run_loses_nothing(challenge_dir: Path, database: str) -> None:
    folder = helpers._folder(challenge_dir)
    beat = ("--heartbeat-interval", "1", "--grace-period", "3")
    held = helpers.kill_mid_run(folder, database, beat)
    records, _ = helpers._finish(helpers._start(folder, database, "rescuer", *beat))
    storage = open_storage(database)
    helpers.check_studies(storage, records)
    study = optuna.load_study(study_name=held, storage=storage)
    victims = [t for t in study.trials if t.user_attrs.get(WORKER_KEY) == "victim"]
    failed = [t for t in victims if t.state == TrialState.FAIL]
    assert failed and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in victims)
    # Optuna's heartbeat callback enqueued each stale trial again, and it was run to the end.
    retried = [
        t for t in study.trials if t.system_attrs.get("failed_trial") in {f.number for f in failed}
    ]
    assert retried and all(t.state == TrialState.COMPLETE for t in retried)
