"""Images as users bring them: every PNG mode, JPEG, alpha-only ink, odd sizes, broken files."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edit_search.data.images import list_images, load_image
from edit_search.errors import InputError


@pytest.fixture
def digit(image_path: Path) -> np.ndarray:
    """The shipped sample 3 as a uint8 array, (28, 28)."""
    return np.asarray(Image.open(image_path).convert("L"), dtype=np.uint8).copy()


def _save(img: Image.Image, name: str, **options: object) -> Path:
    path = Path(name)
    img.save(path, **options)
    return path


def _reversed_palette(digit: np.ndarray) -> Image.Image:
    """A palette image whose index i is the grey 255 - i, so indices run opposite to greys."""
    indexed = Image.frombytes("P", (28, 28), (255 - digit).tobytes())
    indexed.putpalette([255 - i for i in range(256) for _ in range(3)])
    return indexed


def _sixteen_bit(values: np.ndarray) -> Image.Image:
    return Image.frombytes("I;16", (28, 28), values.astype("<u2").tobytes())


@pytest.mark.parametrize(
    "mode", ["L", "LA", "RGB", "RGBA", "P", "reversed-P", "I;16", "I;16-8bit-values"]
)
def test_load_image_png_mode_matches_l_copy_within_one_level(digit: np.ndarray, mode: str) -> None:
    grey = Image.fromarray(digit)
    if mode == "reversed-P":
        img = _reversed_palette(digit)
    elif mode == "I;16":
        img = _sixteen_bit(digit.astype(np.uint32) * 257)
    elif mode == "I;16-8bit-values":
        img = _sixteen_bit(digit)
    else:
        img = grey.convert(mode)
    path = _save(img, "digit_label3.png")
    if mode.startswith("I;16"):
        assert Image.open(path).mode.startswith("I")

    loaded = load_image(path)

    difference = np.abs(loaded.pixels.numpy().astype(int) - digit.astype(int))
    assert difference.max() <= 1
    assert loaded.pixels.dtype == torch.uint8 and loaded.pixels.shape == (28, 28)
    assert loaded.label == 3


def test_load_image_reversed_palette_is_read_by_colour_not_index(digit: np.ndarray) -> None:
    img = _reversed_palette(digit)
    assert np.asarray(img).max() == 255 - digit.min()  # the indices are inverted
    assert torch.equal(load_image(_save(img, "p_label3.png")).pixels, torch.from_numpy(digit))


def test_load_image_sixteen_bit_scaled_says_so(digit: np.ndarray) -> None:
    path = _save(_sixteen_bit(digit.astype(np.uint32) * 257), "wide_label3.png")
    assert load_image(path).notes == ("16-bit values scaled to 8 bits",)


def test_load_image_one_bit_png_is_black_and_white(digit: np.ndarray) -> None:
    path = _save(Image.fromarray(digit > 127).convert("1"), "bits_label3.png")
    loaded = load_image(path)
    assert torch.equal(loaded.pixels, torch.from_numpy((digit > 127).astype(np.uint8) * 255))


def test_load_image_jpeg_matches_its_l_decoding_and_notes_lossy(digit: np.ndarray) -> None:
    path = _save(Image.fromarray(digit).convert("RGB"), "photo_label3.jpg", quality=95)
    reference = np.asarray(Image.open(path).convert("L"), dtype=int)
    loaded = load_image(path)
    assert np.abs(loaded.pixels.numpy().astype(int) - reference).max() <= 1
    assert any("JPEG is lossy" in note for note in loaded.notes)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_load_image_ink_only_in_alpha_uses_alpha_with_a_note(digit: np.ndarray, mode: str) -> None:
    channels = np.zeros((28, 28, len(mode)), dtype=np.uint8)
    channels[..., -1] = digit  # black colour everywhere, the digit drawn in alpha
    path = _save(Image.fromarray(channels, mode), "alpha_label3.png")
    loaded = load_image(path)
    assert torch.equal(loaded.pixels, torch.from_numpy(digit))
    assert any("alpha channel" in note for note in loaded.notes)


def test_load_image_ink_of_zero_and_one_is_scaled_with_a_note(digit: np.ndarray) -> None:
    mask = (digit > 127).astype(np.uint8)  # values 0 and 1 only
    loaded = load_image(_save(Image.fromarray(mask), "mask_label3.png"))
    assert torch.equal(loaded.pixels, torch.from_numpy(mask * 255))
    assert loaded.notes == ("ink values are only 0 and 1: scaled to 0 and 255",)


@pytest.mark.parametrize(("width", "height"), [(56, 56), (28, 30), (27, 28)])
def test_load_image_other_size_refused_naming_it(width: int, height: int) -> None:
    path = _save(Image.new("L", (width, height), 0), "big_label3.png")
    with pytest.raises(InputError, match=rf"is {width}x{height} pixels; .* resize it first"):
        load_image(path)


def test_load_image_inverted_refused_then_inverted_with_flag(digit: np.ndarray) -> None:
    path = _save(Image.fromarray(255 - digit), "paper_label3.png")
    with pytest.raises(InputError, match="dark digit on a light background .* pass --invert"):
        load_image(path)
    loaded = load_image(path, invert=True)
    assert torch.equal(loaded.pixels, torch.from_numpy(digit))
    assert any("inverted" in note for note in loaded.notes)


@pytest.mark.parametrize("value", [0, 255])
def test_load_image_blank_refused(value: int) -> None:
    path = _save(Image.new("L", (28, 28), value), "blank_label3.png")
    with pytest.raises(InputError, match=rf"is blank \(every pixel is {value}\)"):
        load_image(path)


def test_load_image_truncated_file_refused(image_path: Path) -> None:
    path = Path("cut_label3.png")
    path.write_bytes(image_path.read_bytes()[:120])
    with pytest.raises(InputError, match="cannot read 'cut_label3.png' as an image"):
        load_image(path)


def test_load_image_corrupt_pixel_data_refused(digit: np.ndarray) -> None:
    path = _save(Image.fromarray(digit), "bad_label3.png")
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 20] = bytes(20)  # zero the compressed pixel stream
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="cannot read 'bad_label3.png' as an image"):
        load_image(path)


def test_load_image_text_file_refused() -> None:
    path = Path("notes_label3.png")
    path.write_text("not a picture\n")
    with pytest.raises(InputError, match="cannot identify image file"):
        load_image(path)


def test_load_image_missing_file_refused() -> None:
    with pytest.raises(InputError, match="'nowhere_label3.png' does not exist"):
        load_image("nowhere_label3.png")


def test_load_image_directory_refused() -> None:
    Path("folder_label3.png").mkdir()
    with pytest.raises(InputError, match="is a directory; .* --images DIR"):
        load_image("folder_label3.png")


def test_list_images_folder_without_images_refused() -> None:
    Path("empty").mkdir()
    (Path("empty") / "readme.txt").write_text("no digits here")
    with pytest.raises(InputError, match="no image files in 'empty'"):
        list_images("empty")


@pytest.mark.parametrize(
    ("name", "label", "message"),
    [
        ("digit.png", None, "no label for 'digit.png'"),
        ("2_label12.png", None, "label 12 of '2_label12.png' is outside the model's classes"),
        ("digit.png", 10, "label 10 of 'digit.png' is outside the model's classes 0-9"),
        ("2_label3.png", 5, "--label 5 contradicts the label 3"),
    ],
)
def test_load_image_bad_label_refused_before_reading(
    digit: np.ndarray, name: str, label: int | None, message: str
) -> None:
    path = _save(Image.fromarray(digit), name)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_image(path, label=label)


def test_load_image_enormous_declared_size_refused_without_decoding() -> None:
    path = _save(Image.new("1", (20000, 20000)), "huge_label3.png")
    with pytest.raises(
        InputError, match="'huge_label3.png' (declares an enormous size|is 20000x)"
    ):
        load_image(path)
