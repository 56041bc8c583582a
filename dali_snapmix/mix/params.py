"""Frozen params objects: everything a method drew at random for one batch; how they
are drawn (from a generator the caller passes) and, for boxes, pasted.

``check(n=, height=, width=)`` tells whether a params object fits a batch: ``apply`` runs
it, so params replayed from elsewhere (another batch size, another crop, a hand-made
box) fail with the offending value instead of writing outside a tensor.

Every box method (CutMix, asymmetric CutMix, SnapMix, and those to come) draws its
boxes with :func:`sample_box_params` and pastes them with :func:`paste_boxes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import kernels
from .boxes import box_area, rand_boxes


def _check_tensor(name: str, t, *, shape: tuple, dtypes: tuple) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype not in dtypes:
        raise ValueError(f"{name} must be a {' or '.join(str(d) for d in dtypes)} tensor of shape {shape}, got "
                         f"{getattr(t, 'dtype', type(t).__name__)} of shape {tuple(getattr(t, 'shape', ()))}")


def _check_unit(name: str, t: torch.Tensor) -> None:
    """Every entry in [0, 1] (NaN fails too); the first one outside named with its index."""
    bad = ~((t >= 0) & (t <= 1))
    if bool(bad.any()):
        i = tuple(int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name} must be in [0, 1], got {name}{list(i)} = {float(t[i])}")


def check_grid(block_num: int, height: int, width: int, *, method: str) -> None:
    """A block grid's side n: a positive int dividing both image sides (PuzzleMix, Co-Mixup)."""
    if not isinstance(block_num, int) or block_num < 1:
        raise ValueError(f"block_num must be a positive int, got {block_num!r}")
    if height % block_num or width % block_num:
        raise ValueError(f"{method}'s {block_num} x {block_num} grid needs image sides it divides, got {height} x {width}")


def _check_perm(perm, n: int) -> None:
    """Each sample's partner: an index into the batch (a permutation where the method draws one)."""
    _check_tensor("perm", perm, shape=(n,), dtypes=(torch.int64,))
    if n and (int(perm.min()) < 0 or int(perm.max()) >= n):
        raise ValueError(f"perm must index the batch of {n}, got values from {int(perm.min())} to {int(perm.max())}")


def _check_boxes(name: str, boxes, n: int, height: int, width: int) -> None:
    """int64 (n, 4) boxes (y0, y1, x0, x1) with 0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width."""
    _check_tensor(name, boxes, shape=(n, 4), dtypes=(torch.int64,))
    b = boxes.cpu()
    ok = (b[:, 0] >= 0) & (b[:, 0] <= b[:, 1]) & (b[:, 1] <= height) & (b[:, 2] >= 0) & (b[:, 2] <= b[:, 3]) & (b[:, 3] <= width)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0, 0])
        raise ValueError(f"{name}[{i}] = {b[i].tolist()} (y0, y1, x0, x1) does not lie inside the {height}x{width} "
                         f"images (0 <= y0 <= y1 <= {height}, 0 <= x0 <= x1 <= {width})")


@dataclass(frozen=True)
class BlendParams:
    """Mixup: ``mix`` (the switch coin), ``perm`` int64 (N,), ``lam`` float32 (N,)."""

    mix: bool
    perm: torch.Tensor
    lam: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm, n)
        _check_tensor("lam", self.lam, shape=(n,), dtypes=(torch.float32, torch.float64))
        _check_unit("lam", self.lam)

    def move(self, maps: torch.Tensor, side: str) -> torch.Tensor:
        """As :meth:`MaskParams.move`: a blend shows both images in place."""
        return maps


@dataclass(frozen=True)
class BoxParams:
    """CutMix, asymmetric CutMix, SnapMix: ``src_box[i]`` of image ``perm[i]`` goes into
    ``dst_box[i]`` of image i; int64 (N, 4) boxes (y0, y1, x0, x1)."""

    mix: bool
    perm: torch.Tensor
    src_box: torch.Tensor
    dst_box: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm, n)
        _check_boxes("src_box", self.src_box, n, height, width)
        _check_boxes("dst_box", self.dst_box, n, height, width)

    @property
    def live(self) -> torch.Tensor:
        """bool (N,): which samples get a paste (both boxes non-empty; the coin aside)."""
        return (box_area(self.src_box) > 0) & (box_area(self.dst_box) > 0)


