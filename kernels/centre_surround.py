"""Centre-surround differences of the static fine-grained saliency (Montabone and Soto,
Image and Vision Computing 28(3), 2010, Sec. 2.2; OpenCV-contrib's
``StaticSaliencyFineGrained``), summed over its scales, per pixel:

    M_n = (S_n - I) / (|W_n| - 1),   S_n the sum of I over the window W_n from
          (y - n + 1, x - n + 1) to (y + n, x + n) clipped to the image (centre included),
    on  = sum_n trunc(max(I - M_n, 0)),   off = sum_n trunc(max(M_n - I, 0)),
    map = (trunc(255 on / max on) + trunc(255 off / max off)) mod 256   (maxima per image)

the last line as OpenCV writes its map (a float32 quotient, a double product, a C cast to
8 bits that wraps; what its mixOnOff's division by the larger maximum of the two, 255,
leaves). Two kernels: the sums (a work item per pixel on CUDA, a row on the CPU), then,
after torch's per-image maxima, the merge.

S_n from the integral image as OpenCV forms it, in float32 and in its order
((a + b) - c) - d, then the mean's float32 division: the same float32 operations on both
targets and in the torch reference beside them, so all three agree bit for bit. CUDA: a
thread per pixel, its scales in a loop. CPU: a row per work item, a scale at a time, the
pixels whose windows no border clips in a loop of contiguous loads that vectorises. The
torch reference computes the last step as OpenCV's source does (both maxima, the double
division, the cast), not through the identity the kernels use.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import _dispatch as D
from ._target import Target, build, nvtx_range

__all__ = ["centre_surround", "centre_surround_reference"]


# ---------------------------------------------------------------- the math, once


def contrast(a, b, c, d, g, count):
    """trunc(I - M) for one pixel and scale: a, b, c, d the integral image at the window's
    corners (y1, x1), (y0, x0), (y1, x0), (y0, x1), g the pixel, count the window's size.
    trunc is odd, so on's trunc(I - M) is this when positive and off's trunc(M - I) its
    negation when negative. A window of the centre alone (a half-size of 1 in a corner)
    divides 0 by 0: OpenCV's comparisons with NaN are false, so it adds nothing."""
    if count == 1:
        return np.int32(0)
    mean = ((((a + b) - c) - d) - g) / np.float32(count - 1)
    return np.int32(g - mean)  # toward zero; int32: the conversion and the sums vectorise


def scaled(v, top):
    """OpenCV's mixScales: a sum over the scales as 0..255, trunc(255 (v / top)), the
    quotient in float32, the product in double; 0 where the image's sums are all 0."""
    if top == 0:
        return np.int32(0)
    q = np.float32(v) / np.float32(top)
    return np.int32(np.float64(255.0) * np.float64(q))


def merge_with(*, scaled):
    def merge(v_on, v_off, top_on, top_off):
        """OpenCV's last step on the two scaled sums, 255 (on8 + off8) / max(max on8, max
        off8) cast to 8 bits, which is (on8 + off8) mod 256 (each scaled map peaks at 255
        unless all zero, and 255 k / 255 is k exactly; the C cast wraps)."""
        return (scaled(v_on, top_on) + scaled(v_off, top_off)) & 255

    return merge


def merge_pixel_with(*, merge):
    def merge_pixel(t, on, off, top_on, top_off, out, hw):
        """Pixel ``t`` (of N * hw)."""
        n = t // hw
        out[t] = merge(on[t], off[t], top_on[n], top_off[n])

    return merge_pixel


def contrast_pixel_with(*, contrast):
    def contrast_pixel(t, integral, grey, on, off, H, W, scales, n_scales):
        """Pixel ``t`` (of N * H * W): its on and off sums over the scales."""
        hw = H * W
        n = t // hw
        r = t - n * hw
        y = r // W
        x = r - y * W
        base = n * (H + 1) * (W + 1)
        g = grey[t]
        total_on = 0
        total_off = 0
        for s in range(n_scales):
            nb = scales[s]
            y0 = max(y - nb + 1, 0)
            y1 = min(y + nb + 1, H)
            x0 = max(x - nb + 1, 0)
            x1 = min(x + nb + 1, W)
            top = base + y0 * (W + 1)
            bottom = base + y1 * (W + 1)
            k = contrast(integral[bottom + x1], integral[top + x0], integral[bottom + x0], integral[top + x1], g,
                         (y1 - y0) * (x1 - x0))
            total_on += max(k, np.int32(0))
            total_off += max(-k, np.int32(0))
        on[t] = total_on
        off[t] = total_off

    return contrast_pixel


