"""Box sampling as CutMix (Yun et al., ICCV 2019, Eq. 2) and SnapMix's released code draw it.

A box for ratio lam has sides int(S * sqrt(1 - lam)) for each image side S, a centre
uniform over the whole image, and corners centre -/+ side // 2 clipped to the image,
so boxes near a border shrink (and lam no longer equals the kept area: labels that
need the area use the box).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["area_share", "box_area", "boxes_around", "rand_boxes"]


def rand_boxes(lam, *, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """int64 (n, 4) boxes (y0, y1, x0, x1), one per entry of ``lam`` (array-like, (n,))."""
    lam = np.asarray(lam, dtype=np.float64).reshape(-1)
    cy = rng.integers(0, height, size=lam.size)
    cx = rng.integers(0, width, size=lam.size)
    return boxes_around(lam, cy, cx, height=height, width=width)


def boxes_around(lam, cy, cx, *, height: int, width: int) -> torch.Tensor:
    """int64 (n, 4) boxes for ratios ``lam`` centred on pixels (``cy``, ``cx``) (array-likes, (n,))."""
    lam = np.asarray(lam, dtype=np.float64).reshape(-1)
    cy, cx = np.asarray(cy, dtype=np.int64).reshape(-1), np.asarray(cx, dtype=np.int64).reshape(-1)
    cut = np.sqrt(1.0 - lam)
    ch = (height * cut).astype(np.int64)  # truncation, as int() in the released code
    cw = (width * cut).astype(np.int64)
    box = np.stack(
        [np.clip(cy - ch // 2, 0, height), np.clip(cy + ch // 2, 0, height),
         np.clip(cx - cw // 2, 0, width), np.clip(cx + cw // 2, 0, width)],
        axis=1,
    )
    return torch.from_numpy(box.astype(np.int64))


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 1] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 2])


def area_share(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float64: each box's share of a height x width image (the area labels' weight)."""
    return box_area(boxes).double() / (height * width)
