"""Shared fixtures: the shipped model, the shipped challenge images, isolated storages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edit_search.data.checkpoint import load_model
from edit_search.data.model import Classifier

ROOT = Path(__file__).resolve().parents[1]
CHALLENGE = ROOT / "data" / "challenge"


@pytest.fixture(scope="session")
def model() -> Classifier:
    """The shipped SmallCNN on the CPU."""
    return load_model(device="cpu")


@pytest.fixture(scope="session")
def challenge_dir() -> Path:
    return CHALLENGE


@pytest.fixture
def image_path() -> Path:
    """The default sample: a 3 the shipped model gets wrong."""
    return CHALLENGE / "2_label3.png"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so runs/ never leaks between tests."""
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(min(2, torch.get_num_threads()))
