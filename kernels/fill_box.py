"""Fill a box per sample with a constant (CutOut, DeVries & Taylor, 2017), in place.

On normalised images the authors' CutOut fills 0 (the dataset mean); ``value`` may be
per channel.
"""

from __future__ import annotations

import functools

import torch

from . import _dispatch as D
from ._math import locate
from ._target import Target, build, nvtx_range, rebind

__all__ = ["fill_box", "fill_box_reference"]

LANES = 32


def fill_row(r, x_start, x_step, images, values, boxes, roff, nb, C, H, W):
    """``values`` holds the fill per channel in the images' storage type (float16 as
    bits), so this is a plain assignment on every target."""
    i = locate(roff, nb, r)
    rr = r - roff[i]
    y0 = boxes[4 * i]
    x0 = boxes[4 * i + 2]
    bh = boxes[4 * i + 1] - y0
    bw = boxes[4 * i + 3] - x0
    c = rr // bh
    dst = (i * C + c) * H * W + (y0 + rr - c * bh) * W + x0
    fill(images, dst, bw, values[c], x_start, x_step)


def fill_lanes(a, start, n, v, x_start, x_step):
    for xx in range(x_start, n, x_step):
        a[start + xx] = v


def fill_slice(a, start, n, v, x_start, x_step):
    a[start:start + n] = v  # vectorised by Numba (an element loop in prange is not)


def _cpu_fill(images, values, boxes, roff, nb, C, H, W):
    for r in prange(roff[nb]):
        row(r, 0, 1, images, values, boxes, roff, nb, C, H, W)


def _cuda_fill(images, values, boxes, roff, nb, C, H, W):
    for t in range(cuda.grid(1), roff[nb] * LANES, cuda.gridsize(1)):
        row(t // LANES, t % LANES, LANES, images, values, boxes, roff, nb, C, H, W)


def python_kernels(target: str):
    tg = Target(target)
    fill = tg.device(fill_slice if target == "cpu" else fill_lanes, inline=True)
    fr = tg.device(fill_row, locate=tg.device(locate, inline=True), fill=fill, inline=True)
    if target == "cpu":
        from numba import prange

        return (rebind(_cpu_fill, prange=prange, row=fr),)
    from numba import cuda

    return (rebind(_cuda_fill, cuda=cuda, row=fr),)


@functools.cache
def _compiled(target: str):
    return build(target, python_kernels(target)[0])


def _numba(backend: str):
    def run(images, *, boxes, values):
        B, C, H, W = images.shape
        bh = boxes[:, 1] - boxes[:, 0]
        bw = boxes[:, 3] - boxes[:, 2]
        rows = torch.where((bh > 0) & (bw > 0), C * bh, 0)
        roff = D.offsets(rows)
        if int(roff[-1]) == 0:
            return images
        dev = images.device
        args = (
            D.flat(images, backend),
            D.flat(D.on(values.to(images.dtype), dev), backend),  # storage type: float16 as bits
            D.flat(D.on(boxes.reshape(-1), dev), backend),
            D.flat(D.on(roff, dev), backend),
            B,
            C,
            H,
            W,
        )
        D.launch(backend, _compiled(backend), int(roff[-1]) * LANES, *args)
        return images

    return run


D.register("fill_box", "cpu")(_numba("cpu"))
D.register("fill_box", "cuda")(_numba("cuda"))


@D.register("fill_box", "reference")
def fill_box_reference(images, *, boxes, values):
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        images[i, :, y0:y1, x0:x1] = values.to(images.device, images.dtype)[:, None, None]
    return images


def fill_box(
    images: torch.Tensor,
    *,
    boxes: torch.Tensor,
    value: float | tuple[float, ...] = 0.0,
    backend: str = "auto",
    tag: str = "mix",
) -> torch.Tensor:
    """Set ``images[i, :, y0:y1, x0:x1]`` to ``value`` (scalar or one per channel), in place.

    images: NCHW float32/float16, contiguous. boxes: int64 (N, 4) as (y0, y1, x0, x1).
    """
    D.check_images("images", images)
    B, C, H, W = images.shape
    b = D.check_boxes("boxes", boxes, B, H, W)
    vals = torch.tensor([value] * C if isinstance(value, (int, float)) else list(value), dtype=torch.float32)
    if vals.shape != (C,) or not bool(torch.isfinite(vals).all()):
        raise ValueError(f"value must be a finite number or {C} finite numbers (one per channel), got {value!r}")
    fn = D.pick("fill_box", backend, images.device)
    with nvtx_range(f"{tag}/fill_box"):
        return fn(images, boxes=b, values=vals)
