"""In-place blends with a partner permutation: Mixup (Zhang et al., ICLR 2018, Eq. 1)
with a weight per sample, and a per-pixel weight map per sample (GuidedMixup, FMix,
SmoothMix):

    x[i] <- m[i] * x[i] + (1 - m[i]) * x[perm[i]]

In place although every output reads another sample: the permutation is split into
cycles i0 -> perm[i0] -> ...; walking a cycle in that order, each sample's partner is
still unwritten except at the cycle's end, whose partner (the cycle's first sample) is
kept aside: in a register on CUDA (a thread per pixel), in a 256-pixel buffer on the
CPU, which walks the cycles chunk by chunk so its loops vectorise (~10x faster than a
pixel at a time). Every pixel is read once and written once.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import _dispatch as D
from ._target import Target, build, nvtx_range

__all__ = ["blend", "blend_reference", "mask_blend", "mask_blend_reference"]


# ---------------------------------------------------------------- the math, once


CHUNK = 256  # CPU: pixels of one plane blended together, so each loop vectorises


def mix(m, a, b):
    return m * a + (np.float32(1.0) - m) * b


def mix_pixel_with(*, load, store, mix):
    def mix_pixel(p, x, wts, order, cstart, ncyc, N, HW, per_pixel):
        """Blend pixel ``p`` (an offset inside one image of N values) of every sample,
        the cycle's first value kept in a register."""
        wp = p % HW if per_pixel else 0
        ws = HW if per_pixel else 1
        for q in range(ncyc):
            s = cstart[q]
            e = cstart[q + 1]
            first = load(x, order[s] * N + p)
            cur = first
            for r in range(s, e):
                i = order[r]
                nxt = first
                if r + 1 < e:
                    nxt = load(x, order[r + 1] * N + p)
                store(x, i * N + p, mix(np.float32(wts[i * ws + wp]), cur, nxt))
                cur = nxt

    return mix_pixel


def mix_chunk_cpu_with(*, load, store, mix):
    def mix_chunk_cpu(p0, n, x, wts, order, cstart, ncyc, N, HW, per_pixel, first):
        """Pixels [p0, p0 + n) of every sample (inside one plane), a cycle at a time as
        whole-chunk loops: the same walk as ``mix_pixel``, the cycle's first chunk kept
        in ``first`` instead of a register."""
        wp = p0 % HW
        for q in range(ncyc):
            s = cstart[q]
            e = cstart[q + 1]
            head = x[order[s] * N + p0:order[s] * N + p0 + n]
            for t in range(n):
                first[t] = load(head, t)
            for r in range(s, e):
                i = order[r]
                xi = x[i * N + p0:i * N + p0 + n]
                w = wts[i * HW + wp:i * HW + wp + n] if per_pixel else wts[i:i + 1]
                if r + 1 < e:
                    nx = x[order[r + 1] * N + p0:order[r + 1] * N + p0 + n]
                    for t in range(n):
                        store(xi, t, mix(np.float32(w[t if per_pixel else 0]), load(xi, t), load(nx, t)))
                else:
                    for t in range(n):
                        store(xi, t, mix(np.float32(w[t if per_pixel else 0]), load(xi, t), first[t]))

    return mix_chunk_cpu


# ---------------------------------------------------------------- kernels


