"""CutMix (Yun et al., ICCV 2019, Eq. 1-2) and its asymmetric variant from SnapMix
(Huang et al., AAAI 2021, Sec. 3.2 and the Fig. 3 ablation), both with area labels.

Symmetric: the box of the partner image is pasted into the same place; labels
(y_a, y_b, 1 - A, A) with A the box's share of the image (after clipping at borders).
Asymmetric (``asymmetric=True``, "as-cutmix"): an independent source box from its own
lam is resized into the target box (the paste of SnapMix), labels by the target box's
area; mixed only when both boxes have area > 0.

Defaults as SnapMix's experiments: prob 1.0, beta 3, one box (pair) per batch.

The symmetric paste copies same-size boxes, yet it goes through the resizing paste
kernel (an identity resize): on one batch-wide box of 16 x 3 x 448 x 448 float32 it took
1.01 ms against 1.63 for torch's slice copy ``x[:, :, box] = x[perm][:, :, box]``
(``python benchmarks/kernels.py``, 2026-12-05, CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import MixedBatch, MixMethod, check_beta, check_prob
from .boxes import area_share
from .params import BoxParams, paste_boxes, sample_box_params

__all__ = ["CutMix"]


class CutMix(MixMethod):
    params_type = BoxParams

    def __init__(self, *, prob: float = 1.0, beta: float = 3.0, asymmetric: bool = False, per_sample: bool = False,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta = check_prob(prob), check_beta(beta)
        self.asymmetric, self.per_sample = bool(asymmetric), bool(per_sample)
        self.name = "as-cutmix" if self.asymmetric else "cutmix"

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> BoxParams:
        n, _, h, w = images.shape
        return sample_box_params(rng, n=n, height=h, width=w, prob=self.prob, beta=self.beta,
                                 asymmetric=self.asymmetric, per_sample=self.per_sample)

    def _apply(self, images, labels, params: BoxParams, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        n, _, h, w = images.shape
        paste_boxes(images, params, backend=backend, tag=self.name)
        live = params.live
        area = area_share(params.dst_box, h, w)
        if self.asymmetric:  # no paste, no mix
            area = torch.where(live, area, torch.zeros_like(area))
        return MixedBatch.with_partner(images, labels, params.perm, w_b=area.float())