def contrast_row_with(*, contrast):
    def contrast_row(row, integral, grey, on, off, H, W, scales, n_scales):
        """CPU: row ``row`` (of N * H) a scale at a time, its pixels in three runs: those
        whose window the left border clips, the interior (corners at fixed offsets from
        x: contiguous loads, so the loop vectorises), those the right border clips."""
        n = row // H
        y = row - n * H
        base = n * (H + 1) * (W + 1)
        o = row * W
        for x in range(W):
            on[o + x] = 0
            off[o + x] = 0
        for s in range(n_scales):
            nb = scales[s]
            y0 = max(y - nb + 1, 0)
            y1 = min(y + nb + 1, H)
            top = base + y0 * (W + 1)
            bottom = base + y1 * (W + 1)
            hy = y1 - y0
            inner0 = min(max(nb - 1, 0), W)  # the first x whose window the left border does not clip
            inner1 = max(W - nb, inner0)  # the first x whose window the right border clips
            for x in range(inner0):
                x1 = min(x + nb + 1, W)
                k = contrast(integral[bottom + x1], integral[top], integral[bottom], integral[top + x1], grey[o + x],
                             hy * x1)
                on[o + x] += max(k, np.int32(0))
                off[o + x] += max(-k, np.int32(0))
            # slices indexed from 0: Numba's negative-index wraparound then folds away
            m = inner1 - inner0
            a = integral[bottom + inner0 + nb + 1:bottom + inner0 + nb + 1 + m]
            b = integral[top + inner0 - nb + 1:top + inner0 - nb + 1 + m]
            c = integral[bottom + inner0 - nb + 1:bottom + inner0 - nb + 1 + m]
            d = integral[top + inner0 + nb + 1:top + inner0 + nb + 1 + m]
            g = grey[o + inner0:o + inner0 + m]
            on_ = on[o + inner0:o + inner0 + m]
            off_ = off[o + inner0:o + inner0 + m]
            count = hy * 2 * nb
            for j in range(m):
                k = contrast(a[j], b[j], c[j], d[j], g[j], count)
                on_[j] += max(k, np.int32(0))
                off_[j] += max(-k, np.int32(0))
            for x in range(inner1, W):
                x0 = max(x - nb + 1, 0)
                k = contrast(integral[bottom + W], integral[top + x0], integral[bottom + x0], integral[top + W], grey[o + x],
                             hy * (W - x0))
                on[o + x] += max(k, np.int32(0))
                off[o + x] += max(-k, np.int32(0))

    return contrast_row


# ---------------------------------------------------------------- kernels


def cpu_merge_with(*, prange, merge):
    def cpu_merge(on, off, top_on, top_off, out, N, hw):
        for n in prange(N):  # an image per work item, its pixels in a loop that vectorises
            a = on[n * hw:(n + 1) * hw]
            b = off[n * hw:(n + 1) * hw]
            o = out[n * hw:(n + 1) * hw]
            ta = top_on[n]
            tb = top_off[n]
            for j in range(hw):
                o[j] = merge(a[j], b[j], ta, tb)

    return cpu_merge


def cuda_merge_with(*, first, stride, pixel):
    def cuda_merge(on, off, top_on, top_off, out, N, hw):
        for t in range(first(), N * hw, stride()):
            pixel(t, on, off, top_on, top_off, out, hw)

    return cuda_merge


def cpu_contrast_with(*, prange, row):
    def cpu_contrast(integral, grey, on, off, N, H, W, scales, n_scales):
        for r in prange(N * H):
            row(r, integral, grey, on, off, H, W, scales, n_scales)

    return cpu_contrast


def cuda_contrast_with(*, first, stride, pixel):
    def cuda_contrast(integral, grey, on, off, N, H, W, scales, n_scales):
        for t in range(first(), N * H * W, stride()):
            pixel(t, integral, grey, on, off, H, W, scales, n_scales)

    return cuda_contrast


def python_kernels(target: str):
    """The kernel bodies for ``target``, (contrast, merge), their helpers compiled for it
    (the bodies themselves not yet compiled: the PTX check compiles them)."""
    tg = Target(target)
    contrast_ = tg.device(contrast, inline=True)
    merge = tg.device(merge_with(scaled=tg.device(scaled, inline=True)), inline=True)
    if target == "cpu":
        from numba import prange

        row = tg.device(contrast_row_with(contrast=contrast_), inline=True)
        return cpu_contrast_with(prange=prange, row=row), cpu_merge_with(prange=prange, merge=merge)
    first, stride = tg.grid()
    pixel = tg.device(contrast_pixel_with(contrast=contrast_))
    merge_pixel = tg.device(merge_pixel_with(merge=merge))
    return (cuda_contrast_with(first=first, stride=stride, pixel=pixel),
            cuda_merge_with(first=first, stride=stride, pixel=merge_pixel))


@functools.cache
def _compiled(target: str, which: int):
    return build(target, python_kernels(target)[which])


# ---------------------------------------------------------------- backends


def _numba(backend: str):
    def run(integral, grey, *, scales):
        N, H, W = grey.shape
        dev = grey.device
        on = torch.empty(N, H, W, dtype=torch.int32, device=dev)
        off = torch.empty_like(on)
        sc = D.on(torch.tensor(scales, dtype=torch.int64), dev)
        args = tuple(D.flat(t, backend) for t in (integral, grey, on, off)) + (N, H, W, D.flat(sc, backend), len(scales))
        D.launch(backend, _compiled(backend, 0), N * H * W, *args)  # CUDA: a thread per pixel; CPU: rows
        top_on, top_off = on.amax((1, 2)), off.amax((1, 2))
        out = torch.empty_like(on)
        args = tuple(D.flat(t, backend) for t in (on, off, top_on, top_off, out)) + (N, H * W)
        D.launch(backend, _compiled(backend, 1), N * H * W, *args)
        return out

    return run


