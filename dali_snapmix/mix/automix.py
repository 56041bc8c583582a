"""AutoMix (Liu, Li, Wu et al., "AutoMix: Unveiling the Power of Mixup for Stronger
Classifiers", ECCV 2022): a small network, the Mix Block, learns where each mixed image
takes its pixels from, from the features of a momentum copy of the classifier.

The Mix Block (the release's ``PixelMixBlock``, Westlake-AI/openmixup
``openmixup/models/heads/pmix_block.py``, with its fine-grained configs' settings: CUB-200
``r18_l2_a2_near_lam_cat_mb_mlr5e_4_1xb16_ep200.py``), for features z (N, C, h, w) of a
batch, its partners z[perm] and a mixing ratio lam:

    z_a = [z, lam],  z_b = [z[perm], 1 - lam]          lam as an extra channel (``lam_concat``)
    q = W_q z_a,  k = W_q z_b                          one 1 x 1 conv for both (C + 1 -> C / 2)
    P = softmax_rows(q^T k / sqrt(C / 2))              (N, hw, hw) attention
    v = W_v z_b                                        a 1 x 1 conv to one channel
    m_b = sigmoid(U(P v))                              the partner's weight per pixel, U a nearest
                                                       upsampling by the feature map's stride
    x~ = (1 - m_b) x + m_b x[perm]

and its mask loss on the batch's mean: max(|1 - mean(m_b) - lam| - 0.1, 0) (L1, margin 0.1),
weighted 0.1 and annealed to 0 by a cosine in the CUB config. Both convs start from
N(0, 0.01) weights and zero biases, as the release initialises them.

The momentum pipeline's schedules, by iteration as the release's hooks: the teacher's
momentum held at 0.999 for the first 10 % of the iterations, then
0.99999 - (0.99999 - 0.999) (cos(pi k / K) + 1) / 2 (``CosineScheduleHook``, adjust scope
[0.1, 1], constant warm-up), applied to the parameters after each step (``ema_update``:
p_k <- m p_k + (1 - m) p_q; buffers are the teacher's own, as the release's); the mask
loss's weight 0.1 (cos(pi k / K) + 1) / 2 (``CustomCosineAnnealingHook`` to 0).

What is here so far: the Mix Block, its mask loss, the schedules and the EMA update. The
trainer mode (two lambdas and two partners per step, the teacher's mixed loss that trains
the Mix Block, the fallback to Mixup at lam <= 0.08 or >= 0.92, the Mix Block's own
optimiser, checkpoints) is not built yet.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MixBlock", "ema_update", "mask_loss", "mask_loss_weight_at", "momentum_at"]


class MixBlock(nn.Module):
    """The Mix Block on features of ``in_channels`` channels (see the module docstring):
    ``reduction`` divides the attention's width, ``lam_concat`` gives lam to the query, key
    and value as a channel (the fine-grained and ImageNet configs; the CIFAR ones do not),
    ``upsample`` "nearest" (AutoMix) or "bilinear" (the sigmoid after the upsampling, as the
    release)."""

    def __init__(self, in_channels: int, *, reduction: int = 2, lam_concat: bool = True, use_scale: bool = True,
                 upsample: str = "nearest") -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive int, got {reduction!r}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        self.in_channels, self.lam_concat, self.use_scale, self.upsample = in_channels, bool(lam_concat), bool(use_scale), upsample
        self.inter_channels = max(in_channels // reduction, 1)
        width = in_channels + 1 if self.lam_concat else in_channels
        self.query = nn.Conv2d(width, self.inter_channels, 1)
        self.value = nn.Conv2d(width, 1, 1)
        for conv in (self.query, self.value):  # the release's init: normal(0, 0.01), bias 0
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: torch.Tensor, lam: float, perm: torch.Tensor, *, scale_factor: int) -> torch.Tensor:
        """The partner's weight m_b, float32 (N, 1, h * scale_factor, w * scale_factor), in
        (0, 1): features (N, C, h, w), lam the own image's share, perm int64 (N,)."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f"features must be (N, {self.in_channels}, h, w), got {tuple(features.shape)}")
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam!r}")
        n, _, h, w = features.shape
        z_a, z_b = features, features[perm.to(features.device)]
        if self.lam_concat:
            block = torch.full((n, 1, h, w), float(lam), dtype=features.dtype, device=features.device)
            z_a, z_b = torch.cat([z_a, block], 1), torch.cat([z_b, 1 - block], 1)
        v = self.value(z_b).flatten(2).transpose(1, 2)  # (N, hw, 1)
        q = self.query(z_a).flatten(2).transpose(1, 2)  # (N, hw, C')
        k = self.query(z_b).flatten(2)  # (N, C', hw): the release's key is the query conv
        att = torch.matmul(q.float(), k.float())  # float32 as the release forces it (fp16 overflows)
        if self.use_scale:
            att = att / self.inter_channels ** 0.5
        m = torch.matmul(att.softmax(-1), v.float()).view(n, 1, h, w)
        m = F.interpolate(m, scale_factor=scale_factor, mode=self.upsample)
        return torch.sigmoid(m)


