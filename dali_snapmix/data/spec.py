"""The data-preparation spec and the per-epoch plan shared by both loaders.

All randomness of the input pipeline -- sample order, crop offsets, flips -- is drawn
here in NumPy from (seed, epoch) (streams of ``dali_snapmix.seeding``), not inside DALI. Three things follow:

* the DALI loader and the plain-PyTorch fallback see the same order and the same
  crop windows, so their outputs can be compared file by file;
* each sample's crop window in source-image coordinates is known exactly, which the
  cached-CAM SnapMix mode needs to re-project maps;
* resuming at an epoch boundary only needs (seed, epoch): no pipeline state to save.

Geometry: the image is (conceptually) resized to ``(rh, rw)`` -- shorter side to
``resize`` or a warp to ``resize x resize`` -- and a ``crop x crop`` window at integer
offsets ``(oy, ox)`` of that resized image is taken. The same window expressed in
source pixels is ``[y0, y1) x [x0, x1)`` with ``y0 = oy * h / rh`` and so on; the DALI
path decodes and resizes only that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..seeding import generator

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CropGeometry", "EpochPlan", "TransformSpec", "map_to_crop", "plan_epoch",
           "resized_size", "unnormalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    """How images become network inputs (sizes in pixels; mean/std on the 0-1 scale)."""

    resize: int = 512  # shorter side after resizing (or both sides with resize_mode="warp")
    crop: int = 448  # square crop side
    resize_mode: Literal["shorter", "warp"] = "shorter"  # CUB: shorter; Cars/Aircraft: warp
    flip: bool = True  # random horizontal flip in training
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dtype: Literal["float32", "float16"] = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.crop, int) or self.crop < 1:
            raise ValueError(f"crop must be a positive int, got {self.crop!r}")
        if not isinstance(self.resize, int) or self.resize < self.crop:
            raise ValueError(f"resize must be an int >= crop ({self.crop}), got {self.resize!r}")
        if self.resize_mode not in ("shorter", "warp"):
            raise ValueError(f"resize_mode must be 'shorter' or 'warp', got {self.resize_mode!r}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        check_normalisation(self.mean, self.std)


def check_normalisation(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) as float tuples, refused unless 3 values each with std > 0."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
    return mean, std


def unnormalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """The images as pixels again, float32 on their device: x * std + mean per channel
    (NCHW, or CHW)."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return images.float() * s + m


