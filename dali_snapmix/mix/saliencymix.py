"""SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy for
Better Regularization", ICLR 2021, Sec. 3, Eq. 1-4): CutMix's box, centred on the peak of
the *source* image's saliency map and pasted into the same place of the target:

    lam ~ Beta(beta, beta),   (y_s, x_s) = argmax S(x_b),   box of sides int(H sqrt(1 - lam))
    x int(W sqrt(1 - lam)) around it, clipped to the image,
    x~ = M * x_a + (1 - M) * x_b inside-out,   labels (y_a, y_b) with (1 - A, A), A = box area / (H W)

S is the static fine-grained saliency the paper picked (Montabone and Soto; OpenCV-contrib's
``StaticSaliencyFineGrained``), here :func:`saliency.fine_grained_saliency`, batched in
torch on the batch's device and equal to OpenCV's map (see that module), computed on the
images brought back to 8-bit levels (``mean``, ``std``: the loader's normalisation). The
peak is the first maximum in row-major order, as ``np.argmax``. Defaults as the paper's
ImageNet runs: beta 1, every batch mixed (prob 1.0; 0.5 in its CIFAR runs), one lam and one
random permutation per batch (self-pairs allowed), the box clipped at borders (shrunk, not
moved) and the labels by its area.

``semantics="paper"`` (default): each sample's box around its own source's peak.
``semantics="released"``: as the official code, one saliency map per batch, of the first
sample's source (``images[perm[0]]``), whose box every sample then uses.

Two things the official code does that neither option copies: it hands OpenCV the
*normalised float32* tensor, while the detector reads its grey image as 8-bit (in
OpenCV's source, ``gray.at<uchar>``), so the release's map is not the image's saliency
(on 13 images at 224 x 224 its correlation with the 8-bit image's map had median -0.003,
range -0.056 .. +0.090, and no peak fell on the same pixel: ``python
benchmarks/saliency_release.py``); and it passes RGB where OpenCV assumes BGR.
Both options take the map of the 8-bit RGB image, as the paper describes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.spec import IMAGENET_MEAN, IMAGENET_STD, check_normalisation
from .base import MixedBatch, MixMethod, check_beta, check_prob
from .boxes import area_share, boxes_around
from .params import BoxParams, coin, paste_boxes, permutation
from .saliency import fine_grained_saliency, to_levels

__all__ = ["SaliencyMix", "saliency_peaks"]

SEMANTICS = ("paper", "released")


def saliency_peaks(images: torch.Tensor, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """int64 (N, 2) on the host: each image's (y, x) saliency peak, the first maximum of
    its fine-grained saliency map in row-major order."""
    maps = fine_grained_saliency(to_levels(images, mean=mean, std=std))
    flat = maps.flatten(1).argmax(1).cpu()  # torch.argmax: the first maximal value
    w = images.shape[3]
    return torch.stack([flat // w, flat % w], 1)


class SaliencyMix(MixMethod):
    params_type = BoxParams
    name = "saliencymix"

    def __init__(self, *, prob: float = 1.0, beta: float = 1.0, semantics: str = "paper", mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob, self.beta = check_prob(prob), check_beta(beta)
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        self.semantics = semantics
        self.mean, self.std = check_normalisation(mean, std)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> BoxParams:
        """Draw, in this order (the release's): the switch coin, lam, the partners; then
        the boxes around the sources' saliency peaks (no saliency when the coin says no)."""
        n, _, h, w = images.shape
        mix = coin(rng, self.prob)
        lam = rng.beta(self.beta, self.beta)
        perm = permutation(rng, n)
        if not mix:
            box = torch.zeros(n, 4, dtype=torch.int64)
            return BoxParams(mix=False, perm=perm, src_box=box, dst_box=box)
        sources = perm if self.semantics == "paper" else perm[:1]
        peaks = saliency_peaks(images[sources.to(images.device)], mean=self.mean, std=self.std)
        box = boxes_around(np.full(len(peaks), lam), peaks[:, 0].numpy(), peaks[:, 1].numpy(), height=h, width=w)
        box = box.expand(n, 4).contiguous()  # released: the one box for every sample
        return BoxParams(mix=True, perm=perm, src_box=box, dst_box=box)

    def _apply(self, images, labels, params: BoxParams, *, model=None, backend: str = "auto",
               geometry=None) -> MixedBatch:
        if not params.mix:
            return self.unmixed(images, labels)
        n, _, h, w = images.shape
        paste_boxes(images, params, backend=backend, tag=self.name)  # same-size boxes: a copy
        return MixedBatch.with_partner(images, labels, params.perm, w_b=area_share(params.dst_box, h, w).float())
