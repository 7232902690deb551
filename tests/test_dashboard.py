"""optuna-dashboard on the default storage: objectives named, the constraint visible."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edit_search.cli import main

DASHBOARD = str(Path(sys.executable).parent / "optuna-dashboard")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_default_storage_shows_objective_names_and_constraint(
    image_path: Path,
) -> None:
    run = CliRunner().invoke(
        main,
        ["run", "--image", str(image_path), "--trials", "8", "--methods", "saliency"],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output
    journal = Path("runs/studies.journal")
    assert journal.is_file()

    port = _free_port()
    server = subprocess.Popen(
        [DASHBOARD, str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)

        summaries = _get(f"{base}/api/studies")["study_summaries"]
        assert len(summaries) == 1
        study = _get(f"{base}/api/studies/{summaries[0]['study_id']}")
    finally:
        server.terminate()
        server.communicate(timeout=30)

    assert study["objective_names"] == ["margin", "preserved"]
    assert len(study["directions"]) == 2
    trials = study["trials"]
    assert len(trials) == 8
    for trial in trials:
        preserved = trial["values"][1]
        assert trial["constraints"] == [pytest.approx(0.6 - preserved)]
        assert "recipe" in {a["key"] for a in trial["user_attrs"]}
    assert study["best_trials"], "the Pareto front of feasible trials"
