"""The mixed-example family (Summers and Dinneen, "Improved Mixed-Example Data
Augmentation", WACV 2019, arXiv 1805.11272, Sec. 3): non-linear ways to mix two images,
each labelled by the share of the image taken from each (weights sum to 1). Every
random amount is uniform, not Beta. One module, a ``variant`` each:

    vertical-concat     rows [0, r) from x_a, the rest from x_b;   r ~ U{0..H-1}, w_a = r / H
    horizontal-concat   columns [0, c) from x_a;                   c ~ U{0..W-1}, w_a = c / W
    mixed-concat        x_a top-left and bottom-right of (r, c), x_b the other two;
                        w_a = (r/H)(c/W) + (1 - r/H)(1 - c/W)
    random-2x2          a split in the middle half of each side; each of the 4 cells from
                        x_a with probability q ~ U(0, 1); w_a = its area
    vh-mixup            a vertical and a horizontal concat of the pair, blended by
                        a ~ U(0, 1) (the release's default method); w_a = a r/H + (1 - a) c/W
    row-interval        rows [i1, i2) of x_a replaced by as many rows of x_b from a random
    column-interval     place (i1 ~ U{0..H-1}, i2 ~ U{i1..H-1}); w_a = 1 - (i2 - i1) / H;
                        columns likewise
    random-rows         each row (column, pixel, element: pixel and channel) from x_a with
    random-columns      probability q ~ U(0, 1); w_a = the share taken from x_a
    random-pixels
    random-elements

As the release (``mixed_example.py``): every amount drawn per pair (here per sample,
the partner by a random permutation), every example mixed (prob 1.0). The release mixes
pairs drawn in the input pipeline, each pair giving one example; here each sample of a
batch gets a partner. Its mixed concat slices the height with the width's split and
the width with the height's (draws U{0..W-1} for the rows, U{0..H-1} for the columns,
and labels by those draws): ``semantics="released"`` reproduces that (the same as the
paper for square images); ``"paper"`` (the default) splits each side by its own draw.
Intervals paste through ``kernels.paste_resized`` (equal sizes: an exact copy), masks
through ``kernels.mask_blend`` (per-element masks: a torch blend), either device.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import kernels
from .base import MixedBatch, check_prob
from .boxes import area_share
from .masks import MaskMethod
from .params import BoxParams, MaskParams, coin, permutation

__all__ = ["MixedExample", "VARIANTS"]

VARIANTS = ("vertical-concat", "horizontal-concat", "mixed-concat", "random-2x2", "vh-mixup", "row-interval",
            "column-interval", "random-rows", "random-columns", "random-pixels", "random-elements")
INTERVALS = ("row-interval", "column-interval")
SEMANTICS = ("paper", "released")


class MixedExample(MaskMethod):
    name = "mixed-example"

    def __init__(self, *, variant: str = "vh-mixup", semantics: str = "paper", prob: float = 1.0,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        self.variant, self.semantics, self.prob = variant, semantics, check_prob(prob)
        self.params_type = BoxParams if variant in INTERVALS else MaskParams

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
        """Draw, in this order: the switch coin, the partners, then the variant's amounts
        for every sample (each as the module docstring lists them, left to right)."""
        n, c, h, w = images.shape
        mix = coin(rng, self.prob)
        perm = permutation(rng, n)
        v = self.variant
        if v in INTERVALS:
            side = h if v == "row-interval" else w
            i1 = rng.integers(0, side, size=n)
            i2 = rng.integers(i1, side)
            i3 = rng.integers(0, side - (i2 - i1))
            span = np.stack([i1, i2, i3, i3 + i2 - i1], 1)
            full = np.tile([0, h if v == "column-interval" else w], (n, 1))
            dst, src = (np.concatenate([span[:, k:k + 2], full], 1) for k in (0, 2))
            if v == "column-interval":  # (y0, y1, x0, x1): the span is on x
                dst, src = dst[:, [2, 3, 0, 1]], src[:, [2, 3, 0, 1]]
            return BoxParams(mix=mix, perm=perm, src_box=torch.from_numpy(src).long(), dst_box=torch.from_numpy(dst).long())
        yy, xx = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
        if v == "vertical-concat":
            r = rng.integers(0, h, size=n)
            m, w_a = np.broadcast_to(yy < r[:, None, None], (n, h, w)), r / h
        elif v == "horizontal-concat":
            col = rng.integers(0, w, size=n)
            m, w_a = np.broadcast_to(xx < col[:, None, None], (n, h, w)), col / w
        elif v == "mixed-concat":
            if self.semantics == "paper":
                r, col = rng.integers(0, h, size=n), rng.integers(0, w, size=n)
                lr, lc = r / h, col / w
            else:  # the release: its "dim_W" splits the rows, its "dim_H" the columns, labels from the draws
                r, col = rng.integers(0, w, size=n), rng.integers(0, h, size=n)
                lr, lc = r / w, col / h
            top, left = yy < r[:, None, None], xx < col[:, None, None]
            m, w_a = (top & left) | (~top & ~left), lr * lc + (1 - lr) * (1 - lc)
        elif v == "random-2x2":
            hb, wb = int(round(0.25 * h)), int(round(0.25 * w))
            r, col = rng.integers(hb, h - hb, size=n), rng.integers(wb, w - wb, size=n)
            q = rng.random(n)
            cells = rng.random((n, 4)) < q[:, None]
            top, left = yy < r[:, None, None], xx < col[:, None, None]
            k = np.where(top, 0, 2) + np.where(left, 0, 1)  # the cell of each pixel: 0 1 / 2 3
            m = np.take_along_axis(cells, k.reshape(n, -1), 1).reshape(n, h, w)
            w_a = m.mean((1, 2))
        elif v == "vh-mixup":
            r, col, a = rng.integers(0, h, size=n), rng.integers(0, w, size=n), rng.random(n)
            a3 = a[:, None, None]
            m = a3 * (yy < r[:, None, None]) + (1 - a3) * (xx < col[:, None, None])
            w_a = a * r / h + (1 - a) * col / w
        else:  # random rows, columns, pixels, elements
            q = rng.random(n)
            shape = {"random-rows": (n, h, 1), "random-columns": (n, 1, w), "random-pixels": (n, h, w),
                     "random-elements": (n, c, h, w)}[v]
            draw = rng.random(shape) < q.reshape((n,) + (1,) * (len(shape) - 1))
            m = np.broadcast_to(draw, shape[:1] + ((c,) if v == "random-elements" else ()) + (h, w))
            w_a = m.reshape(n, -1).mean(1)
        return MaskParams(mix=mix, perm=perm, masks=torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)),
                          w_a=torch.from_numpy(np.asarray(w_a, dtype=np.float32)))

    def _apply(self, images, labels, params, *, model=None, backend: str = "auto", geometry=None) -> MixedBatch:
        if isinstance(params, MaskParams) or not params.mix:
            return super()._apply(images, labels, params, model=model, backend=backend, geometry=geometry)
        _, _, h, w = images.shape
        # equal sizes with align_corners=True: every source coordinate is a pixel, an exact copy
        kernels.paste_resized(images, perm=params.perm, src_box=params.src_box, dst_box=params.dst_box,
                              align_corners=True, backend=backend, tag=self.name)
        return MixedBatch.with_partner(images, labels, params.perm, w_b=area_share(params.dst_box, h, w).float())
