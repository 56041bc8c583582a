"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) as JPEG files in the ImageFolder layout.

Real photographs of clothing, 10 classes, 60k train / 10k test, 28x28 grayscale, MIT
licence. Debian's ``dataset-fashion-mnist`` package installs the original idx files
(gzipped) under ``/usr/share/datasets/fashion-mnist``; nothing is downloaded here. The
images are written once, as RGB JPEGs at a chosen size, so that the DALI path is the
one a benchmark measures.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic import FolderSet, build_once, default_cache_dir

__all__ = ["CLASS_NAMES", "DEFAULT_DIR", "FashionMNIST", "ensure_fashion_mnist", "read_idx"]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FashionMNIST(FolderSet):
    size: int
    per_class: int | None

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (raw or gzipped) as a uint8 array: (N, rows, cols) for images, (N,)
    for labels. Errors name the file and what is wrong with it."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # EOFError: a truncated gzip stream
        raise ValueError(f"cannot read idx file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise ValueError(f"{path} is not a uint8 idx file of 1 or 3 dimensions (header {raw[:4].hex()!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header truncated ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    want = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != want:
        raise ValueError(f"{path}: {len(raw)} bytes, but its header {dims} needs {want}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _split_files(data_dir: Path, split: str) -> tuple[Path, Path]:
    if not data_dir.is_dir():
        raise ValueError(f"Fashion-MNIST folder {data_dir} does not exist; install it with "
                         f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or pass the folder "
                         f"holding the idx files")
    out = []
    for stem in FILES[split]:
        for name in (stem + ".gz", stem):
            if (data_dir / name).is_file():
                out.append(data_dir / name)
                break
        else:
            raise ValueError(f"{data_dir} has neither {stem}.gz nor {stem}")
    return out[0], out[1]


def load_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N int64) of ``split`` ("train" or "test")."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ip, lp = _split_files(Path(data_dir), split)
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{ip} ({images.shape}) and {lp} ({labels.shape}) do not pair up")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{lp}: label {int(labels.max())} outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)


def ensure_fashion_mnist(
    *,
    data_dir: str | os.PathLike = DEFAULT_DIR,
    cache_dir: str | os.PathLike | None = None,
    size: int = 64,
    per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
) -> FashionMNIST:
    """Return the JPEG ImageFolder copy, writing it first if the cache does not hold it.

    ``per_class`` keeps that many training images per class (chosen by ``seed``; None
    keeps all), ``test_per_class`` likewise for the test split. Images are upscaled
    from 28x28 to ``size`` (bilinear) and stored as 3-channel JPEGs.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    for name, v in (("per_class", per_class), ("test_per_class", test_per_class)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {v}")
    data_dir = Path(data_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"fashion-mnist-v{FORMAT_VERSION}-{size}px-n{per_class or 'all'}-{test_per_class or 'all'}-s{seed}"
    ds = FashionMNIST(root=cache / name, size=size, per_class=per_class)
    if (ds.root / "COMPLETE").exists():
        return ds
    splits = {s: load_split(data_dir, s) for s in FILES}  # read (and validate) before writing

    def write(tmp: Path) -> None:
        for split_id, (split, keep) in enumerate((("train", per_class), ("test", test_per_class))):
            images, labels = splits[split]
            rng = np.random.default_rng([seed, split_id])
            for label, cname in enumerate(CLASS_NAMES):
                idx = np.flatnonzero(labels == label)
                if keep is not None:
                    idx = np.sort(rng.permutation(idx)[:keep])
                d = tmp / split / f"{label}-{cname}"  # the prefix keeps sorted order = label order
                d.mkdir(parents=True)
                for i in idx:
                    img = Image.fromarray(images[i])  # 2-D uint8: mode "L"
                    if size != img.width:
                        img = img.resize((size, size), Image.BILINEAR)
                    img.convert("RGB").save(d / f"{i:05d}.jpg", quality=95)
        (tmp / "COMPLETE").write_text(f"{len(CLASS_NAMES)} classes from {data_dir}\n")

    build_once(ds.root, write)
    return ds