def cpu_mix_with(*, prange, chunk):
    def cpu_mix(x, wts, order, cstart, ncyc, N, HW, per_pixel):
        per_plane = (HW + CHUNK - 1) // CHUNK
        for k in prange((N // HW) * per_plane):
            p0 = (k // per_plane) * HW + (k % per_plane) * CHUNK
            first = np.empty(CHUNK, np.float32)
            chunk(p0, min(CHUNK, (k // per_plane + 1) * HW - p0), x, wts, order, cstart, ncyc, N, HW, per_pixel,
                  first)

    return cpu_mix


def cuda_mix_with(*, first, stride, pixel):
    def cuda_mix(x, wts, order, cstart, ncyc, N, HW, per_pixel):
        for p in range(first(), N, stride()):
            pixel(p, x, wts, order, cstart, ncyc, N, HW, per_pixel)

    return cuda_mix


def python_kernels(target: str, dtype: str):
    """The kernel body for ``target`` and the images' dtype, its helpers compiled for
    that target, the body itself not yet compiled (the PTX check compiles it)."""
    tg = Target(target)
    load, store = tg.element(dtype)
    mix_ = tg.device(mix, inline=True)
    if target == "cpu":
        from numba import prange

        chunk = tg.device(mix_chunk_cpu_with(load=load, store=store, mix=mix_), inline=True)
        return (cpu_mix_with(prange=prange, chunk=chunk),)
    first, stride = tg.grid()
    pixel = tg.device(mix_pixel_with(load=load, store=store, mix=mix_))
    return (cuda_mix_with(first=first, stride=stride, pixel=pixel),)


@functools.cache
def _compiled(target: str, dtype: str):
    return build(target, python_kernels(target, dtype)[0])


def cycles_into(perm, order, cstart):
    """The cycles of ``perm`` into ``order`` / ``cstart``; returns their count. Plain
    Python over arrays: ``cycles`` runs it as is, the CPU paste compiles it."""
    n = perm.shape[0]
    seen = np.zeros(n, np.bool_)
    k = 0
    q = 0
    cstart[0] = 0
    for i in range(n):
        j = i
        while not seen[j]:
            seen[j] = True
            order[k] = j
            k += 1
            j = perm[j]
        if k > cstart[q]:
            q += 1
            cstart[q] = k
    return q


def cycles(perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, starts): the cycles of a permutation, each walked i -> perm[i]."""
    n = len(perm)
    order, starts = np.empty(n, np.int64), np.empty(n + 1, np.int64)
    q = cycles_into(perm.numpy(), order, starts)
    return torch.from_numpy(order), torch.from_numpy(starts[:q + 1])


# ---------------------------------------------------------------- backends


def _numba(backend: str):
    def run(images, *, perm, weights, per_pixel):
        B, C, H, W = images.shape
        order, starts = cycles(perm)
        dev = images.device
        args = (
            D.flat(images, backend),
            D.flat(D.on(weights.reshape(-1).float(), dev), backend),
            D.flat(D.on(order, dev), backend),
            D.flat(D.on(starts, dev), backend),
            len(starts) - 1,
            C * H * W,
            H * W,
            per_pixel,
        )
        D.launch(backend, _compiled(backend, D.dtype_name(images)), C * H * W, *args)
        return images

    return run


_cpu, _cuda = _numba("cpu"), _numba("cuda")
D.register("blend", "cpu")(lambda images, *, perm, weights: _cpu(images, perm=perm, weights=weights, per_pixel=False))
D.register("blend", "cuda")(lambda images, *, perm, weights: _cuda(images, perm=perm, weights=weights, per_pixel=False))
D.register("mask_blend", "cpu")(lambda images, *, perm, masks: _cpu(images, perm=perm, weights=masks, per_pixel=True))
D.register("mask_blend", "cuda")(lambda images, *, perm, masks: _cuda(images, perm=perm, weights=masks, per_pixel=True))


@D.register("blend", "reference")
def blend_reference(images, *, perm, weights):
    w = weights.to(images.device, torch.float32).view(-1, 1, 1, 1)
    images.copy_((w * images.float() + (1 - w) * images[perm].float()).to(images.dtype))
    return images


@D.register("mask_blend", "reference")
def mask_blend_reference(images, *, perm, masks):
    m = masks.to(images.device, torch.float32)[:, None]
    images.copy_((m * images.float() + (1 - m) * images[perm].float()).to(images.dtype))
    return images


# ---------------------------------------------------------------- public


def _check_weights(name: str, w, shape: tuple[int, ...]) -> None:
    if not isinstance(w, torch.Tensor) or w.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be a float32 or float64 tensor, got {getattr(w, 'dtype', type(w).__name__)}")
    if tuple(w.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def blend(images: torch.Tensor, *, perm: torch.Tensor, weights: torch.Tensor, backend: str = "auto", tag: str = "mix") -> torch.Tensor:
    """``images[i] <- w[i] * images[i] + (1 - w[i]) * images[perm[i]]``, in place.

    images: NCHW float32/float16, contiguous. perm: int64 permutation (N,).
    weights: float32 (N,), the weight of each sample's own image. Returns ``images``.
    """
    D.check_images("images", images)
    p = D.check_perm("perm", perm, images.shape[0], permutation=True)
    _check_weights("weights", weights, (images.shape[0],))
    fn = D.pick("blend", backend, images.device)
    with nvtx_range(f"{tag}/blend"):
        return fn(images, perm=p, weights=weights)


def mask_blend(images: torch.Tensor, *, perm: torch.Tensor, masks: torch.Tensor, backend: str = "auto", tag: str = "mix") -> torch.Tensor:
    """``images[i] <- m[i] * images[i] + (1 - m[i]) * images[perm[i]]`` per pixel, in place.

    masks: float32 (N, H, W), each sample's own-image weight per pixel (shared by the
    channels). Otherwise as :func:`blend`.
    """
    D.check_images("images", images)
    B, _, H, W = images.shape
    p = D.check_perm("perm", perm, B, permutation=True)
    _check_weights("masks", masks, (B, H, W))
    fn = D.pick("mask_blend", backend, images.device)
    with nvtx_range(f"{tag}/mask_blend"):
        return fn(images, perm=p, masks=masks)
