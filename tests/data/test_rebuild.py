"""Tests of the shipped checkpoint and images, and of the command that rebuilds them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edit_search.data.model import Classifier, Transform
from edit_search.data.rebuild import (
    CHALLENGE_DIR,
    DEFAULT_CHECKPOINT,
    DEFAULT_METADATA,
    MISCLASSIFIED_DIR,
    WEIGHTS_DIR,
    evaluate,
    held_out_split,
    load_shipped_net,
    rebuild,
    save_state_dict,
)
from edit_search.data.training import TrainingRecipe, train_smallcnn

REPO = Path(__file__).resolve().parents[2]


def _shipped_files(root: Path) -> list[Path]:
    weights = [root / WEIGHTS_DIR / n for n in ("smallcnn.pt", "smallcnn.json", "MODEL_CARD.md")]
    images = sorted((root / CHALLENGE_DIR).glob("*.png"))
    images += sorted((root / MISCLASSIFIED_DIR).glob("*.png"))
    return [*weights, root / "data" / "README.md", *images]


def _read_png(path: Path) -> tuple[torch.Tensor, int]:
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (28, 28)
        pixels = torch.from_numpy(np.array(image))  # (28, 28) uint8
    return pixels, int(path.stem.rsplit("_label", 1)[1])


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    return held_out_split()


@pytest.mark.slow
def test_rebuild_into_tmp_folder_matches_committed_bytes(tmp_path: Path) -> None:
    report = rebuild(tmp_path)

    committed = [p.relative_to(REPO) for p in _shipped_files(REPO)]
    rebuilt = [p.relative_to(tmp_path) for p in _shipped_files(tmp_path)]
    assert rebuilt == committed
    for relative in committed:
        assert (tmp_path / relative).read_bytes() == (REPO / relative).read_bytes(), (
            f"{relative} differs from the committed file (torch {torch.__version__} now, "
            f"{report['recipe']['torch']} recorded)"
        )


def test_shipped_checkpoint_held_out_accuracy_matches_metadata(held_out) -> None:
    metadata = json.loads(DEFAULT_METADATA.read_text())

    held = evaluate(load_shipped_net(), *held_out)

    correct = int((held.predicted == held.labels).sum())
    assert correct == metadata["held_out_correct"]
    assert round(correct / len(held.labels), 4) == metadata["held_out_accuracy"]
    assert 0.70 <= metadata["held_out_accuracy"] <= 0.75


def test_shipped_challenge_images_misclassified_with_file_label() -> None:
    paths = sorted((REPO / CHALLENGE_DIR).glob("*.png"))
    images, labels = zip(*(_read_png(p) for p in paths), strict=True)
    model = Classifier(load_shipped_net(), Transform())

    with torch.no_grad():
        logits = model(torch.stack(images).unsqueeze(1).float() / 255)  # (5, 10)

    assert list(labels) == [5, 3, 3, 7, 2]
    assert (logits.argmax(1) != torch.tensor(labels)).all()


def test_shipped_misclassified_images_wrong_and_cover_every_class(held_out) -> None:
    paths = sorted((REPO / MISCLASSIFIED_DIR).glob("*.png"))
    images, labels = zip(*(_read_png(p) for p in paths), strict=True)
    model = Classifier(load_shipped_net(), Transform())

    with torch.no_grad():
        logits = model(torch.stack(images).unsqueeze(1).float() / 255)  # (N, 10)

    assert len(paths) >= 40
    assert set(labels) == set(range(10))
    assert (logits.argmax(1) != torch.tensor(labels)).all()


def test_save_state_dict_same_tensors_identical_loadable_bytes(tmp_path: Path) -> None:
    state = torch.load(DEFAULT_CHECKPOINT, weights_only=True)

    save_state_dict(state, tmp_path / "a.pt")
    save_state_dict(state, tmp_path / "b.pt")

    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert (tmp_path / "a.pt").read_bytes() == DEFAULT_CHECKPOINT.read_bytes()
    loaded = torch.load(tmp_path / "a.pt", weights_only=True, mmap=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_train_smallcnn_restores_threads_and_deterministic_flag(held_out) -> None:
    images, labels = held_out
    threads = torch.get_num_threads()
    recipe = TrainingRecipe(seed=1, steps=3, threads=threads + 1)

    first = train_smallcnn(images[:100], labels[:100], recipe)
    second = train_smallcnn(images[:100], labels[:100], recipe)

    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )
