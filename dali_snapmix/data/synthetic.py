"""The embedded fine-grained dataset: "birds" told apart only by small parts.

Every image shows one bird-like shape on a cluttered background. The class is the
pair (wing-bar colour, head mark); body colour, pose, scale, position and the
background are nuisance variables shared by all classes. Background clutter uses
the same palette as the wing bars, so colour alone, anywhere in the image, does not
give the class away: a model has to look at the right small part. A random box cut
out of such an image often removes that part -- the situation in which SnapMix
argues that area-based mixed labels are wrong.

Files are real JPEGs in the ImageFolder layout (``root/{train,test}/<class>/*.jpg``),
generated deterministically from a seed and written atomically into a cache folder
on first use. Beside them, ``root/parts/{train,test}/<class>/<name>.png`` holds each
image's ground truth: a 1-bit mask, in source-image pixels, of the pixels where its
class-deciding parts (the wing bar and the head mark) are visible. It is drawn with the
bird, through the same flip, rotation and placement, so a benchmark can measure how
much of a sample's evidence a mixed image really keeps (``benchmarks/label_fidelity.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASS_NAMES", "SyntheticBirds", "default_cache_dir", "ensure_synthetic_birds", "load_part_mask",
           "part_mask_path"]

# Wing-bar colours and head marks: 4 x 3 = 12 classes.
WING_BARS = {
    "red": (214, 40, 40),
    "yellow": (240, 200, 30),
    "blue": (40, 90, 220),
    "white": (245, 245, 245),
}
HEAD_MARKS = ("cap", "eyestripe", "crest")
CLASS_NAMES = tuple(f"{c}-{m}" for c in WING_BARS for m in HEAD_MARKS)
BODY_COLOURS = ((110, 85, 60), (90, 90, 95), (150, 120, 80), (60, 60, 50), (170, 160, 140), (120, 100, 90))
FORMAT_VERSION = 2  # 2: part masks beside the images


@dataclass(frozen=True)
class FolderSet:
    """A dataset written as ``root/{train,test}/<class>/<image>``."""

    root: Path

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"


@dataclass(frozen=True)
class SyntheticBirds(FolderSet):
    """Where a generated set lives and what it holds."""

    train_per_class: int
    test_per_class: int
    seed: int

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    def part_mask(self, image: str | os.PathLike) -> np.ndarray:
        """The part mask of one of this set's images (a path under ``train_dir`` or ``test_dir``)."""
        return load_part_mask(part_mask_path(image, root=self.root))


def part_mask_path(image: str | os.PathLike, *, root: str | os.PathLike) -> Path:
    """Where the part mask of ``root/<split>/<class>/<name>.jpg`` lives."""
    image, root = Path(image), Path(root)
    try:
        rel = image.relative_to(root)
    except ValueError:
        raise ValueError(f"{image} is not an image of the set at {root}") from None
    return root / "parts" / rel.with_suffix(".png")


