"""Box sampling as CutMix (Yun et al., ICCV 2019, Eq. 2) and SnapMix's released code draw it.

A box for ratio lam has sides int(S * sqrt(1 - lam)) for each image side S, a centre
uniform over the whole image, and corners centre -/+ side // 2 clipped to the image,
so boxes near a border shrink (and lam no longer equals the kept area: callers that
need the area use the box).
"""

from __future__ import annotations

import torch

__all__ = ["box_area", "rand_boxes"]


def rand_boxes(lam: torch.Tensor, *, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """int64 (n, 4) boxes (y0, y1, x0, x1), one per entry of ``lam`` (float, (n,))."""
    lam = torch.as_tensor(lam, dtype=torch.float64).reshape(-1)
    n = lam.numel()
    cut = torch.sqrt(1.0 - lam)
    ch = torch.tensor([int(height * float(c)) for c in cut], dtype=torch.int64)  # int() truncation, as released
    cw = torch.tensor([int(width * float(c)) for c in cut], dtype=torch.int64)
    cy = torch.randint(0, height, (n,), generator=generator)
    cx = torch.randint(0, width, (n,), generator=generator)
    y0 = (cy - ch // 2).clamp(0, height)
    y1 = (cy + ch // 2).clamp(0, height)
    x0 = (cx - cw // 2).clamp(0, width)
    x1 = (cx + cw // 2).clamp(0, width)
    return torch.stack([y0, y1, x0, x1], dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 1] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 2])
