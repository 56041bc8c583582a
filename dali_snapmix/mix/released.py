"""SnapMix as the authors' released code computes it, transcribed in plain torch
(docs/snapmix_release.md; Huang, Wang, Tao, AAAI 2021).

Not a mixing method: the reference that tests/mix/test_snapmix.py compares :class:`SnapMix`
with, and the ``snapmix-reference`` variant of benchmarks/overhead.py. Written as the
release is: a convolution over all classes, each map upsampled to the full image,
minus its minimum, over its sum (the SPM), slices summed for the weights, and
F.interpolate + slice assignment for the paste. Independent of the package's kernels,
CAM code and weight function.

Given the params (the release draws them inline: ``randperm`` and two boxes), it
applies them. One box pair for the batch, as released; per-sample boxes (which the
release does not have) are applied one sample at a time by the same rules. The one
deliberate difference of :class:`SnapMix` (a self-pair is its own class) is not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import MixedBatch
from .cam import CAMHead
from .params import BoxParams

__all__ = ["released_snapmix", "released_spm"]


@torch.no_grad()
def released_spm(head: CAMHead, images: torch.Tensor, labels: torch.Tensor, *, size: tuple[int, int],
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """get_spm: (N, H, W) semantic percent maps of each sample's own class, in ``dtype``
    from the features on (the release: float32). A constant CAM gives NaN (0 / 0)."""
    fms = F.relu(head.features(images)).to(dtype)
    clf = head.classifier
    out = F.conv2d(fms, clf.weight.to(dtype)[:, :, None, None], bias=None if clf.bias is None else clf.bias.to(dtype))
    maps = torch.stack([out[i, labels[i]] for i in range(len(labels))])
    constant = [bool(m.max() == m.min()) for m in maps]
    maps = F.interpolate(maps[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    for i in range(len(labels)):
        maps[i] -= maps[i].min()
        maps[i] /= maps[i].sum()
        if constant[i]:  # 0 / 0 in exact arithmetic; interpolate's rounding can leave ~1e-8
            maps[i] = float("nan")  # of noise instead, which the division would blow up
    return maps


def released_snapmix(images: torch.Tensor, labels: torch.Tensor, params: BoxParams, *, head: CAMHead,
                     cam_images: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> MixedBatch:
    """Mix ``images`` in place as the release does with ``params``; labels int64 (N,).
    ``cam_images``: what the CAM pass sees, if not ``images`` (a low-resolution copy)."""
    n, _, H, W = images.shape
    perm = params.perm.to(images.device)
    y_b = labels[perm]
    w_a = torch.ones(n, dtype=torch.float64, device=images.device)
    w_b = torch.zeros(n, dtype=torch.float64, device=images.device)
    if not params.mix:
        return MixedBatch(images, labels, y_b, w_a.float(), w_b.float())
    spm = released_spm(head, images if cam_images is None else cam_images, labels, size=(H, W), dtype=dtype)
    dst, src = params.dst_box.tolist(), params.src_box.tolist()
    groups = [list(range(n))] if all(d == dst[0] and s == src[0] for d, s in zip(dst, src)) else [[i] for i in range(n)]
    # a gather copies, so one batch-wide paste reads clean sources; one sample at a time needs a copy
    orig = images if len(groups) == 1 else images.clone()
    for rows in groups:  # the release: one group, the whole batch
        (y0, y1, x0, x1), (a0, a1, b0, b1) = dst[rows[0]], src[rows[0]]
        if (y1 - y0) * (x1 - x0) <= 0 or (a1 - a0) * (b1 - b0) <= 0:
            continue  # no paste, no mix
        r = torch.tensor(rows, device=images.device)
        patch = orig[perm[r], :, a0:a1, b0:b1]
        images[r, :, y0:y1, x0:x1] = F.interpolate(patch, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=True)
        a = 1 - spm[r, y0:y1, x0:x1].sum((1, 2)) / (spm[r].sum((1, 2)) + 1e-8)
        b = spm[perm[r]][:, a0:a1, b0:b1].sum((1, 2)) / (spm[perm[r]].sum((1, 2)) + 1e-8)
        same = labels[r] == y_b[r]
        a, b = torch.where(same, a + b, a), torch.where(same, b + a, b)
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
        w_a[r] = torch.where(torch.isnan(a), torch.full_like(a, lam), a).double()
        w_b[r] = torch.where(torch.isnan(b), torch.full_like(b, 1 - lam), b).double()
    return MixedBatch(images, labels, y_b, w_a.float(), w_b.float())
