"""The Fashion-MNIST reader and writer, on small idx files the test writes itself."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dali_snapmix.data import ImageSource
from dali_snapmix.data.fashion_mnist import CLASS_NAMES, ensure_fashion_mnist, read_idx

SEED = int.from_bytes(os.urandom(4), "little")


def idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


@pytest.fixture
def fake_set(tmp_path):
    """3 train images per class (gzipped files), 1 test image per class (raw files)."""
    rng = np.random.default_rng(SEED)
    d = tmp_path / "fm"
    d.mkdir()
    out = {}
    for split, n, gz in (("train", 3, True), ("t10k", 1, False)):
        labels = rng.permutation(np.repeat(np.arange(10), n)).astype(np.uint8)
        # smooth images (JPEG-friendly): a random 4x4 pattern upsampled to 28x28
        small = rng.integers(0, 256, (len(labels), 1, 4, 4)).astype(np.float64)
        images = F.interpolate(torch.from_numpy(small), size=(28, 28), mode="bilinear")[:, 0].round().numpy().astype(np.uint8)
        for name, arr in ((f"{split}-images-idx3-ubyte", images), (f"{split}-labels-idx1-ubyte", labels)):
            if gz:
                with gzip.open(d / (name + ".gz"), "wb") as f:
                    f.write(idx_bytes(arr))
            else:
                (d / name).write_bytes(idx_bytes(arr))
        out[split] = (images, labels)
    return d, out


def test_read_idx_round_trip(fake_set):
    d, want = fake_set
    assert np.array_equal(read_idx(d / "train-images-idx3-ubyte.gz"), want["train"][0])
    assert np.array_equal(read_idx(d / "t10k-labels-idx1-ubyte"), want["t10k"][1])


@pytest.mark.parametrize("size", [28, 40])
def test_written_images_match_the_idx_pixels(fake_set, tmp_path, size):
    d, want = fake_set
    ds = ensure_fashion_mnist(data_dir=d, cache_dir=tmp_path / "cache", size=size)
    src = ImageSource.from_folder(ds.train_dir)
    assert src.classes == tuple(f"{i}-{c}" for i, c in enumerate(CLASS_NAMES))
    assert len(src) == 30 and len(ImageSource.from_folder(ds.test_dir)) == 10
    images, labels = want["train"]
    for path, label in zip(src.paths, src.labels):
        i = int(path.stem)  # file name = index in the idx file
        assert labels[i] == label
        got = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert got.shape == (size, size, 3)
        # independent reference: bilinear upsampling (half-pixel centres) in float64
        ref = F.interpolate(torch.from_numpy(images[i].astype(np.float64))[None, None], size=(size, size),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
        err = np.abs(got - ref[..., None])
        assert err.mean() < 3.0 and err.max() < 40, (path, err.mean(), err.max())  # JPEG q95 + rounding


def test_per_class_subset_is_seeded(fake_set, tmp_path):
    d, want = fake_set
    picks = []
    for seed in (0, 0, 1, 2, 3):
        ds = ensure_fashion_mnist(data_dir=d, cache_dir=tmp_path / f"c{len(picks)}", size=28, per_class=2, seed=seed)
        src = ImageSource.from_folder(ds.train_dir)
        assert np.array_equal(np.bincount(src.labels, minlength=10), np.full(10, 2))
        picks.append(sorted(p.stem for p in src.paths))
    assert picks[0] == picks[1]
    assert len({tuple(p) for p in picks[1:]}) > 1  # 4 seeds choosing 2 of 3 per class: not all equal


def test_bad_input_names_the_file(fake_set, tmp_path):
    d, _ = fake_set
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        ensure_fashion_mnist(data_dir=tmp_path / "nowhere", cache_dir=tmp_path / "c")
    bad = d / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + bytes(8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*not a uint8 idx"):
        ensure_fashion_mnist(data_dir=d, cache_dir=tmp_path / "c")
    bad.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8))[:-3])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*needs"):
        read_idx(bad)
    bad.write_bytes(idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12], dtype=np.uint8)))
    with pytest.raises(ValueError, match="label 12"):
        ensure_fashion_mnist(data_dir=d, cache_dir=tmp_path / "c")
    gz = d / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        read_idx(gz)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())  # nothing half-written
