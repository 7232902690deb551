"""Image files: reading a digit exactly as ``uint8 / 255``, its label, and writing edits."""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edit_search.errors import InputError
from edit_search.search_spaces._edits import quantize  # noqa: F401  (re-exported)

IMAGE_SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The label is ``_labelN`` ending the stem, in any case; another ``_labelN`` with another N
# anywhere in the name makes it ambiguous.
_LABEL_PATTERN = re.compile(r"_label(\d+)$", re.IGNORECASE)
_ANY_LABEL_PATTERN = re.compile(r"_label(\d+)(?!\d)", re.IGNORECASE)
# A dark digit on light paper has an even, light border and a clearly darker centre. Measured
# on the 65 shipped digits, inverted: border spread (std) at most 21 levels, centre at least 41
# levels darker than the border; random noise: spread about 75, centre as light as the border.
_INVERTED_BORDER_SPREAD = 48
_INVERTED_CENTRE_GAP = 24


@dataclass(frozen=True)
class LoadedImage:
    """A digit read from a file.

    Attributes:
        path: where it was read from.
        pixels: the uint8 grid, shape (28, 28).
        label: the true class.
        notes: what the loader changed, for the user to see (empty when nothing).
    """

    path: Path
    pixels: torch.Tensor
    label: int
    notes: tuple[str, ...] = ()

    @property
    def image(self) -> torch.Tensor:
        """The image as floats exactly equal to ``uint8 / 255``, shape (1, 1, 28, 28)."""
        return to_float(self.pixels)[None, None]


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels of any shape -> float32 in [0, 1], exactly ``pixels / 255``."""
    return pixels.to(torch.float32) / 255.0


def label_from_name(path: Path) -> int | None:
    """The label in a file name like ``2_label3.png`` (any case), or None when it has none.

    Raises:
        InputError: the name carries two different labels, as ``x_label3_label5.png``.
    """
    found = [int(m.group(1)) for m in _ANY_LABEL_PATTERN.finditer(path.stem)]
    if len(set(found)) > 1:
        shown = ", ".join(str(n) for n in found)
        raise InputError(
            f"the file name {path.name!r} carries more than one label ({shown}); rename it "
            "with a single _labelN at the end of its name, such as '2_label3.png'."
        )
    match = _LABEL_PATTERN.search(path.stem)
    return int(match.group(1)) if match else None


def resolve_label(path: Path, label: int | None, num_classes: int = 10) -> int:
    """The true label of an image from ``--label`` and its file name, checked for agreement.

    Raises:
        InputError: no label anywhere, the two disagree, or it is outside the model's classes.
    """
    from_name = label_from_name(path)
    if label is not None and from_name is not None and label != from_name:
        raise InputError(
            f"--label {label} contradicts the label {from_name} in the file name {path.name!r}; "
            "rename the file or drop --label."
        )
    chosen = label if label is not None else from_name
    if chosen is None:
        raise InputError(
            f"no label for {path.name!r}: name the file like '2_label3.png' or pass --label."
        )
    if not 0 <= chosen < num_classes:
        raise InputError(
            f"label {chosen} of {path.name!r} is outside the model's classes 0-{num_classes - 1}; "
            "check the file name or --label."
        )
    return chosen


def _grey_pixels(img: Image.Image, path: Path) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode -> a uint8 greyscale array, and notes on what was changed."""
    notes: list[str] = []
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(img, dtype=np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise InputError(
                f"{path.name!r} holds 32-bit pixels from {wide.min()} to {wide.max()}; "
                "save it as an 8-bit greyscale PNG."
            )
        # A 16-bit file whose values all fit in 8 bits holds 8-bit values in wide storage.
        if wide.max() <= 255:
            if img.mode.startswith("I;16"):
                notes.append("16-bit file with values 0-255: read as 8-bit values")
            return wide.astype(np.uint8), notes
        notes.append("16-bit values scaled to 8 bits")
        return np.round(wide * (255.0 / 65535.0)).astype(np.uint8), notes
    if img.mode == "F":
        raise InputError(
            f"{path.name!r} holds floating-point pixels (mode F); "
            "save it as an 8-bit greyscale PNG."
        )
    has_alpha = img.mode in ("LA", "RGBA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.uint8)
        grey = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.uint8)
        if grey.max() == 0 and alpha.min() < 255:
            notes.append("the digit is drawn only in the alpha channel: alpha used as ink")
            return alpha.copy(), notes
        if alpha.min() < 255:
            notes.append("transparent pixels composited onto black")
            grey = np.round(grey.astype(np.float64) * alpha / 255.0).astype(np.uint8)
        return grey, notes
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8).copy(), notes
    if img.mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8).copy(), notes
    if img.mode not in ("P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"mode {img.mode} converted to greyscale")
    return np.asarray(img.convert("RGB").convert("L"), dtype=np.uint8).copy(), notes


def load_image(
    path: str | Path,
    *,
    label: int | None = None,
    num_classes: int = 10,
    invert: bool = False,
) -> LoadedImage:
    """Read a 28x28 digit (light ink on black) and its label.

    Args:
        path: an image file; PNG is the native format, other formats are converted.
        label: the true class; when None it is read from a name like ``2_label3.png``.
        num_classes: how many classes the model has, to check the label.
        invert: the file holds a dark digit on a light background; invert it.

    Raises:
        InputError: the file is missing or unreadable, not 28x28, blank, inverted without
            ``invert``, or its label is missing or invalid.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory; pass an image file or use --images DIR.")
    chosen = resolve_label(path, label, num_classes)

    try:
        with Image.open(path) as img:
            # The size is in the header: refuse a wrong one before decoding any pixels.
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                width, height = img.size
                raise InputError(
                    f"{path.name!r} is {width}x{height} pixels; edit-search works on 28x28 "
                    "MNIST digits, resize it first."
                )
            img.load()
            grey, notes = _grey_pixels(img, path)
            if img.format == "JPEG":
                notes.append("JPEG is lossy: pixels may differ slightly from the drawn digit")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(
            f"cannot read {path.name!r} as an image ({_first_line(exc)}); "
            "pass a PNG of a 28x28 digit."
        ) from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{path.name!r} declares an enormous size; pass a PNG of a 28x28 digit."
        ) from None

    if grey.max() == grey.min():
        raise InputError(
            f"{path.name!r} is blank (every pixel is {int(grey.max())}); pass an image of a digit."
        )
    if grey.max() == 1:
        # Ink stored as 0/1 (a binary mask saved as 8-bit) would search an all-black digit.
        grey = grey * np.uint8(255)
        notes.append("ink values are only 0 and 1: scaled to 0 and 255")
    if invert:
        grey = 255 - grey
        notes.append("inverted: dark digit on a light background turned into light on dark")
    elif _looks_inverted(grey):
        raise InputError(
            f"{path.name!r} looks like a dark digit on a light background (border mean "
            f"{_border_mean(grey):.0f}/255, centre mean {_centre_mean(grey):.0f}/255); MNIST "
            "digits are light on black: pass --invert."
        )
    return LoadedImage(path, torch.from_numpy(grey.copy()), chosen, tuple(notes))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]).astype(np.float64)


def _border_mean(grey: np.ndarray) -> float:
    return float(_border(grey).mean())


def _centre_mean(grey: np.ndarray) -> float:
    return float(grey[7:21, 7:21].mean())  # the central 14x14, where a digit's strokes are


def _looks_inverted(grey: np.ndarray) -> bool:
    """An even, light border around a clearly darker centre; noise is let through."""
    border = _border(grey)
    mean = float(border.mean())
    return (
        mean > 127
        and float(border.std()) <= _INVERTED_BORDER_SPREAD
        and _centre_mean(grey) < mean - _INVERTED_CENTRE_GAP
    )


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside a folder, sorted by name.

    Raises:
        InputError: the folder is missing or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a directory; pass a folder of images.")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(
            f"no image files in {str(folder)!r} (looked for {', '.join(IMAGE_SUFFIXES)})."
        )
    return found


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(pixels: torch.Tensor) -> bytes:
    """uint8 pixels (28, 28) -> the bytes of an 8-bit greyscale PNG, with no metadata."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.cpu().numpy().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(pixels: torch.Tensor, path: str | Path) -> None:
    """Write uint8 pixels (28, 28) as an 8-bit greyscale PNG, atomically."""
    write_atomic(Path(path), png_bytes(pixels))
