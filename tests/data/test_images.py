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
    ("name", "label"),
    [
        ("2_label3.png", 3),
        ("label3.png", None),
        ("a_label12.png", 12),
        ("x_LABEL3.PNG", 3),
        ("x_Label7.png", 7),
        ("x_label3_label3.png", 3),
        ("x_label3_v2.png", None),
    ],
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


@pytest.mark.parametrize(
    "name", ["x_label3_label5.png", "x_label3_LABEL5.png", "a_label1_b_label2.png"]
)
def test_label_from_name_two_different_labels_refused_as_ambiguous(name: str) -> None:
    with pytest.raises(InputError) as refused:
        label_from_name(Path(name))
    message = str(refused.value)
    assert f"the file name {name!r} carries more than one label" in message
    assert "\n" not in message


def test_load_image_upper_case_label_and_suffix_read(tmp_path: Path) -> None:
    path = tmp_path / "x_LABEL3.PNG"
    Image.fromarray(_digit()).save(path, format="PNG")
    assert load_image(path).label == 3


def test_load_image_random_noise_not_called_inverted(tmp_path: Path) -> None:
    for seed in range(20):
        noise = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
        noise[0] = 200  # a bright border on its own does not make a digit inverted
        path = tmp_path / f"noise{seed}_label3.png"
        Image.fromarray(noise).save(path)
        assert torch.equal(load_image(path).pixels, torch.from_numpy(noise))


def test_load_image_every_shipped_digit_inverted_is_refused(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "data"
    files = sorted(shipped.glob("*/*_label*.png"))
    assert len(files) >= 60
    for file in files:
        inverted = 255 - np.asarray(Image.open(file).convert("L"), dtype=np.uint8)
        path = tmp_path / file.name
        Image.fromarray(inverted).save(path)
        with pytest.raises(InputError, match="dark digit on a light background"):
            load_image(path)
