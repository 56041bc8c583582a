"""Where the images come from: ImageFolder, a file list, or CUB-200-2011's own layout.

Every source is scanned once: each file's header is read (for its size, which the crop
planner needs) and checked, so that a corrupt, truncated, empty or non-image file is
caught before training starts -- reported by name (``on_bad_file="error"``, the
default) or left out and counted (``on_bad_file="skip"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["ImageSource", "BadImageError", "check_image_file", "full_decode_error"]

OnBadFile = Literal["error", "skip"]


class BadImageError(ValueError):
    """A file that should be an image cannot be decoded; the message names it."""


def check_image_file(path: Path) -> tuple[int, int]:
    """Return (height, width) of an image file, or raise ``BadImageError`` naming it.

    Reads the header only, plus the last bytes of a JPEG: a JPEG cut short lacks its
    end-of-image marker, which is the usual way downloads and copies get truncated.
    """
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        raise BadImageError(f"cannot read image file {path}: {e}") from e
    if nbytes == 0:
        raise BadImageError(f"image file {path} is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            w, h = im.size
            fmt = im.format
    except Exception as e:  # PIL raises several types for garbage
        raise BadImageError(f"{path} is not a readable image: {e}") from e
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, nbytes - 64))
            if b"\xff\xd9" not in f.read():
                raise BadImageError(f"JPEG file {path} is truncated (no end-of-image marker)")
    if h < 1 or w < 1:
        raise BadImageError(f"image file {path} has no pixels ({w}x{h})")
    return h, w


def full_decode_error(path: Path) -> str | None:
    """Decode a whole file with PIL; return why it fails, or None if it decodes."""
    try:
        with Image.open(path) as im:
            im.convert("RGB").load()
    except Exception as e:
        return f"{path}: {e}"
    return None


@dataclass(frozen=True)
class ImageSource:
    """A scanned list of labelled image files.

    ``paths`` are absolute; ``labels`` int64; ``sizes`` int64 (n, 2) as (height, width).
    ``skipped`` lists (path, reason) for files left out under ``on_bad_file="skip"``.
    """

    paths: tuple[Path, ...]
    labels: np.ndarray
    sizes: np.ndarray
    classes: tuple[str, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- constructors ------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | os.PathLike, *, on_bad_file: OnBadFile = "error",
                    allow_empty: bool = False) -> ImageSource:
        """ImageFolder layout: ``root/<class>/<image>``; classes sorted by name. A class
        folder without image files is an error (the label space would silently stop
        matching the folders), unless ``allow_empty=True`` keeps it as a class with no
        samples (torchvision's ImageFolder has the same switch)."""
        root = _existing_dir(root)
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not classes:
            raise ValueError(f"no class folders in {root}: expected root/<class>/<image> (ImageFolder layout)")
        files, labels = [], []
        for label, c in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(root / c)):
                for name in sorted(names):
                    if name.lower().endswith(IMG_EXTENSIONS):
                        files.append(Path(dirpath) / name)
                        labels.append(label)
        if not files:
            raise ValueError(
                f"no image files ({', '.join(IMG_EXTENSIONS)}) under the class folders of {root}"
            )
        present = set(labels)
        empty = [c for k, c in enumerate(classes) if k not in present]
        if empty and not allow_empty:
            raise ValueError(f"class folders without image files ({', '.join(IMG_EXTENSIONS)}) in {root}: {empty}; "
                             f"remove them, or pass allow_empty=True to keep them as classes with no samples")
        return cls._scan(files, labels, tuple(classes), on_bad_file)

    @classmethod
    def from_file_list(
        cls, list_file: str | os.PathLike, *, root: str | os.PathLike | None = None, on_bad_file: OnBadFile = "error"
    ) -> ImageSource:
        """A text file with ``<relative path> <integer label>`` per line (paths relative to ``root``,
        by default the list's folder). Blank lines and lines starting with ``#`` are ignored."""
        list_file = Path(list_file)
        if not list_file.is_file():
            raise ValueError(f"file list {list_file} does not exist")
        base = _existing_dir(root if root is not None else list_file.parent)
        files, labels = [], []
        for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rel, _, lab = line.rpartition(" ")
            try:
                label = int(lab)
            except ValueError:
                label = -1
            if not rel or label < 0:
                raise ValueError(f"{list_file}:{lineno}: expected '<path> <label >= 0>', got {line!r}")
            files.append(base / rel.strip())
            labels.append(label)
        if not files:
            raise ValueError(f"file list {list_file} lists no images")
        n_cls = max(labels) + 1
        return cls._scan(files, labels, tuple(str(i) for i in range(n_cls)), on_bad_file)

    @classmethod
    def from_cub(
        cls, root: str | os.PathLike, *, split: Literal["train", "test"], on_bad_file: OnBadFile = "error"
    ) -> ImageSource:
        """CUB-200-2011 as distributed: images.txt, image_class_labels.txt,
        train_test_split.txt, classes.txt and images/ under ``root``. Labels are 0-based."""
        root = _existing_dir(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")

        def table(name: str) -> dict[int, str]:
            p = root / name
            if not p.is_file():
                raise ValueError(f"{p} is missing: {root} is not a CUB-200-2011 folder")
            out = {}
            for lineno, line in enumerate(p.read_text().splitlines(), 1):
                if line.strip():
                    key, _, val = line.strip().partition(" ")
                    if not key.isdigit() or not val:
                        raise ValueError(f"{p}:{lineno}: expected '<id> <value>', got {line!r}")
                    out[int(key)] = val.strip()
            return out

        images, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
        class_names = table("classes.txt") if (root / "classes.txt").is_file() else {}
        want = "1" if split == "train" else "0"
        ids = sorted(i for i in images if is_train.get(i) == want)
        if not ids:
            raise ValueError(f"{root}: no {split} images in train_test_split.txt")
        missing = [i for i in ids if i not in labels]
        if missing:
            raise ValueError(f"{root}/image_class_labels.txt has no label for image ids {missing[:5]}")
        lab = [int(labels[i]) - 1 for i in ids]
        n_cls = max(int(v) for v in labels.values())
        names = tuple(class_names.get(k + 1, str(k)) for k in range(n_cls))
        return cls._scan([root / "images" / images[i] for i in ids], lab, names, on_bad_file)

    @classmethod
    def _scan(cls, files: list[Path], labels: list[int], classes: tuple[str, ...], on_bad_file: OnBadFile) -> ImageSource:
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        keep, sizes, skipped = [], [], []
        for f, lab in zip(files, labels):
            try:
                sizes.append(check_image_file(f))
                keep.append((f, lab))
            except BadImageError as e:
                if on_bad_file == "error":
                    raise BadImageError(f"{e} (pass on_bad_file='skip' to leave bad files out)") from None
                skipped.append((f, str(e)))
        if not keep:
            raise ValueError(f"none of the {len(files)} image files could be read; first: {skipped[0][1]}")
        return cls(
            paths=tuple(f for f, _ in keep),
            labels=np.array([lab for _, lab in keep], dtype=np.int64),
            sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
            classes=classes,
            skipped=tuple(skipped),
        )


def _existing_dir(p: str | os.PathLike) -> Path:
    p = Path(p)
    if not p.is_dir():
        raise ValueError(f"dataset folder {p} does not exist or is not a folder")
    return p
