from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edit_search.data.images import label_from_name, load_image, resolve_label, save_png
from edit_search.errors import InputError


def _digit() -> np.ndarray:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[5:20, 12:15] = np.arange(15 * 3, dtype=np.uint8).reshape(15, 3) * 5 + 30
    return pixels


def test_load_image_png_equals_uint8_over_255_exactly(tmp_path: Path) -> None:
    pixels = _digit()
    path = tmp_path / "0_label1.png"
    Image.fromarray(pixels).save(path)
    image = load_image(path)
    assert image.label == 1
    assert torch.equal(image.pixels, torch.from_numpy(pixels))
    assert torch.equal(image.image[0, 0], torch.from_numpy(pixels).float() / 255)


def test_load_image_shipped_challenge_is_28x28_uint8(challenge_dir: Path) -> None:
    image = load_image(challenge_dir / "2_label3.png")
    assert image.pixels.dtype == torch.uint8 and image.pixels.shape == (28, 28)
    assert image.label == 3 and image.notes == ()


def test_save_png_round_trips_pixels(tmp_path: Path) -> None:
    pixels = torch.from_numpy(_digit())
    save_png(pixels, tmp_path / "x_label4.png")
    assert torch.equal(load_image(tmp_path / "x_label4.png").pixels, pixels)


@pytest.mark.parametrize(
    ("name", "label"), [("2_label3.png", 3), ("label3.png", None), ("a_label12.png", 12)]
)
def test_label_from_name(name: str, label: int | None) -> None:
    assert label_from_name(Path(name)) == label


def test_resolve_label_contradicting_flag_raises() -> None:
    with pytest.raises(InputError, match="contradicts the label 3"):
        resolve_label(Path("2_label3.png"), 5)


def test_resolve_label_out_of_range_raises() -> None:
    with pytest.raises(InputError, match="outside the model's classes 0-9"):
        resolve_label(Path("2_label12.png"), None)


def test_resolve_label_missing_raises() -> None:
    with pytest.raises(InputError, match="no label"):
        resolve_label(Path("digit.png"), None)


def test_save_png_gives_the_file_the_usual_permissions(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        save_png(torch.from_numpy(_digit()), tmp_path / "x_label4.png")
    finally:
        os.umask(umask)
    assert (tmp_path / "x_label4.png").stat().st_mode & 0o777 == 0o644
