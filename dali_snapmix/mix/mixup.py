"""Mixup (Zhang, Cisse, Dauphin, Lopez-Paz, ICLR 2018, Eq. 1):
x = lam * x_a + (1 - lam) * x_b, labels (y_a, y_b, lam, 1 - lam), lam ~ Beta(beta, beta).

Defaults as the SnapMix paper ran it: prob 0.5, beta 1, one lam per batch, partner from
a random permutation.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import kernels
from .base import MixedBatch, MixMethod, check_beta, check_prob
from .params import BlendParams, coin, permutation

__all__ = ["Mixup"]


class Mixup(MixMethod):
    name = "mixup"
    params_type = BlendParams

    def __init__(self, *, prob: float = 0.5, beta: float = 1.0, per_sample: bool = False,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta, self.per_sample = check_prob(prob), check_beta(beta), bool(per_sample)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> BlendParams:
        n = images.shape[0]
        mix = coin(rng, self.prob)
        lam = rng.beta(self.beta, self.beta, size=n if self.per_sample else 1)
        lam = torch.from_numpy(np.broadcast_to(lam, (n,)).astype(np.float32).copy())
        return BlendParams(mix=mix, perm=permutation(rng, n), lam=lam)

    def _apply(self, images, labels, params: BlendParams, *, model=None, backend: str = "auto",
              geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        kernels.blend(images, perm=params.perm, weights=params.lam, backend=backend, tag=self.name)
        return MixedBatch.with_partner(images, labels, params.perm, w_a=params.lam)
