import gzip
import time

import numpy as np
import pytest
import torch

from litediff_core.data import load_dataset
from litediff_core.data.datasets import to_float, to_uint8
from litediff_core.errors import DataError


def _write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, h, w))
                + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


def test_fashion_mnist_found_locally(fashion_mnist):
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert train.uint8.shape == (60000, 1, 28, 28) and test.uint8.shape == (10000, 1, 28, 28)
    assert train.uint8.dtype == torch.uint8 and len(train.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x = train[0]
    assert x.shape == (1, 28, 28) and x.min() >= -1 and x.max() <= 1


def test_litediff_data_takes_precedence(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    _write_idx(tmp_path / "fashion-mnist", "t10k", images, labels)
    _write_idx(tmp_path / "fashion-mnist", "train", images, labels)
    monkeypatch.setenv("LITEDIFF_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 7 and torch.equal(ds.uint8[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist()


def test_corrupt_idx_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix in ("t10k", "train"):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(b"nope")
    monkeypatch.setenv("LITEDIFF_DATA", str(tmp_path))
    with pytest.raises(DataError, match="cannot read|not an IDX"):
        load_dataset("fashion-mnist", "test")


def test_missing_dataset_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEDIFF_DATA", str(tmp_path))
    t0 = time.time()
    with pytest.raises(DataError, match="LITEDIFF_DATA"):
        load_dataset("mnist", "train")
    assert time.time() - t0 < 60


def test_image_folder_and_bad_names(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path}", resolution=16, channels=3)
    assert ds.uint8.shape == (3, 3, 16, 16)
    assert sorted(ds.uint8[:, 0, 8, 8].tolist()) == [0, 60, 120]
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_uint8_float_round_trip():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).min() == -1 and to_float(x).max() == 1
