"""ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and
True Labels", arXiv 2012.11101, 2020, Sec. 3): the *whole* partner image, downscaled by a
scale rate tau ~ U(alpha, beta), is pasted at a random place of each sample, and the
labels are the pasted area's share:

    P = Resize(x_j, tau),   x~_i = Paste(P, x_i),   w_b = |P| / (H W),   w_a = 1 - w_b

Defaults as the paper and its release: (alpha, beta) = (0.1, 0.8), every batch mixed
(prob 1.0; the release has no switch). As the release does it: tau drawn once per batch, partners by a random permutation
(self-pairs allowed), the patch floor(tau H) x floor(tau W) (at least 1 pixel), and a
paste location per sample: a centre drawn uniformly in the image, the box then moved
back inside so the whole patch shows (so it sits on a border more often than a uniform
corner would). Area labels, so they sum to 1.

One difference from the release by default: the resize is bilinear (align_corners=False),
done by the paste kernel (``kernels.paste_resized``) on both devices; the release calls
``F.interpolate(x, scale_factor=tau)``, whose default mode is nearest. ``resize="nearest"``
does what the release does: that call on the clean batch, then each sample's patch
written at its place (for a patch under one pixel, where the release's call fails, the
pixel is the one nearest the origin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import kernels
from .base import MixedBatch, MixMethod, check_prob
from .boxes import area_share
from .params import BoxParams, coin, permutation

__all__ = ["ResizeMix", "ResizeParams"]

RESIZES = ("bilinear", "nearest")


@dataclass(frozen=True)
class ResizeParams(BoxParams):
    """BoxParams (the whole partner ``src_box`` into ``dst_box``) and ``tau``, the scale
    rate the nearest resize takes as the release does (``scale_factor=tau``)."""

    tau: float

    def check(self, *, n: int, height: int, width: int) -> None:
        super().check(n=n, height=height, width=width)
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")


class ResizeMix(MixMethod):
    params_type = ResizeParams
    name = "resizemix"

    def __init__(self, *, prob: float = 1.0, scale: tuple[float, float] = (0.1, 0.8), resize: str = "bilinear",
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob = check_prob(prob)
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        self.resize = resize
        try:
            lo, hi = (float(v) for v in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be two numbers (alpha, beta), got {scale!r}") from None
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale must satisfy 0 < alpha <= beta <= 1, got {scale!r}")
        self.scale = (lo, hi)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> ResizeParams:
        """Draw, in this order: the switch coin, the partners, tau, each sample's centre."""
        n, _, height, width = images.shape
        mix = coin(rng, self.prob)
        perm = permutation(rng, n)
        tau = rng.uniform(*self.scale)
        h, w = max(1, int(height * tau)), max(1, int(width * tau))
        cy, cx = rng.integers(0, height, size=n), rng.integers(0, width, size=n)
        y0 = np.clip(cy - h // 2, 0, height - h)  # moved back inside: the whole patch shows
        x0 = np.clip(cx - w // 2, 0, width - w)
        dst = torch.from_numpy(np.stack([y0, y0 + h, x0, x0 + w], 1).astype(np.int64))
        src = torch.tensor([[0, height, 0, width]], dtype=torch.int64).expand(n, 4).contiguous()
        return ResizeParams(mix=mix, perm=perm, src_box=src, dst_box=dst, tau=float(tau))

    def _apply(self, images, labels, params: BoxParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        n, _, h, w = images.shape
        if self.resize == "nearest":
            paste_nearest(images, params, tag=self.name)
        else:
            kernels.paste_resized(images, perm=params.perm, src_box=params.src_box, dst_box=params.dst_box,
                                  align_corners=False, backend=backend, tag=self.name)
        return MixedBatch.with_partner(images, labels, params.perm, w_b=area_share(params.dst_box, h, w).float())


def paste_nearest(images: torch.Tensor, params: ResizeParams, *, tag: str) -> None:
    """The release's resize and paste, in place: the clean batch through
    ``F.interpolate(scale_factor=tau)`` (nearest), then each sample's partner patch written
    into its box (one patch size for the batch)."""
    d = params.dst_box.tolist()
    ph, pw = d[0][1] - d[0][0], d[0][3] - d[0][2]
    with kernels.nvtx_range(f"{tag}/paste_nearest"):
        if min(images.shape[2] * params.tau, images.shape[3] * params.tau) >= 1:
            small = F.interpolate(images, scale_factor=params.tau)
        else:  # the release's call would fail: the one pixel nearest the origin
            small = images[:, :, :ph, :pw].clone()
        small = small[:, :, :ph, :pw]
        perm = params.perm.to(images.device)
        for i, (y0, y1, x0, x1) in enumerate(d):
            images[i, :, y0:y1, x0:x1] = small[perm[i]]