@dataclass(frozen=True)
class MaskParams:
    """FMix, SmoothMix, the mixed-example family: ``masks`` float32 (N, H, W), each
    pixel's weight of the sample's own image (the partner ``perm[i]`` gets 1 - mask; a
    mask shared by the batch is an expanded view), or (N, C, H, W), each element's; and
    ``w_a`` float32 (N,), the label weight of the own image (the partner's is 1 - w_a)."""

    mix: bool
    perm: torch.Tensor
    masks: torch.Tensor
    w_a: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm, n)
        per_element = isinstance(self.masks, torch.Tensor) and self.masks.dim() == 4
        shape = (n, self.masks.shape[1], height, width) if per_element else (n, height, width)
        _check_tensor("masks", self.masks, shape=shape, dtypes=(torch.float32,))
        _check_tensor("w_a", self.w_a, shape=(n,), dtypes=(torch.float32,))
        _check_unit("masks", self.masks)
        _check_unit("w_a", self.w_a)

    def move(self, maps: torch.Tensor, side: str) -> torch.Tensor:
        """(N, ..., H, W) maps of the own images (``side`` "a") or of the partners ("b") as
        the mix shows them before the mask: in place (PuzzleMix's transport moves blocks)."""
        return maps


@dataclass(frozen=True)
class PartnerParams:
    """A mask method's params before its masks, which need the model being trained
    (Guided-AP's saliency, AttentiveMix's CAMs): ``mix`` (the coin) and ``perm`` int64 (N,),
    or None where the partners follow from the masks' saliency (greedy pairing).
    ``MaskMethod.resolve`` turns them into :class:`MaskParams`."""

    mix: bool
    perm: torch.Tensor | None

    def check(self, *, n: int, height: int, width: int) -> None:
        if self.perm is not None:
            _check_perm(self.perm, n)


def pixel_weights(params: MaskParams | BlendParams, *, height: int, width: int) -> torch.Tensor:
    """float64 (N, H, W) on the host: each pixel's weight of the sample's own image under a
    mask (per-element masks: the mean of the pixel's channels) or a blend (lam everywhere);
    the partner's is 1 - it. What the part truth and the sample grid weigh parts by."""
    if isinstance(params, BlendParams):
        return params.lam.cpu().double()[:, None, None].expand(len(params.lam), height, width)
    m = params.masks.cpu().double()
    return m.mean(1) if m.dim() == 4 else m


@dataclass(frozen=True)
class CutOutParams:
    """CutOut: ``apply`` (the switch coin) and int64 (N, 4) boxes."""

    apply: bool
    box: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_boxes("box", self.box, n, height, width)


def coin(rng: np.random.Generator, prob: float) -> bool:
    """The switch: True with probability ``prob``."""
    return bool(rng.random() < prob)


def permutation(rng: np.random.Generator, n: int) -> torch.Tensor:
    """int64 (n,): each sample's partner, self-pairs possible (the released code's randperm)."""
    return torch.from_numpy(rng.permutation(n).astype(np.int64))


def derangement(rng: np.random.Generator, n: int) -> torch.Tensor:
    """A permutation without fixed points (for n == 1 the identity: no other partner)."""
    if n == 1:
        return torch.zeros(1, dtype=torch.int64)
    while True:  # rejection: about e tries on average
        p = permutation(rng, n)
        if not bool((p == torch.arange(n)).any()):
            return p


def draw_boxes(rng: np.random.Generator, *, n: int, beta: float, height: int, width: int, per_sample: bool) -> torch.Tensor:
    """(n, 4) boxes from lam ~ Beta(beta, beta): one box for the batch, or one per sample."""
    if per_sample:
        return rand_boxes(rng.beta(beta, beta, size=n), height=height, width=width, rng=rng)
    return rand_boxes([rng.beta(beta, beta)], height=height, width=width, rng=rng).expand(n, 4).contiguous()


def sample_box_params(rng: np.random.Generator, *, n: int, height: int, width: int, prob: float, beta: float,
                      asymmetric: bool, per_sample: bool, perm: torch.Tensor | None = None) -> BoxParams:
    """Draw, in this order: the switch coin, the partner permutation (unless ``perm`` is
    given), the target boxes, then (``asymmetric``) independent source boxes; a symmetric
    paste takes the source box from the same place."""
    mix = coin(rng, prob)
    perm = permutation(rng, n) if perm is None else perm
    dst = draw_boxes(rng, n=n, beta=beta, height=height, width=width, per_sample=per_sample)
    src = draw_boxes(rng, n=n, beta=beta, height=height, width=width, per_sample=per_sample) if asymmetric else dst
    return BoxParams(mix=mix, perm=perm, src_box=src, dst_box=dst)


def paste_boxes(images: torch.Tensor, params: BoxParams, *, backend: str, tag: str) -> None:
    """In place: ``src_box[i]`` of image ``perm[i]``, resized (bilinear, align_corners=True,
    as the released SnapMix), into ``dst_box[i]`` of image i; samples that are not
    ``params.live`` are left alone."""
    kernels.paste_resized(images, perm=params.perm, src_box=params.src_box, dst_box=params.dst_box,
                          align_corners=True, backend=backend, tag=tag)
