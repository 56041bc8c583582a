"""RICAP, Random Image Cropping And Patching (Takahashi, Matsubara and Uehara, "Data
Augmentation using Random Image Cropping and Patching for Deep CNNs", arXiv 1811.09030,
ACML 2018, Sec. 3.1): a boundary point (h, w) splits the image into four regions, each
filled with a crop of the same size from another image of the batch, and the label
is the four classes weighted by their regions' areas (K = 4 labels):

    h = round(H Beta(beta, beta)),  w = round(W Beta(beta, beta))
    regions (h, w), (h, W - w), (H - h, w), (H - h, W - w);   W_k = |region k| / (H W)
    loss = sum_k W_k CE(logits, y_k)

Defaults as the release: beta 0.3, every batch (prob 1.0; the release has no switch).
As the release does it: the boundary drawn once per batch; for each region an
independent random permutation of the batch and one crop offset shared by the batch,
drawn uniformly among the offsets that keep the crop inside its image. The four
sources need not differ: a sample may get its own image, or one partner, in several
regions, and its labels then repeat a class (the loss adds the weights). The release
names the height split ``w``; here ``h`` splits the height and ``w`` the width.

Torch gathers and slice copies on either device (no kernel: nothing is resized).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import MixedBatch, MixMethod, check_beta, check_prob
from .params import _check_perm, coin, permutation

__all__ = ["RICAP", "RICAPParams"]


def region_sizes(h: int, w: int, height: int, width: int) -> list[tuple[int, int]]:
    """(rows, columns) of the four regions around the boundary (h, w): top-left,
    top-right, bottom-left, bottom-right."""
    return [(h, w), (h, width - w), (height - h, w), (height - h, width - w)]


@dataclass(frozen=True)
class RICAPParams:
    """``mix`` (the switch coin); ``boundary`` (h, w); ``perms`` int64 (4, N), region k
    of sample i coming from image ``perms[k, i]``; ``offsets`` int64 (4, 2), the (y, x)
    of region k's crop in its source image. Regions: 0 top-left, 1 top-right, 2
    bottom-left, 3 bottom-right."""

    mix: bool
    boundary: tuple[int, int]
    perms: torch.Tensor
    offsets: torch.Tensor

    def sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(rows, columns) of the four regions."""
        return region_sizes(*self.boundary, height, width)

    def check(self, *, n: int, height: int, width: int) -> None:
        h, w = self.boundary
        if not (0 <= h <= height and 0 <= w <= width):
            raise ValueError(f"boundary must lie in the {height}x{width} images, got {self.boundary}")
        if not isinstance(self.perms, torch.Tensor) or tuple(self.perms.shape) != (4, n):
            raise ValueError(f"perms must be an int64 tensor of shape (4, {n}), got {tuple(getattr(self.perms, 'shape', ()))}")
        for k in range(4):
            _check_perm(self.perms[k], n)
        if not isinstance(self.offsets, torch.Tensor) or tuple(self.offsets.shape) != (4, 2):
            raise ValueError(f"offsets must be an int64 tensor of shape (4, 2), got {tuple(getattr(self.offsets, 'shape', ()))}")
        for k, ((rh, rw), (oy, ox)) in enumerate(zip(self.sizes(height, width), self.offsets.tolist())):
            if not (0 <= oy <= height - rh and 0 <= ox <= width - rw):
                raise ValueError(f"offsets[{k}] = {[oy, ox]} puts the {rh}x{rw} crop outside the {height}x{width} images")


class RICAP(MixMethod):
    params_type = RICAPParams
    name = "ricap"

    def __init__(self, *, prob: float = 1.0, beta: float = 0.3, num_classes: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta = check_prob(prob), check_beta(beta)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> RICAPParams:
        """Draw, in this order: the switch coin, the boundary (height, then width), then for
        each region its permutation and its crop offset (y, then x)."""
        n, _, height, width = images.shape
        mix = coin(rng, self.prob)
        h = int(np.round(height * rng.beta(self.beta, self.beta)))
        w = int(np.round(width * rng.beta(self.beta, self.beta)))
        perms, offsets = [], []
        for rh, rw in region_sizes(h, w, height, width):
            perms.append(permutation(rng, n))
            offsets.append([int(rng.integers(0, height - rh + 1)), int(rng.integers(0, width - rw + 1))])
        return RICAPParams(mix=mix, boundary=(h, w), perms=torch.stack(perms),
                           offsets=torch.tensor(offsets, dtype=torch.int64))

    def _apply(self, images, labels, params: RICAPParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        n, _, height, width = images.shape
        dev = images.device
        perms = params.perms.to(dev)
        h, w = params.boundary
        sizes = params.sizes(height, width)
        corners = [(0, 0), (0, w), (h, 0), (h, w)]
        crops = []  # every region read before any is written: the sources are this batch
        for k, ((rh, rw), (oy, ox)) in enumerate(zip(sizes, params.offsets.tolist())):
            crops.append(images[perms[k], :, oy:oy + rh, ox:ox + rw])
        for (cy, cx), (rh, rw), crop in zip(corners, sizes, crops):
            images[:, :, cy:cy + rh, cx:cx + rw] = crop
        y = labels.to(dev, torch.int64)
        area = torch.tensor([rh * rw / (height * width) for rh, rw in sizes], dtype=torch.float32, device=dev)
        return MixedBatch(images, labels=y[perms].T.contiguous(), weights=area.expand(n, 4).contiguous())