def mask_loss(mask_b: torch.Tensor, lam: float, *, margin: float = 0.1) -> torch.Tensor:
    """The release's L1 mask loss on the batch's mean: max(|1 - mean(m_b) - lam| - margin, 0)
    for the partner's weights ``mask_b`` (N, 1, H, W) and the own share lam (scalar tensor)."""
    return torch.clamp((1 - mask_b.mean() - lam).abs() - margin, min=0.0)


def _check_step(step: int, total: int) -> None:
    if not isinstance(total, int) or total < 1 or not isinstance(step, int) or not 0 <= step <= total:
        raise ValueError(f"step must be an int in [0, total], total a positive int; got step={step!r}, total={total!r}")


def momentum_at(step: int, total: int, *, base: float = 0.999, end: float = 0.99999,
                scope: tuple[float, float] = (0.1, 1.0)) -> float:
    """The teacher's momentum before iteration ``step`` of ``total`` (the release's
    ``CosineScheduleHook`` with a constant warm-up): ``base`` until ``scope[0]`` of the run,
    then ``end - (end - base) (cos(pi step / K) + 1) / 2`` up to K = ``scope[1]`` of it
    (the cosine runs over the whole of [0, K], so it starts a little above ``base``)."""
    _check_step(step, total)
    if not 0.0 <= base <= end <= 1.0:
        raise ValueError(f"momenta must satisfy 0 <= base <= end <= 1, got base={base!r}, end={end!r}")
    lo = int(total * scope[0]) if scope[0] > 0 else 0
    hi = int(total * scope[1]) if scope[1] < 1 else total
    if step < lo:
        return float(base)
    if step > hi:  # past the scope the hook leaves the last value
        step = hi
    return float(end - (end - base) * (math.cos(math.pi * step / hi) + 1) / 2)


def mask_loss_weight_at(step: int, total: int, *, base: float = 0.1, end: float = 0.0) -> float:
    """The mask loss's weight at iteration ``step`` of ``total``: ``base`` annealed to
    ``end`` by a cosine (the release's ``CustomCosineAnnealingHook``, by iteration)."""
    _check_step(step, total)
    return float(end + 0.5 * (base - end) * (math.cos(math.pi * step / total) + 1))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """p_teacher <- momentum p_teacher + (1 - momentum) p_student for every parameter (the
    release's ``momentum_update``; buffers such as BatchNorm's statistics stay the
    teacher's own, updated by its own forwards)."""
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    t, s = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t.keys() != s.keys() or any(t[k].shape != s[k].shape for k in t):
        bad = sorted(t.keys() ^ s.keys()) or [k for k in t if t[k].shape != s[k].shape]
        raise ValueError(f"teacher and student must have the same parameters; they differ at {bad[:3]}")
    for k, p in t.items():
        p.mul_(momentum).add_(s[k].detach(), alpha=1.0 - momentum)
