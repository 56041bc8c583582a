"""Frozen params objects: everything a method drew at random for one batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .boxes import box_area, rand_boxes


@dataclass(frozen=True)
class BlendParams:
    """Mixup: ``mix`` (the switch coin), ``perm`` int64 (N,), ``lam`` float32 (N,)."""

    mix: bool
    perm: torch.Tensor
    lam: torch.Tensor


@dataclass(frozen=True)
class BoxParams:
    """CutMix, asymmetric CutMix, SnapMix: ``src_box[i]`` of image ``perm[i]`` goes into
    ``dst_box[i]`` of image i; int64 (N, 4) boxes (y0, y1, x0, x1)."""

    mix: bool
    perm: torch.Tensor
    src_box: torch.Tensor
    dst_box: torch.Tensor

    @property
    def live(self) -> torch.Tensor:
        """bool (N,): which samples get a paste (both boxes non-empty; the coin aside)."""
        return (box_area(self.src_box) > 0) & (box_area(self.dst_box) > 0)


@dataclass(frozen=True)
class CutOutParams:
    """CutOut: ``apply`` (the switch coin) and int64 (N, 4) boxes."""

    apply: bool
    box: torch.Tensor


def draw_boxes(rng: np.random.Generator, *, n: int, beta: float, height: int, width: int, per_sample: bool) -> torch.Tensor:
    """(n, 4) boxes from lam ~ Beta(beta, beta): one box for the batch, or one per sample."""
    if per_sample:
        return rand_boxes(rng.beta(beta, beta, size=n), height=height, width=width, rng=rng)
    return rand_boxes([rng.beta(beta, beta)], height=height, width=width, rng=rng).expand(n, 4).contiguous()
