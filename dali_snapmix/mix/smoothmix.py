"""SmoothMix (Lee, Zaheer, Astrid, Lee, "SmoothMix: a Simple Yet Effective Data
Augmentation to Train Robust Classifiers", CVPR Workshops 2020, Sec. 3): the partner is
blended in through a smooth-edged mask G in [0, 1] instead of CutMix's hard box,

    x~ = (1 - G) x_a + G x_b,   lam = sum G / (H W),   labels (y_a, y_b) weighted (1 - lam, lam)

The circular (Gaussian) mask, G(y, x) = exp(-((y - c_y)^2 / sigma_y^2 + (x - c_x)^2 /
sigma_x^2) / 2) with sigma = s (H, W), s ~ U(0.25, 0.5), the centre on a pixel drawn
uniformly, one mask per batch, partners by a random permutation, every batch mixed:
the parameterisation of OpenMixup's ``smoothmix``, the one public implementation (there is
no official release; the paper's exact parameterisation is not accessible here).
``per_sample=True`` draws a mask per sample.

Differences from OpenMixup: its weights are swapped (it blends the partner in by G but
gives lam = mean G to the *own* label); here the partner's label gets mean G. Its centre
sits half a pixel off the pixel grid and it takes square images only; here the centre is
a pixel's and sigma scales with each side. The paper's square smooth mask is not
implemented: its edge profile is not in any source at hand.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import check_prob
from .masks import MaskMethod, mask_params
from .params import MaskParams, coin, permutation

__all__ = ["SmoothMix", "gaussian_masks"]


def gaussian_masks(centres: torch.Tensor, sigmas: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """float64 (n, H, W): exp(-((y - cy)^2 / (s H)^2 + (x - cx)^2 / (s W)^2) / 2) for each
    row (cy, cx) of ``centres`` and s of ``sigmas``."""
    yy = torch.arange(height, dtype=torch.float64)[None, :, None]
    xx = torch.arange(width, dtype=torch.float64)[None, None, :]
    cy, cx = (centres[:, j, None, None].double() for j in (0, 1))
    s = sigmas.double()[:, None, None]
    return torch.exp(-0.5 * (((yy - cy) / (s * height)) ** 2 + ((xx - cx) / (s * width)) ** 2))


class SmoothMix(MaskMethod):
    name = "smoothmix"

    def __init__(self, *, prob: float = 1.0, sigma: tuple[float, float] = (0.25, 0.5), per_sample: bool = False,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.per_sample = check_prob(prob), bool(per_sample)
        try:
            lo, hi = (float(v) for v in sigma)
        except (TypeError, ValueError):
            raise ValueError(f"sigma must be two numbers (low, high), got {sigma!r}") from None
        if not 0.0 < lo <= hi:
            raise ValueError(f"sigma must satisfy 0 < low <= high, got {sigma!r}")
        self.sigma = (lo, hi)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> MaskParams:
        """Draw, in this order: the switch coin, the partners, the sigmas, the centres (y, x)."""
        n, _, height, width = images.shape
        k = n if self.per_sample else 1
        mix = coin(rng, self.prob)
        perm = permutation(rng, n)
        sigmas = torch.from_numpy(rng.uniform(*self.sigma, size=k))
        centres = torch.from_numpy(np.stack([rng.integers(0, height, size=k), rng.integers(0, width, size=k)], 1))
        g = gaussian_masks(centres, sigmas, height=height, width=width)
        # the own image keeps 1 - G
        return mask_params(mix=mix, perm=perm, masks=(1.0 - g).float(), w_a=(1.0 - g.mean((1, 2))).float())