def resized_size(h: np.ndarray, w: np.ndarray, spec: TransformSpec) -> tuple[np.ndarray, np.ndarray]:
    """Integer (rh, rw) of the conceptually resized images; at least ``spec.crop`` each."""
    h = np.asarray(h, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if spec.resize_mode == "warp":
        r = np.full_like(h, spec.resize)
        return r, r.copy()
    short = np.minimum(h, w)
    # The shorter side becomes exactly `resize`; the longer one rounds, never below it.
    rh = np.where(h == short, spec.resize, np.rint(h * spec.resize / short)).astype(np.int64)
    rw = np.where(w == short, spec.resize, np.rint(w * spec.resize / short)).astype(np.int64)
    return np.maximum(rh, spec.resize), np.maximum(rw, spec.resize)


@dataclass(frozen=True)
class EpochPlan:
    """One rank's samples for one epoch, in order, with their crop geometry.

    Arrays have one row per planned sample. ``window`` is (y0, y1, x0, x1) in source
    pixels (float64); ``offset`` is (oy, ox) in the resized image; ``rsize`` is (rh, rw).
    """

    indices: np.ndarray  # int64 dataset indices
    offset: np.ndarray  # int64 (n, 2)
    rsize: np.ndarray  # int64 (n, 2)
    window: np.ndarray  # float64 (n, 4)
    flip: np.ndarray  # bool (n,)
    batch_size: int

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def batch(self, k: int) -> slice:
        if not 0 <= k < len(self):
            raise IndexError(f"batch {k} out of range for an epoch of {len(self)} batches")
        return slice(k * self.batch_size, min((k + 1) * self.batch_size, len(self.indices)))


@dataclass(frozen=True)
class CropGeometry:
    """Where each sample of a batch came from, on the host: ``indices`` int64 (N,) into the
    dataset, ``window`` float32 (N, 4) its crop (y0, y1, x0, x1) in source-image pixels,
    ``flip`` bool (N,) whether the crop was mirrored. What the CAM cache needs of a batch
    (``Batch.geometry``), and all it is given."""

    indices: torch.Tensor
    window: torch.Tensor
    flip: torch.Tensor

    @classmethod
    def of(cls, source, *, n: int) -> CropGeometry:
        """From a :class:`CropGeometry` or anything with ``indices``, ``window`` and ``flip``
        (the loader's Batch), checked against a batch of ``n``; copied to the host."""
        missing = [k for k in ("indices", "window", "flip") if not hasattr(source, k)]
        if source is None or missing:
            raise ValueError("the CAM cache needs each sample's crop: geometry=<the loader's Batch or its .geometry> "
                             f"(indices, window, flip); got {type(source).__name__}"
                             + (f" without {missing}" if source is not None else ""))
        g = cls(indices=source.indices.to("cpu", torch.int64), window=source.window.to("cpu", torch.float32),
                flip=source.flip.to("cpu", torch.bool))
        for name, t, shape in (("indices", g.indices, (n,)), ("window", g.window, (n, 4)), ("flip", g.flip, (n,))):
            if tuple(t.shape) != shape:
                raise ValueError(f"geometry.{name} has shape {tuple(t.shape)} for a batch of {n} (expected {shape})")
        return g


def plan_epoch(
    sizes: np.ndarray,
    *,
    spec: TransformSpec,
    train: bool,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> EpochPlan:
    """Order, shard and crop one epoch.

    Training: a fresh permutation per epoch (the same on every rank), split into
    ``world_size`` equal strided shards, last partial batch dropped -- so every rank
    runs the same number of steps. Evaluation: dataset order, strided shards that
    together cover every sample once, last partial batch kept, centre crops, no flip.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if train:
        order = generator(seed, "plan", epoch=epoch).permutation(n)  # rank 0's stream: one order for all ranks
        per_rank = n // world_size
        idx = order[rank::world_size][:per_rank]
        idx = idx[: len(idx) // batch_size * batch_size]
    else:
        idx = np.arange(rank, n, world_size, dtype=np.int64)
    h, w = sizes[idx, 0], sizes[idx, 1]
    rh, rw = resized_size(h, w, spec)
    if train:
        # One stream per (seed, epoch, rank): crops differ across ranks and epochs.
        rng = generator(seed, "crops", epoch=epoch, rank=rank)
        oy = np.floor(rng.random(len(idx)) * (rh - spec.crop + 1)).astype(np.int64)
        ox = np.floor(rng.random(len(idx)) * (rw - spec.crop + 1)).astype(np.int64)
        flip = rng.random(len(idx)) < 0.5 if spec.flip else np.zeros(len(idx), dtype=bool)
    else:
        oy = np.rint((rh - spec.crop) / 2.0).astype(np.int64)
        ox = np.rint((rw - spec.crop) / 2.0).astype(np.int64)
        flip = np.zeros(len(idx), dtype=bool)
    sy, sx = h / rh, w / rw
    window = np.stack([oy * sy, (oy + spec.crop) * sy, ox * sx, (ox + spec.crop) * sx], axis=1)
    return EpochPlan(
        indices=idx.astype(np.int64),
        offset=np.stack([oy, ox], axis=1),
        rsize=np.stack([rh, rw], axis=1),
        window=window,
        flip=flip,
        batch_size=batch_size,
    )


def map_to_crop(source_map, *, window, flip: bool, crop: int):
    """A per-pixel map of a source image (H, W) -- a part mask, a saliency map -- taken
    through one sample's crop as the loader reports it (``Batch.window`` row in source
    pixels, ``Batch.flip``): float64 (crop, crop), the map as the crop's pixels see it.

    Follows the geometry the loader implements: resize the whole image to (rh, rw)
    (antialiased bilinear, as PIL resizes), take the ``crop``-pixel window at the
    integer offset the window encodes, mirror it if flipped. A bool mask becomes each
    crop pixel's coverage in [0, 1]."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(np.asarray(source_map)).double()
    if m.dim() != 2 or min(m.shape) < 1:
        raise ValueError(f"source_map must be a non-empty (H, W) array, got shape {tuple(m.shape)}")
    y0, y1, x0, x1 = (float(v) for v in np.asarray(window, dtype=np.float64).reshape(4))
    h, w = m.shape
    if not (0 <= y0 < y1 <= h * (1 + 1e-6) and 0 <= x0 < x1 <= w * (1 + 1e-6)):
        raise ValueError(f"window {(y0, y1, x0, x1)} does not lie inside a {h}x{w} source map")
    # the window is (oy, oy + crop) * h / rh with integer rh and oy: undo that
    rh, rw = int(round(crop * h / (y1 - y0))), int(round(crop * w / (x1 - x0)))
    oy, ox = int(round(y0 * rh / h)), int(round(x0 * rw / w))
    if oy + crop > rh or ox + crop > rw:
        raise ValueError(f"window {(y0, y1, x0, x1)} is not a {crop}-pixel crop of a resized {h}x{w} image")
    r = F.interpolate(m[None, None], size=(rh, rw), mode="bilinear", align_corners=False,
                      antialias=(rh < h or rw < w))[0, 0]
    out = r[oy:oy + crop, ox:ox + crop]
    return out.flip(-1).contiguous() if flip else out.contiguous()
