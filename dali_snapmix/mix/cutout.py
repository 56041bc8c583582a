"""CutOut (DeVries & Taylor, 2017): a box of the normalised image set to 0 (the mean).

As SnapMix's experiments ran it: prob 0.5, the box drawn as CutMix's for lam = 0.75
(sides half the image's), labels unchanged (y, y, 1, 0).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import kernels
from .base import MixedBatch, MixMethod, check_prob
from .boxes import rand_boxes
from .params import CutOutParams, coin

__all__ = ["CutOut"]


class CutOut(MixMethod):
    name = "cutout"
    params_type = CutOutParams

    def __init__(self, *, prob: float = 0.5, lam: float = 0.75, per_sample: bool = False,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        if not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        self.prob, self.lam, self.per_sample = check_prob(prob), float(lam), bool(per_sample)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> CutOutParams:
        n, _, h, w = images.shape
        apply = coin(rng, self.prob)
        k = n if self.per_sample else 1
        box = rand_boxes([self.lam] * k, height=h, width=w, rng=rng).expand(n, 4).contiguous()
        return CutOutParams(apply=apply, box=box)

    def _apply(self, images, labels, params: CutOutParams, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        if params.apply:
            kernels.fill_box(images, boxes=params.box, value=0.0, backend=backend, tag=self.name)
        return self.unmixed(images, labels)
