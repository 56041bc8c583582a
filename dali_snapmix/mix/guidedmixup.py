"""GuidedMixup (Kang and Kim, "GuidedMixup: An Efficient Mixup Strategy Guided by Saliency
Maps", AAAI 2023, Sec. 3.1-3.3): every pixel mixed in the ratio of the two images'
saliency, partners chosen so that their salient regions differ most.

    S_i = normalise_sum(smooth(saliency(x_i)))                           (Sec. 3.1)
    partner: a single cycle through the batch, greedily along the largest
             ||S_i - S_j||_2 (the paper's O(B^2) cover, Sec. 3.3)
    M_a = S_a / (S_a + S_b),   x~ = M_a x_a + (1 - M_a) x_b,             (Sec. 3.2)
    labels (y_a, y_b) weighted (mean M_a, 1 - mean M_a)

Guided-SR (``variant="sr"``): S from the spectral residual (:func:`saliency.spectral_residual`,
as the release computes it: a 128 x 128 cap and a 7 x 7, sigma 3 smoothing inside), then
smoothed again (7, sigma 3) as the release's mixing code does; ``prob`` 0.5. Guided-AP
(``variant="ap"``): S the input gradient of the clean batch's loss
(:func:`saliency.input_gradient`: one forward and backward of the model being trained, in
train mode as the release, ``saliency_bn="eval"`` for PuzzleMix's way), smoothed once;
``prob`` 0.8. Defaults as the release's FGVC commands: one coin per batch, greedy pairing
over the whole batch, the L2 distance. Guided-SR's params (partners and masks) are drawn
before the model is asked anything; Guided-AP's saliency needs the model, so its params
(:class:`GuidedParams`) hold the coin and any random partners, and ``apply`` derives the
masks (``resolve`` returns them as MaskParams). The pass leaves no gradient: the release's
``clean_lam`` (the clean batch's loss kept in the step) is the trainer's ``--clean-lam``,
which runs a clean forward of its own (in train mode BatchNorm then sees the clean batch
once more than in the release, whose saliency pass serves both).

Greedy pairing, done as the paper describes it and on the batch's device: start at the
largest off-diagonal distance i -> j, then from each new image to its farthest image not
yet in the cycle, and close the cycle: a derangement, one cycle (B >= 2). The release's
FGVC ``greedy`` masks visited images with 0, which equals -inf while every distance is
positive (tested) but revisits an image when a row's remaining distances are all 0 (two
identical maps); here visited images are -inf. Its CIFAR code asks for greedy and
silently runs random pairing (``pairing="random"`` is that: a random permutation).

Where the release divides by a sum that can be zero (the sum-to-one normalisation, and
S_a + S_b at a pixel where both are 0) it makes NaNs; here an all-zero map stays zero and
such a pixel takes half of each image.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import check_prob
from .masks import MaskMethod
from .params import MaskParams, PartnerParams, coin, permutation
from .saliency import check_smoothing, input_gradient, normalise_sum, smooth, spectral_residual

__all__ = ["GuidedMixup", "GuidedParams", "greedy_cycle", "guided_masks"]

PAIRINGS = ("greedy", "random")
VARIANTS = ("sr", "ap")
DEFAULT_PROB = {"sr": 0.5, "ap": 0.8}  # the release's FGVC README commands


GuidedParams = PartnerParams  # Guided-AP before its saliency pass: the coin, and the partners for random pairing


def greedy_cycle(dist: torch.Tensor) -> torch.Tensor:
    """int64 (B,) on ``dist``'s device: each image's partner along the greedy single cycle
    over the (B, B) distances (see the module docstring). B = 1: itself. The walk stays on
    the device: B small steps of masked argmax, no copy to the host."""
    b = dist.shape[0]
    if dist.dim() != 2 or dist.shape[1] != b:
        raise ValueError(f"dist must be a square (B, B) matrix, got shape {tuple(dist.shape)}")
    dev = dist.device
    if b == 1:
        return torch.zeros(1, dtype=torch.int64, device=dev)
    d = dist.double().clone()
    d.fill_diagonal_(-torch.inf)
    partner = torch.empty(b, dtype=torch.int64, device=dev)
    flat = d.flatten().argmax()  # the first maximum in row-major order, as np.argmax
    first, col = flat // b, flat % b
    partner[first] = col
    d[:, first] = -torch.inf  # nobody returns to the start before the end
    row = col
    for _ in range(b - 2):
        d[:, row] = -torch.inf
        nxt = d[row].argmax()
        partner[row] = nxt
        row = nxt
    partner[row] = first
    return partner


def guided_masks(sal: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """float32 (N, H, W): M_a = S_a / (S_a + S_b) with S_b = sal[perm]; 1/2 where both are 0."""
    other = sal[perm.to(sal.device)]
    total = sal + other
    return torch.where(total > 0, sal / total.clamp_min(torch.finfo(sal.dtype).tiny), torch.full_like(sal, 0.5))


class GuidedMixup(MaskMethod):
    name = "guidedmixup"

    def __init__(self, *, variant: str = "sr", prob: float | None = None, pairing: str = "greedy", kernel: int = 7,
                 sigma: float = 3.0, saliency_bn: str = "train", num_classes: int | None = None,
                 seed: int | None = None) -> None:
        """``prob``: None for the variant's release default (SR 0.5, AP 0.8)."""
        super().__init__(num_classes=num_classes, seed=seed)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
        check_smoothing(kernel, sigma)
        if saliency_bn not in ("train", "eval"):
            raise ValueError(f"saliency_bn must be 'train' or 'eval', got {saliency_bn!r}")
        self.variant, self.pairing = variant, pairing
        self.prob = check_prob(DEFAULT_PROB[variant] if prob is None else prob)
        self.kernel, self.sigma, self.saliency_bn = int(kernel), float(sigma), saliency_bn
        self.name = f"guided-{variant}"
        self.params_type = PartnerParams if variant == "ap" else MaskParams

    def saliency(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, model=None) -> torch.Tensor:
        """S, float32 (N, H, W) on the images' device: smoothed and summing to 1."""
        if self.variant == "ap":
            if model is None:
                raise ValueError("Guided-AP's saliency is the model's input gradient: apply it with model=")
            raw = input_gradient(model, images, labels, bn=self.saliency_bn)
        else:
            raw = spectral_residual(images)
        with torch.no_grad():
            return normalise_sum(smooth(raw, kernel=self.kernel, sigma=self.sigma))

    def _masks(self, sal: torch.Tensor, perm: torch.Tensor | None) -> MaskParams:
        """The mixed batch's params from S: greedy partners unless given, the masks, their means."""
        with torch.no_grad():
            if perm is None:
                flat = sal.flatten(1)[None]
                perm = greedy_cycle(torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")[0]).cpu()
            masks = guided_masks(sal, perm)
        return MaskParams(mix=True, perm=perm, masks=masks, w_a=masks.mean((1, 2)).float().cpu())

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
        """Draw, in this order: the switch coin, then (random pairing) the partners; for
        Guided-SR the saliency, the greedy partners and the masks follow from the images."""
        mix = coin(rng, self.prob)
        params = PartnerParams(mix=mix, perm=permutation(rng, len(images)) if mix and self.pairing == "random" else None)
        return params if self.variant == "ap" else self.resolve(images, labels, params)

    def _resolve_masks(self, images: torch.Tensor, labels: torch.Tensor, params: PartnerParams, *,
                       model=None) -> MaskParams:
        """Guided-SR's masks from the images; Guided-AP's from the model's saliency (its
        BatchNorm statistics move in train mode: resolve once per batch)."""
        return self._masks(self.saliency(images, labels, model=model), params.perm)
