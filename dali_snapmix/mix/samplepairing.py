"""SamplePairing (Inoue, "Data Augmentation by Pairing Samples for Images Classification",
arXiv 1801.02929, 2018, Sec. 3): each image is averaged pixel by pixel with another
training image, and keeps its own label only:

    x~ = (x_a + x_b) / 2,   labels (y_a, y_b) weighted (1, 0)

The partner is another image of the batch, by a random permutation (the paper draws it
from the whole training set; a batch is a random draw of it, and a self-pair, probability
1 / N, leaves the image as it is). Every batch is mixed while the method is on (prob 1.0).

The paper's schedule (Sec. 3) is the trainer's: an initial phase without it, then on/off
cycles, then a final phase without it (``--mix-warmup``, ``--mix-cycle ON,OFF``,
``--mix-cooldown``; in the paper's CIFAR runs, to our reading, 8 epochs on and 2 off).
y_b is carried with weight 0, so the sample grid can name the partner.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import kernels
from .base import MixedBatch, MixMethod, check_prob
from .params import BlendParams, coin, permutation

__all__ = ["SamplePairing"]


class SamplePairing(MixMethod):
    params_type = BlendParams
    name = "samplepairing"

    def __init__(self, *, prob: float = 1.0, num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob = check_prob(prob)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> BlendParams:
        """Draw, in this order: the switch coin, the partners."""
        n = images.shape[0]
        mix = coin(rng, self.prob)
        return BlendParams(mix=mix, perm=permutation(rng, n), lam=torch.full((n,), 0.5))

    def _apply(self, images, labels, params: BlendParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        kernels.blend(images, perm=params.perm, weights=params.lam, backend=backend, tag=self.name)
        return MixedBatch.with_partner(images, labels, params.perm, w_a=torch.ones(len(labels)))  # the first label only
