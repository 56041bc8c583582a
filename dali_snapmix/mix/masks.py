"""What the mask methods (FMix, SmoothMix, the mixed-example family) share: a params object from per-batch or
per-sample masks, and the apply: ``kernels.mask_blend`` and area-of-mask labels."""

from __future__ import annotations

import torch

from .. import kernels
from .base import MixedBatch, MixMethod
from .params import MaskParams, PartnerParams

__all__ = ["MaskMethod", "mask_params"]


def mask_params(*, mix: bool, perm: torch.Tensor, masks: torch.Tensor, w_a: torch.Tensor) -> MaskParams:
    """MaskParams from k masks (k, H, W) and weights (k,): one per sample, or one (k = 1)
    for the whole batch of len(perm), as an expanded view."""
    n = len(perm)
    if len(masks) == 1 and n != 1:
        masks, w_a = masks.expand(n, *masks.shape[1:]), w_a.expand(n).contiguous()
    return MaskParams(mix=mix, perm=perm, masks=masks, w_a=w_a)


class MaskMethod(MixMethod):
    """A method whose params are per-pixel weights: in place, each pixel
    ``m x_i + (1 - m) x_perm[i]``; labels (y, y[perm]) weighted (w_a, 1 - w_a).

    A method whose masks need the model (``params_type = PartnerParams``: Guided-AP,
    AttentiveMix) samples the coin and partners only, and writes ``_resolve_masks``;
    ``resolve`` (and so ``apply``) derives the MaskParams with the model."""

    params_type = MaskParams

    @property
    def resolved_type(self) -> type:
        return MaskParams if self.params_type is PartnerParams else self.params_type

    def _resolve_masks(self, images: torch.Tensor, labels: torch.Tensor, params: PartnerParams, *,
                       model=None) -> MaskParams:
        raise NotImplementedError

    def resolve(self, images: torch.Tensor, labels: torch.Tensor, params, *, model=None) -> MaskParams:
        """PartnerParams' masks from the model (a batch the coin leaves unmixed gets no
        model pass); any other params as given."""
        if not isinstance(params, PartnerParams):
            return params
        if not params.mix:
            n, _, h, w = images.shape
            return MaskParams(mix=False, perm=torch.arange(n), masks=torch.zeros(n, h, w), w_a=torch.ones(n))
        return self._resolve_masks(images, labels, params, model=model)

    def _apply(self, images, labels, params, *, model=None, backend: str = "auto", geometry=None) -> MixedBatch:
        params = self.resolve(images, labels, params, model=model)
        if not params.mix:
            return self.unmixed(images, labels)
        dev = images.device
        if params.masks.dim() == 4:  # one weight per element: a plain torch blend, either device
            if params.masks.shape[1] != images.shape[1]:
                raise ValueError(f"per-element masks have {params.masks.shape[1]} channels, the images "
                                 f"{images.shape[1]}")
            with kernels.nvtx_range(f"{self.name}/element_blend"):
                m = params.masks.to(dev)
                images.copy_((m * images.float() + (1 - m) * images[params.perm.to(dev)].float()).to(images.dtype))
        else:
            kernels.mask_blend(images, perm=params.perm, masks=params.masks.to(dev), backend=backend, tag=self.name)
        return MixedBatch.with_partner(images, labels, params.perm, w_a=params.w_a)