D.register("centre_surround", "cpu")(_numba("cpu"))
D.register("centre_surround", "cuda")(_numba("cuda"))


@D.register("centre_surround", "reference")
def centre_surround_reference(integral, grey, *, scales):
    """Whole-image torch ops, a scale at a time: the window corners as slices of the
    integral image edge-padded by the largest scale; then OpenCV's scaling of the two
    sums and their merge as it writes them (in double, then the 8-bit cast)."""
    N, H, W = grey.shape
    pad = max(scales)
    padded = torch.nn.functional.pad(integral[:, None], (pad, pad, pad, pad), mode="replicate")[:, 0]
    on = torch.zeros_like(grey)
    off = torch.zeros_like(grey)
    ys = torch.arange(H, device=grey.device)
    xs = torch.arange(W, device=grey.device)
    for nb in scales:
        lo, hi = pad - nb + 1, pad + nb + 1  # offsets of the corners y - nb + 1 and y + nb + 1
        a = padded[:, hi:hi + H, hi:hi + W]
        b = padded[:, lo:lo + H, lo:lo + W]
        c = padded[:, hi:hi + H, lo:lo + W]
        d = padded[:, lo:lo + H, hi:hi + W]
        count = ((ys + nb + 1).clamp(max=H) - (ys - nb + 1).clamp(min=0))[:, None] * \
            ((xs + nb + 1).clamp(max=W) - (xs - nb + 1).clamp(min=0))[None, :]
        mean = (a + b).sub_(c).sub_(d).sub_(grey).div_((count - 1).float())
        # trunc is odd: off's trunc(M - I) = -trunc(I - M); a centre-only window's 0 / 0 adds nothing
        k = mean.neg_().add_(grey).trunc_().nan_to_num_(0.0)
        on.add_(k.clamp(min=0))
        off.sub_(k.clamp_(max=0))

    def to_255(total):  # mixScales: trunc(255. * (float)(v / (float)top)); an all-zero image: 0 / 0 -> 0
        q = (total / total.amax((1, 2), keepdim=True)).nan_to_num_(0.0)
        return (q.double() * 255.0).to(torch.int32)

    # mixOnOff: trunc(255. (on8 + off8) / max(max on8, max off8)), in double, cast to 8 bits
    on8, off8 = to_255(on), to_255(off)
    top = torch.maximum(on8.amax((1, 2)), off8.amax((1, 2))).double()[:, None, None]
    val = (255.0 * (on8 + off8).double() / top).nan_to_num_(0.0, posinf=0.0)  # x / 0: the C cast's 0
    return val.to(torch.int64).remainder(256).to(torch.int32)  # the C cast to uchar wraps


# ---------------------------------------------------------------- public


def centre_surround(integral: torch.Tensor, grey: torch.Tensor, *, scales: tuple[int, ...], backend: str = "auto",
                    tag: str = "saliency") -> torch.Tensor:
    """The saliency map, int32 (N, H, W) in 0..255: each pixel's on and off sums over
    ``scales`` (window half-sizes, each >= 1) of the truncated centre-surround differences,
    each scaled by its image's maximum to 0..255, their sum cast to 8 bits (see above).

    integral: float32 (N, H + 1, W + 1), contiguous, the integral image of ``grey`` with a
    leading zero row and column; grey: float32 (N, H, W) of integer levels 0..255,
    contiguous, H, W >= 2; both on one device."""
    if not isinstance(grey, torch.Tensor) or grey.dtype != torch.float32 or grey.dim() != 3 or not grey.is_contiguous():
        raise ValueError(f"grey must be a contiguous float32 (N, H, W) tensor, got {getattr(grey, 'dtype', type(grey).__name__)} "
                         f"of shape {tuple(getattr(grey, 'shape', ()))}")
    N, H, W = grey.shape
    if H < 2 or W < 2:
        raise ValueError(f"images must be at least 2 x 2 pixels, got {H} x {W}")
    if (not isinstance(integral, torch.Tensor) or integral.dtype != torch.float32
            or tuple(integral.shape) != (N, H + 1, W + 1) or not integral.is_contiguous()
            or integral.device != grey.device):
        raise ValueError(f"integral must be a contiguous float32 ({N}, {H + 1}, {W + 1}) tensor on {grey.device}, got "
                         f"{getattr(integral, 'dtype', type(integral).__name__)} of shape "
                         f"{tuple(getattr(integral, 'shape', ()))}")
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be window half-sizes >= 1, got {scales}")
    fn = D.pick("centre_surround", backend, grey.device)
    with nvtx_range(f"{tag}/centre_surround"):
        return fn(integral, grey, scales=scales)
