"""AttentiveMix (Walawalkar, Shen, Liu and Savvides, "Attentive CutMix: An Enhanced Data
Augmentation Approach for Deep Learning Based Image Classification", ICASSP 2020): the
partner's most attended cells of a grid over the image, pasted in place.

    A_j = x_j's attention, averaged over each cell of a grid x grid lattice (7 x 7)
    for sample i and its partner j = perm[i]: C = the top-k cells of A_j (k = 6)
    x~_i = x_j on C, x_i elsewhere;  labels (y_i, y_j) weighted (1 - s, s),
    s = C's share of the image's pixels (k / 49 where 7 divides the side, the paper's lam)

The attention, from one of two sources:

* the model being trained (default): each image's class activation map of its own class,
  from SnapMix's map source (:class:`~dali_snapmix.mix.cam_source.ExactCAMs`: one no-grad
  forward of the clean batch, in eval mode by default: ``attention_mode``; the head found
  in the model, or ``cam_head=``);
* ``attention_model=``: a fixed pretrained network, as the paper (an ImageNet ResNet-50),
  frozen in eval mode, fed the batch bilinearly resized to ``attention_size`` (224, the
  paper's) and re-normalised from the batch's ``mean``/``std`` to its own
  ``attention_mean``/``attention_std``; its attention is the channel mean of its last
  feature map (openmixup's reading: a fixed model does not know the dataset's classes).

Cells: pixel row r lies in cell floor(r * grid / H), as nearest-neighbour upsampling of
the cell mask (the paper's 32-pixel cells at 224). A map of another size than the grid is
averaged into the cells by ``adaptive_avg_pool2d`` (a 7 x 7 map is the grid itself; a 14 x 14
one is averaged 2 x 2). Ties between cells go to the first in row-major order.
Defaults as the paper and openmixup: k 6 of 7 x 7, every batch mixed (prob 1.0), one
random permutation per batch (self-pairs allowed).

No official code was found. The unofficial xden2331/attentive_cutmix (a ResNet-50 forward
per image inside the data loader) takes the *last channel* of the feature map as the
attention and feeds the network unnormalised images; both look like bugs and are not
copied. openmixup's AttentiveMix+ (k = lam grid^2, lam ~ Beta) is not implemented.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import kernels
from ..data.spec import IMAGENET_MEAN, IMAGENET_STD, check_normalisation, unnormalise
from .base import check_prob
from .cam import CAMHead
from .cam_source import ExactCAMs
from .masks import MaskMethod
from .params import MaskParams, PartnerParams, coin, permutation

__all__ = ["AttentiveMix", "cell_masks", "top_cells"]


def top_cells(attention: torch.Tensor, *, k: int, grid: int) -> torch.Tensor:
    """bool (N, grid, grid): each map's k highest cells after averaging (N, h, w) into the
    grid; ties to the first cell in row-major order."""
    if not bool(torch.isfinite(attention).all()):
        bad = int((~torch.isfinite(attention)).flatten(1).any(1).nonzero()[0, 0])
        raise ValueError(f"the attention map of sample {bad} is not finite (has the model diverged?)")
    cells = F.adaptive_avg_pool2d(attention[:, None].double(), grid)[:, 0].flatten(1)
    order = torch.sort(cells, dim=1, descending=True, stable=True).indices[:, :k]
    chosen = torch.zeros_like(cells, dtype=torch.bool).scatter_(1, order, True)
    return chosen.view(-1, grid, grid)


def cell_masks(chosen: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """bool (N, H, W): the chosen cells of (N, g, g) at pixel resolution (row r in cell
    floor(r g / H), column c in cell floor(c g / W))."""
    g = chosen.shape[1]
    dev = chosen.device
    rows = torch.arange(height, device=dev) * g // height
    cols = torch.arange(width, device=dev) * g // width
    return chosen[:, rows][:, :, cols]


class AttentiveMix(MaskMethod):
    name = "attentivemix"
    params_type = PartnerParams

    def __init__(self, *, k: int = 6, grid: int = 7, prob: float = 1.0, attention_model: nn.Module | None = None,
                 cam_head: CAMHead | None = None, attention_size: int = 224, attention_mean=IMAGENET_MEAN, attention_std=IMAGENET_STD,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, attention_mode: Literal["train", "eval"] = "eval",
                 autocast: bool = False, channels_last: bool | None = None, num_classes: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
            raise ValueError(f"grid must be a positive int, got {grid!r}")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= grid * grid:
            raise ValueError(f"k must be an int in [1, grid^2 = {grid * grid}], got {k!r}")
        if not isinstance(attention_size, int) or attention_size < 1:
            raise ValueError(f"attention_size must be a positive int, got {attention_size!r}")
        if attention_mode not in ("train", "eval"):
            raise ValueError(f"attention_mode must be 'train' or 'eval', got {attention_mode!r}")
        if attention_model is not None and not isinstance(attention_model, nn.Module):
            raise ValueError(f"attention_model must be an nn.Module, got {type(attention_model).__name__}")
        self.k, self.grid, self.prob, self.attention_size = k, grid, check_prob(prob), attention_size
        self.mean, self.std = check_normalisation(mean, std)
        self.attention_mean, self.attention_std = check_normalisation(attention_mean, attention_std)
        # the CAM pass of the model being trained (unused with a fixed attention model)
        self.cam_pass = ExactCAMs(head=cam_head, mode=attention_mode, autocast=autocast, channels_last=channels_last, tag=self.name)
        self.attention_model = attention_model
        self._fixed_head: CAMHead | None = None
        if attention_model is not None:  # frozen; the cells follow from the images, at sampling
            attention_model.eval().requires_grad_(False)
            self._fixed_head = CAMHead.of(attention_model)
            self.params_type = MaskParams

    def attention(self, images: torch.Tensor, labels: torch.Tensor, *, model=None) -> torch.Tensor:
        """(N, h, w) attention of every image of the batch (see the module docstring)."""
        if self.attention_model is None:
            if model is None:
                raise ValueError("AttentiveMix's attention is the model's CAMs: apply it with model=, or give "
                                 "attention_model= (a fixed pretrained network)")
            return self.cam_pass.exact(images, labels, model)
        dev = images.device
        am = torch.tensor(self.attention_mean, device=dev)[:, None, None]
        ast = torch.tensor(self.attention_std, device=dev)[:, None, None]
        with torch.no_grad(), kernels.nvtx_range(f"{self.name}/attention"):
            x = (unnormalise(images, self.mean, self.std) - am) / ast
            size = self.attention_size
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return self._fixed_head.features(x).float().mean(1)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
        """Draw, in this order: the switch coin, the partners; the cells follow from the
        attention (the model's CAMs when ``apply`` or ``resolve`` gets the model; a fixed
        attention model's at once)."""
        mix = coin(rng, self.prob)
        params = PartnerParams(mix=mix, perm=permutation(rng, len(images)))
        return params if self.attention_model is None else self.resolve(images, labels, params)

    def _resolve_masks(self, images: torch.Tensor, labels: torch.Tensor, params: PartnerParams, *,
                       model=None) -> MaskParams:
        n, _, h, w = images.shape
        perm = params.perm
        with torch.no_grad():
            att = self.attention(images, labels.to(images.device), model=model)
            pasted = cell_masks(top_cells(att[perm.to(att.device)], k=self.k, grid=self.grid), height=h, width=w)
            share = pasted.flatten(1).sum(1).double() / (h * w)
        masks = (~pasted).float()
        return MaskParams(mix=True, perm=perm, masks=masks, w_a=(1.0 - share).float().cpu())