def load_part_mask(path: str | os.PathLike) -> np.ndarray:
    """bool (H, W): True where a class-deciding part is visible, in source-image pixels."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no part mask at {path} (sets written before format version 2 have none)")
    with Image.open(path) as m:
        return np.array(m.convert("1"), dtype=bool)


def default_cache_dir() -> Path:
    env = os.environ.get("DALI_SNAPMIX_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dali_snapmix"


def build_once(root: Path, write) -> None:
    """Unless ``root/COMPLETE`` exists, run ``write(tmp)`` on a fresh sibling folder and
    rename it to ``root``: a reader never sees a half-written set, a crash leaves none."""
    if (root / "COMPLETE").exists():
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp", dir=root.parent))
    try:
        write(tmp)
        try:
            tmp.rename(root)
        except OSError:
            if not (root / "COMPLETE").exists():  # not a lost race with another writer
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic_birds(
    *,
    cache_dir: str | os.PathLike | None = None,
    train_per_class: int = 60,
    test_per_class: int = 20,
    seed: int = 0,
    size: tuple[int, int] = (300, 400),
) -> SyntheticBirds:
    """Return the dataset, generating it first if the cache folder does not hold it.

    ``size`` is the nominal (height, width); each image's sides vary by +-15 % around
    it so that resize and crop code meets varied aspect ratios.
    """
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError(
            f"train_per_class and test_per_class must be >= 1, got {train_per_class}, {test_per_class}"
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"birds-v{FORMAT_VERSION}-s{seed}-n{train_per_class}-{test_per_class}-{size[0]}x{size[1]}"
    root = cache / name
    ds = SyntheticBirds(root=root, train_per_class=train_per_class, test_per_class=test_per_class, seed=seed)

    def write(tmp: Path) -> None:
        for split, n, split_id in (("train", train_per_class, 0), ("test", test_per_class, 1)):
            for label, cname in enumerate(CLASS_NAMES):
                d, dm = tmp / split / cname, tmp / "parts" / split / cname
                d.mkdir(parents=True)
                dm.mkdir(parents=True)
                for i in range(n):
                    rng = np.random.default_rng([seed, split_id, label, i])
                    img, parts = render_bird(rng, label=label, size=size, with_parts=True)
                    img.save(d / f"{cname}_{i:04d}.jpg", quality=90)
                    parts.save(dm / f"{cname}_{i:04d}.png", optimize=True)
        (tmp / "COMPLETE").write_text(f"{len(CLASS_NAMES)} classes\n")

    build_once(root, write)
    return ds


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    # A smooth two-colour gradient plus clutter in every colour the birds use.
    c0 = rng.integers(40, 220, size=3)
    c1 = rng.integers(40, 220, size=3)
    t = np.linspace(0.0, 1.0, w)[None, :, None] * rng.uniform(0.3, 1.0) + np.linspace(0.0, 1.0, h)[:, None, None] * rng.uniform(0.0, 0.7)
    t = np.clip(t, 0, 1)
    arr = (c0 * (1 - t) + c1 * t + rng.normal(0, 8, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    palette = list(WING_BARS.values()) + list(BODY_COLOURS)
    for _ in range(int(rng.integers(8, 20))):
        colour = _jitter(rng, palette[int(rng.integers(len(palette)))], 25)
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        bw, bh = rng.uniform(0.03, 0.25) * w, rng.uniform(0.03, 0.25) * h
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + bw, y0 + bh], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=colour)
        else:
            draw.line([x0, y0, x0 + bw, y0 + bh], fill=colour, width=int(rng.integers(2, 7)))
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.5))))


def _bird(rng: np.random.Generator, label: int, side: int, *, draw_parts: bool = True) -> tuple[Image.Image, Image.Image]:
    """Draw one bird facing right on a transparent square canvas of ``side`` pixels, and
    the mask ("L", 0 or 255) of its visible class-deciding parts on a canvas of the same size.
    Without ``draw_parts`` the parts are left out of the drawing (not of the mask)."""
    bar_rgb = list(WING_BARS.values())[label // len(HEAD_MARKS)]
    mark = HEAD_MARKS[label % len(HEAD_MARKS)]
    s = side / 100.0  # drawing units: the canvas is 100 x 100
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    parts = Image.new("L", (side, side), 0)
    d, p = ImageDraw.Draw(canvas), ImageDraw.Draw(parts)
    body = _jitter(rng, BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))], 15) + (255,)
    dark = tuple(max(0, c - 50) for c in body[:3]) + (255,)

    def box(x0, y0, x1, y1):
        return [x0 * s, y0 * s, x1 * s, y1 * s]

    # tail, body, head, beak, legs
    d.polygon([(12 * s, 48 * s), (30 * s, 55 * s), (12 * s, 64 * s)], fill=dark)
    d.ellipse(box(22, 38, 72, 70), fill=body)
    d.ellipse(box(62, 24, 84, 46), fill=body)
    d.polygon([(83 * s, 33 * s), (95 * s, 36 * s), (83 * s, 39 * s)], fill=(230, 160, 40, 255))
    d.line([(42 * s, 68 * s), (40 * s, 82 * s)], fill=(80, 60, 40, 255), width=max(1, int(1.5 * s)))
    d.line([(52 * s, 68 * s), (54 * s, 82 * s)], fill=(80, 60, 40, 255), width=max(1, int(1.5 * s)))
    # the wing and its bar: the first discriminative part
    d.ellipse(box(30, 44, 62, 60), fill=dark)
    bar = _jitter(rng, bar_rgb, 12) + (255,)
    # each part is drawn twice with the same geometry: in colour, and into the mask
    for draw, fill in ((d, bar), (p, 255))[0 if draw_parts else 1:]:
        draw.polygon([(34 * s, 50 * s), (58 * s, 48 * s), (58 * s, 53 * s), (34 * s, 55 * s)], fill=fill)
    # the head mark: the second discriminative part
    for draw, fill in ((d, (20, 20, 20, 255)), (p, 255))[0 if draw_parts else 1:]:
        if mark == "cap":
            draw.chord(box(63, 24, 83, 44), start=180, end=360, fill=fill)
        elif mark == "eyestripe":
            draw.line([(64 * s, 33 * s), (84 * s, 33 * s)], fill=fill, width=max(1, int(3 * s)))
        else:  # crest
            draw.polygon([(66 * s, 28 * s), (70 * s, 14 * s), (74 * s, 26 * s)], fill=fill)
    # the eye, drawn last and common to all classes, hides part of the mark
    d.ellipse(box(75, 30, 79, 34), fill=(250, 250, 250, 255))
    d.ellipse(box(76, 31, 78, 33), fill=(0, 0, 0, 255))
    p.ellipse(box(75, 30, 79, 34), fill=0)
    return canvas, parts


def render_bird(rng: np.random.Generator, *, label: int, size: tuple[int, int], with_parts: bool = False,
                draw_parts: bool = True):
    """One RGB image of class ``label``; every random choice comes from ``rng``. With
    ``with_parts``: (image, 1-bit part mask of the same size), the mask taken through the
    bird's own flip, rotation and placement (thresholded at half coverage). Without
    ``draw_parts`` the same bird from the same ``rng`` without its wing bar and head mark
    (the mask unchanged): what the parts painted is where the two images differ."""
    h = int(round(size[0] * rng.uniform(0.85, 1.15)))
    w = int(round(size[1] * rng.uniform(0.85, 1.15)))
    img = _background(rng, h, w)
    side = int(min(h, w) * rng.uniform(0.45, 0.8))
    bird, parts = _bird(rng, label, side, draw_parts=draw_parts)
    if rng.random() < 0.5:
        bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        parts = parts.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-30, 30))
    bird = bird.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    parts = parts.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    x = int(rng.integers(0, max(1, w - side + 1)))
    y = int(rng.integers(0, max(1, h - side + 1)))
    img.paste(bird, (x, y), bird)
    if not with_parts:
        return img
    full = Image.new("L", (w, h), 0)
    full.paste(parts, (x, y))
    return img, full.point(lambda v: 255 if v >= 128 else 0).convert("1")

