"""Asymmetric cut-resize-paste (SnapMix, Huang et al., AAAI 2021, Eq. 3).

For every sample i, the box ``src_box[i]`` of image ``perm[i]`` is resized bilinearly
to the size of ``dst_box[i]`` and written into image i's ``dst_box[i]``, in place.
Resampling is exactly ``F.interpolate(patch, size, mode="bilinear",
align_corners=...)`` on the cut-out patch (the authors use align_corners=True).

Sources and destinations are the same batch, so every source pixel must be read before
it is overwritten: the CUDA kernel gathers all patches into scratch, then scatters; the
CPU kernel walks the permutation's cycles (see the drivers below). A sample whose source
or destination box is empty is left untouched.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
import torch.nn.functional as F

from . import _dispatch as D
from . import _simd
from ._math import locate, src_coord
from ._simd import LANES as SIMD_LANES
from ._simd import WINDOW
from ._target import Target, build, nvtx_range
from .blend import cycles_into

__all__ = ["paste_resized", "paste_resized_reference"]

WARP = 32  # CUDA threads that share one output row (one warp: coalesced columns)
ROW_BLOCKS = 16  # CPU: a sample's rows split into this many prange items (each owns a row buffer)


# ---------------------------------------------------------------- the math, once
#
# A function that calls helpers is returned by a factory ``<name>_with`` that takes
# them: ``python_kernels`` below hands each the helpers compiled for its target.


def x_coef_with(*, src_coord, locate):
    def x_coef(t, xi0, xi1, xl, xoff, src_box, dst_box, nb, align):
        """Column coefficients of output column t (all samples' columns end to end)."""
        i = locate(xoff, nb, t)
        xx = t - xoff[i]
        x0, x1, lx = src_coord(xx, src_box[4 * i + 3] - src_box[4 * i + 2], dst_box[4 * i + 3] - dst_box[4 * i + 2],
                               align)
        xi0[t] = x0
        xi1[t] = x1
        xl[t] = lx

    return x_coef


def lerp(a, b, w):
    return (np.float32(1.0) - w) * a + w * b


def resample_row_with(*, src_coord, lerp, load, store):
    def resample_row(src, sbase, sstride, sh, dh, yy, dst, dbase, xi0, xi1, xl, xo, dw, x_start, x_step, align):
        """Output row yy (of dh) of a patch whose row 0 starts at src[sbase], rows
        sstride apart: F.interpolate's bilinear weights, the two source rows blended
        first (the order the CPU row below needs, so both targets do the same
        operations)."""
        y0, y1, ly = src_coord(yy, sh, dh, align)
        r0 = sbase + y0 * sstride
        r1 = sbase + y1 * sstride
        for xx in range(x_start, dw, x_step):
            a0 = xi0[xo + xx]
            a1 = xi1[xo + xx]
            left = lerp(load(src, r0 + a0), load(src, r1 + a0), ly)
            right = lerp(load(src, r0 + a1), load(src, r1 + a1), ly)
            store(dst, dbase + xx, lerp(left, right, xl[xo + xx]))

    return resample_row


def patch_row(src, sbase, sstride, splane, alt, abase, arow0, arows, sw, c, y):
    """Row y of plane c of a patch: from ``alt`` (rows [arow0, arow0 + arows), each
    plane's rows packed) where it was saved aside, else from ``src``. A slice: no
    wrap-around checks in the loops that read it."""
    if arow0 <= y < arow0 + arows:
        a = abase + (c * arows + y - arow0) * sw
        return alt[a:a + sw]
    return src[sbase + c * splane + y * sstride:sbase + c * splane + y * sstride + sw]


def resample_rows_cpu_with(*, src_coord, lerp, load, store, patch_row, gather3):
    def resample_rows_cpu(src, sbase, sstride, splane, alt, abase, arow0, arows, sh, sw, dh, yy, dst, dbase, dplane, C,
                          xi0, xi1, xl, xo, dw, tmp, align):
        """Output row yy of all C planes in two passes: blend each plane's two source
        rows over the patch width into ``tmp`` (contiguous loops LLVM vectorises), then
        gather columns from it, the three planes of an RGB image in one pass over the
        columns so they share the coefficient loads (``gather3``). ``tmp`` holds ``C *
        sw + WINDOW`` values: the vector gather may read past the last plane. Source
        rows come from :func:`patch_row`."""
        y0, y1, ly = src_coord(yy, sh, dh, align)
        for c in range(C):
            top = patch_row(src, sbase, sstride, splane, alt, abase, arow0, arows, sw, c, y0)
            bot = patch_row(src, sbase, sstride, splane, alt, abase, arow0, arows, sw, c, y1)
            t = tmp[c * sw:(c + 1) * sw]
            for k in range(sw):
                t[k] = lerp(load(top, k), load(bot, k), ly)
        a0 = xi0[xo:xo + dw]
        a1 = xi1[xo:xo + dw]
        w = xl[xo:xo + dw]
        if C == 3:
            gather3(dst[dbase:dbase + dw], dst[dbase + dplane:dbase + dplane + dw],
                    dst[dbase + 2 * dplane:dbase + 2 * dplane + dw], tmp[0:sw], tmp[sw:2 * sw], tmp[2 * sw:3 * sw],
                    a0, a1, w, 0, dw)
            return
        for c in range(C):
            out = dst[dbase + c * dplane:dbase + c * dplane + dw]
            t = tmp[c * sw:(c + 1) * sw]
            for xx in range(dw):
                store(out, xx, lerp(t[a0[xx]], t[a1[xx]], w[xx]))

    return resample_rows_cpu


def gather3_with(*, lerp, store):
    def gather3(o0, o1, o2, t0, t1, t2, a0, a1, w, lo, hi):
        """Output columns [lo, hi) of three planes from their blended rows, one at a time."""
        for xx in range(lo, hi):
            i0 = np.uint64(a0[xx])  # unsigned: no negative-index wrap-around test per load
            i1 = np.uint64(a1[xx])
            store(o0, xx, lerp(t0[i0], t0[i1], w[xx]))
            store(o1, xx, lerp(t1[i0], t1[i1], w[xx]))
            store(o2, xx, lerp(t2[i0], t2[i1], w[xx]))

    return gather3


def gather3_simd_with(*, lerp3_perm16, gather3_scalar):
    def gather3_simd(o0, o1, o2, t0, t1, t2, a0, a1, w, lo, hi):
        """``gather3``, SIMD_LANES (16) columns at a time by permutes (:mod:`._simd`)
        wherever their taps span fewer than WINDOW source columns. Columns are
        monotonic, so the taps of lanes k..k+15 lie in [a0[k], a1[k + 15]]."""
        k = lo
        while k + SIMD_LANES <= hi:
            b = a0[k]
            if a1[k + SIMD_LANES - 1] - b < WINDOW:
                lerp3_perm16(o0, o1, o2, t0, t1, t2, b, a0, a1, w, k)
            else:  # downscaled by more than ~2x here
                gather3_scalar(o0, o1, o2, t0, t1, t2, a0, a1, w, k, k + SIMD_LANES)
            k += SIMD_LANES
        gather3_scalar(o0, o1, o2, t0, t1, t2, a0, a1, w, k, hi)

    return gather3_simd


def copy_slice(src, sbase, dst, dbase, n):
    # a slice copy: Numba vectorises it, not an element loop inside prange
    dst[dbase:dbase + n] = src[sbase:sbase + n]


def copy_row_with(*, store):
    def copy_row(src, sbase, dst, dbase, n, x_start, x_step):
        """Every x_step-th value of a float32 row from x_start, into the images' dtype."""
        for xx in range(x_start, n, x_step):
            store(dst, dbase + xx, src[sbase + xx])

    return copy_row


# ---------------------------------------------------------------- drivers
#
# CPU: samples in the order of the permutation's cycles (i0, perm[i0], ...), rows in
# parallel, written straight into the batch: each sample reads a partner that is not
# written yet, except the cycle's last, which reads the first after the first was
# written. Of that source patch, only the rows the first's destination rows cover (when
# their columns meet) were overwritten: they are copied aside beforehand, and each
# cycle starts where that copy is smallest (any rotation of a cycle is a valid order).
# CUDA: every row of every sample at once, so gather all patches into a scratch
# buffer, then scatter (the kernel boundary orders all reads before all writes).


def live(i, src_box, dst_box):
    """Sample i pastes something: both boxes have area."""
    return (dst_box[4 * i + 1] > dst_box[4 * i] and dst_box[4 * i + 3] > dst_box[4 * i + 2]
            and src_box[4 * i + 1] > src_box[4 * i] and src_box[4 * i + 3] > src_box[4 * i + 2])


def overwritten_rows_with(*, live):
    def overwritten_rows(last, first, src_box, dst_box):
        """(row0, rows): the rows of ``last``'s source box (in image ``first``, relative
        to the box) that ``first``'s paste overwrites before ``last`` reads them."""
        if live(last, src_box, dst_box) and live(first, src_box, dst_box) and (
                max(src_box[4 * last + 2], dst_box[4 * first + 2]) < min(src_box[4 * last + 3],
                                                                         dst_box[4 * first + 3])):
            r0 = max(src_box[4 * last], dst_box[4 * first])
            r1 = min(src_box[4 * last + 1], dst_box[4 * first + 1])
            if r1 > r0:
                return r0 - src_box[4 * last], r1 - r0
        return 0, 0

    return overwritten_rows


def cpu_paste_with(*, prange, row, live, copy_slice):
    def cpu_paste(images, saved, perm, src_box, dst_box, order, cstart, ncyc, soff, arow, xi0, xi1, xl, xoff, C, H, W,
                  align):
        for q in range(ncyc):
            last = order[cstart[q + 1] - 1]
            sy0 = src_box[4 * last]
            sx0 = src_box[4 * last + 2]
            sw = src_box[4 * last + 3] - sx0
            r0 = arow[2 * q]
            nr = arow[2 * q + 1]
            for r in prange(C * nr):
                c = r // nr
                copy_slice(images, (perm[last] * C + c) * H * W + (sy0 + r0 + r - c * nr) * W + sx0, saved,
                           soff[q] + r * sw, sw)
            for k in range(cstart[q], cstart[q + 1]):
                i = order[k]
                dy0 = dst_box[4 * i]
                dx0 = dst_box[4 * i + 2]
                dh = dst_box[4 * i + 1] - dy0
                dw = dst_box[4 * i + 3] - dx0
                sy0 = src_box[4 * i]
                sx0 = src_box[4 * i + 2]
                sh = src_box[4 * i + 1] - sy0
                sw = src_box[4 * i + 3] - sx0
                if not live(i, src_box, dst_box):
                    continue
                nr = arow[2 * q + 1] if k == cstart[q + 1] - 1 else 0  # only the cycle's last reads saved rows
                nblk = min(dh, ROW_BLOCKS)
                for b in prange(nblk):
                    tmp = np.empty(C * sw + WINDOW, np.float32)  # blended source rows, reused by the block's rows
                    for yy in range(b * dh // nblk, (b + 1) * dh // nblk):
                        dbase = i * C * H * W + (dy0 + yy) * W + dx0
                        row(images, perm[i] * C * H * W + sy0 * W + sx0, W, H * W, saved, soff[q], arow[2 * q], nr,
                            sh, sw, dh, yy, images, dbase, H * W, C, xi0, xi1, xl, xoff[i], dw, tmp, align)

    return cpu_paste


def cpu_paste_all_with(*, coef, cycles_into, overwritten_rows, live, paste):
    def cpu_paste_all(images, perm, src_box, dst_box, C, H, W, align, saved):
        """The whole CPU paste in one call: column coefficients, cycles and their
        rotations, the rows saved aside, then the paste (a Python driver of small tensor
        ops cost ~0.4 ms a call here). ``saved`` is the caller's scratch for the saved
        rows: returned, replaced by a larger one if it is too small."""
        nb = perm.shape[0]
        xoff = np.zeros(nb + 1, np.int64)
        for i in range(nb):
            xoff[i + 1] = xoff[i] + (dst_box[4 * i + 3] - dst_box[4 * i + 2] if live(i, src_box, dst_box) else 0)
        xi0 = np.empty(xoff[nb], np.int32)  # int32: the vector gather's permute indices
        xi1 = np.empty(xoff[nb], np.int32)
        xl = np.empty(xoff[nb], np.float32)
        for t in range(xoff[nb]):
            coef(t, xi0, xi1, xl, xoff, src_box, dst_box, nb, align)
        order = np.empty(nb, np.int64)
        cstart = np.empty(nb + 1, np.int64)
        ncyc = cycles_into(perm, order, cstart)
        soff = np.zeros(ncyc + 1, np.int64)
        arow = np.zeros(2 * ncyc, np.int64)  # per cycle: first saved row (relative to the box), row count
        for q in range(ncyc):
            s, n = cstart[q], cstart[q + 1] - cstart[q]
            best, cost = 0, -1
            for j in range(n):  # start the cycle at order[s + j]: its predecessor becomes the last
                last = order[s + (j + n - 1) % n]
                r0, nr = overwritten_rows(last, order[s + j], src_box, dst_box)
                c = nr * (src_box[4 * last + 3] - src_box[4 * last + 2])
                if cost < 0 or c < cost:
                    best, cost = j, c
                    arow[2 * q] = r0
                    arow[2 * q + 1] = nr
            order[s:s + n] = np.roll(order[s:s + n], -best)
            soff[q + 1] = soff[q] + C * cost
        if saved.shape[0] < soff[ncyc]:
            saved = np.empty(soff[ncyc], images.dtype)
        paste(images, saved, perm, src_box, dst_box, order, cstart, ncyc, soff, arow, xi0, xi1, xl, xoff, C, H, W,
              align)
        return saved

    return cpu_paste_all


def cuda_coefs_with(*, first, stride, coef):
    def cuda_coefs(xi0, xi1, xl, xoff, src_box, dst_box, nb, align):
        for t in range(first(), xoff[nb], stride()):
            coef(t, xi0, xi1, xl, xoff, src_box, dst_box, nb, align)

    return cuda_coefs


def cuda_gather_with(*, first, stride, row, locate):
    def cuda_gather(images, scratch, perm, src_box, dst_box, roff, eoff, xi0, xi1, xl, xoff, nb, C, H, W, align):
        for t in range(first(), roff[nb] * WARP, stride()):
            r = t // WARP
            i = locate(roff, nb, r)
            rr = r - roff[i]
            dh = dst_box[4 * i + 1] - dst_box[4 * i]
            dw = dst_box[4 * i + 3] - dst_box[4 * i + 2]
            sy0 = src_box[4 * i]
            sx0 = src_box[4 * i + 2]
            c = rr // dh
            base = (perm[i] * C + c) * H * W + sy0 * W + sx0
            row(images, base, W, src_box[4 * i + 1] - sy0, dh, rr - c * dh, scratch, eoff[i] + rr * dw,
                xi0, xi1, xl, xoff[i], dw, t % WARP, WARP, align)

    return cuda_gather


def cuda_scatter_with(*, first, stride, copy_row, locate):
    def cuda_scatter(images, scratch, dst_box, roff, eoff, nb, C, H, W):
        for t in range(first(), roff[nb] * WARP, stride()):
            r = t // WARP
            i = locate(roff, nb, r)
            rr = r - roff[i]
            dy0 = dst_box[4 * i]
            dh = dst_box[4 * i + 1] - dy0
            dw = dst_box[4 * i + 3] - dst_box[4 * i + 2]
            c = rr // dh
            dst = (i * C + c) * H * W + (dy0 + rr - c * dh) * W + dst_box[4 * i + 2]
            copy_row(scratch, eoff[i] + rr * dw, images, dst, dw, t % WARP, WARP)

    return cuda_scatter


def python_kernels(target: str, dtype: str, simd: bool = False):
    """The kernel bodies for ``target`` and the images' dtype, their helpers compiled
    for that target, the bodies themselves not yet compiled (the PTX check compiles
    these). ``simd``: the CPU row's vector gather (float32 only)."""
    if simd and (target != "cpu" or dtype != "float32"):
        raise ValueError(f"simd=True needs target 'cpu' and float32, got {target!r}, {dtype!r}")
    tg = Target(target)
    load, store = tg.element(dtype)
    coord = tg.device(src_coord, inline=True)
    loc = tg.device(locate, inline=True)
    lerp_ = tg.device(lerp, inline=True)
    coef = tg.device(x_coef_with(src_coord=coord, locate=loc))
    if target == "cpu":
        from numba import prange

        g3 = tg.device(gather3_with(lerp=lerp_, store=store), inline=True)
        if simd:
            g3 = tg.device(gather3_simd_with(lerp3_perm16=_simd.lerp3_perm16(), gather3_scalar=g3), inline=True)
        row = tg.device(resample_rows_cpu_with(src_coord=coord, lerp=lerp_, load=load, store=store,
                                               patch_row=tg.device(patch_row, inline=True), gather3=g3), inline=True)
        live_ = tg.device(live, inline=True)
        # the rows saved aside keep the images' own dtype (a raw copy)
        paste = build("cpu", cpu_paste_with(prange=prange, row=row, live=live_,
                                            copy_slice=tg.device(copy_slice, inline=True)))
        return {"paste_all": cpu_paste_all_with(coef=coef, cycles_into=tg.device(cycles_into), paste=paste, live=live_,
                                                overwritten_rows=tg.device(overwritten_rows_with(live=live_)))}
    first, stride = tg.grid()
    _, store_f32 = tg.element("float32")  # the gathered rows wait in float32 scratch
    gather_row = tg.device(resample_row_with(src_coord=coord, lerp=lerp_, load=load, store=store_f32))
    return {
        "coefs": cuda_coefs_with(first=first, stride=stride, coef=coef),
        "gather": cuda_gather_with(first=first, stride=stride, row=gather_row, locate=loc),
        "scatter": cuda_scatter_with(first=first, stride=stride, copy_row=tg.device(copy_row_with(store=store)),
                                     locate=loc),
    }


@functools.cache
def _compiled(target: str, dtype: str, simd: bool = False):
    return {k: build(target, f) for k, f in python_kernels(target, dtype, simd).items()}


_SCRATCH = threading.local()  # CPU: {dtype: buffer for the saved patches}, grown as needed
# ---------------------------------------------------------------- backends


def _numba(backend: str):
    def run(images, *, perm, src_box, dst_box, align_corners, simd=False):
        """perm (B,), src_box and dst_box (B, 4): checked int64 numpy arrays. simd:
        the CPU float32 kernel's vector gather (see :func:`paste_resized`)."""
        B, C, H, W = images.shape
        F_ = functools.partial(D.flat, backend=backend)
        if backend == "cpu":
            k = _compiled("cpu", D.dtype_name(images), simd)
            x = F_(images)
            # The saved patches (MBs) go to a scratch kept per thread and dtype: a fresh
            # np.empty of that size is new pages from the OS on every call, and their
            # first-touch page faults cost more than the copy itself.
            scratch = _SCRATCH.__dict__
            buf = scratch.get(x.dtype)
            scratch[x.dtype] = k["paste_all"](x, perm, src_box.reshape(-1), dst_box.reshape(-1), C, H, W, align_corners,
                                              np.empty(0, x.dtype) if buf is None else buf)
            return images
        k = _compiled(backend, D.dtype_name(images))
        perm, src_box, dst_box = (torch.from_numpy(a) for a in (perm, src_box, dst_box))
        dh, dw = dst_box[:, 1] - dst_box[:, 0], dst_box[:, 3] - dst_box[:, 2]
        sh, sw = src_box[:, 1] - src_box[:, 0], src_box[:, 3] - src_box[:, 2]
        live = (dh > 0) & (dw > 0) & (sh > 0) & (sw > 0)
        if not bool(live.any()):
            return images
        dev = images.device
        xoff = D.offsets(torch.where(live, dw, 0))
        xi0 = torch.empty(int(xoff[-1]), dtype=torch.int64, device=dev)
        xi1 = torch.empty_like(xi0)
        xl = torch.empty(int(xoff[-1]), dtype=torch.float32, device=dev)
        sb, db = F_(D.on(src_box.reshape(-1), dev)), F_(D.on(dst_box.reshape(-1), dev))
        x, xo = F_(images), F_(D.on(xoff, dev))
        coefs = (F_(xi0), F_(xi1), F_(xl))
        D.launch(backend, k["coefs"], int(xoff[-1]), *coefs, xo, sb, db, B, align_corners)
        roff = D.offsets(torch.where(live, C * dh, 0))
        eoff = D.offsets(torch.where(live, C * dh * dw, 0))
        s = F_(torch.empty(int(eoff[-1]), dtype=torch.float32, device=dev))
        ro, eo = F_(D.on(roff, dev)), F_(D.on(eoff, dev))
        n = int(roff[-1]) * WARP
        D.launch(backend, k["gather"], n, x, s, F_(D.on(perm, dev)), sb, db, ro, eo, *coefs, xo, B, C, H, W, align_corners)
        D.launch(backend, k["scatter"], n, x, s, db, ro, eo, B, C, H, W)
        return images

    return run


_cpu = D.register("paste_resized", "cpu")(_numba("cpu"))
D.register("paste_resized", "cuda")(_numba("cuda"))


@D.register("paste_resized", "reference")
def paste_resized_reference(images, *, perm, src_box, dst_box, align_corners=True):
    """Pure torch: per-sample ``F.interpolate`` of the cut-out patch, computed in float32
    (float64 for float64 input) for all samples first, then slice-assigned."""
    patches = []
    for i in range(images.shape[0]):
        sy0, sy1, sx0, sx1 = src_box[i].tolist()
        dy0, dy1, dx0, dx1 = dst_box[i].tolist()
        if min(sy1 - sy0, sx1 - sx0, dy1 - dy0, dx1 - dx0) <= 0:
            patches.append(None)
            continue
        patch = images[int(perm[i]), :, sy0:sy1, sx0:sx1][None]
        ft = torch.float64 if images.dtype == torch.float64 else torch.float32
        out = F.interpolate(patch.to(ft), size=(dy1 - dy0, dx1 - dx0), mode="bilinear", align_corners=align_corners)
        patches.append(out[0].to(images.dtype))
    for i, p in enumerate(patches):
        if p is not None:
            dy0, dy1, dx0, dx1 = dst_box[i].tolist()
            images[i, :, dy0:dy1, dx0:dx1] = p
    return images


# ---------------------------------------------------------------- public


def paste_resized(
    images: torch.Tensor,
    *,
    perm: torch.Tensor,
    src_box: torch.Tensor,
    dst_box: torch.Tensor,
    align_corners: bool = True,
    backend: str = "auto",
    simd: bool | None = None,
    tag: str = "mix",
) -> torch.Tensor:
    """Paste ``images[perm[i]][src_box[i]]``, resized, into ``images[i][dst_box[i]]``, in place.

    images: NCHW float32/float16, contiguous, CPU or CUDA. perm: int64 permutation (N,)
    (self-pairs allowed). src_box, dst_box: int64 (N, 4) as
    (y0, y1, x0, x1), half-open, inside the image. Returns ``images``.
    ``simd``: the CPU kernel's AVX-512 column gather for float32 images, bit-identical
    to its scalar loop and faster; ``None`` uses it where the CPU has it
    (:func:`kernels._simd.available`, which ``DALI_SNAPMIX_SIMD=0`` turns off),
    ``False`` never, ``True`` always (an error where it cannot run). Other backends and
    float16 images have no vector gather. ``tag`` prefixes the NVTX range (e.g.
    ``"snapmix/paste_resized"``).
    """
    D.check_images("images", images)
    B, C, H, W = images.shape
    # host numpy arrays: what the CPU kernel takes, converted once (the reference indexes them alike)
    p = D.check_perm("perm", perm, B, permutation=True, numpy=True)
    sb = D.check_boxes("src_box", src_box, B, H, W, numpy=True)
    db = D.check_boxes("dst_box", dst_box, B, H, W, numpy=True)
    if not isinstance(align_corners, bool):
        raise ValueError(f"align_corners must be a bool, got {align_corners!r}")
    if simd is not None and not isinstance(simd, bool):
        raise ValueError(f"simd must be None, True or False, got {simd!r}")
    fn = D.pick("paste_resized", backend, images.device)
    kw = {}
    if fn is _cpu:  # the only kernel with a vector gather
        kw["simd"] = _vector_gather(simd, images.dtype)
    elif simd:
        raise ValueError(f"simd=True needs the CPU kernel (backend 'cpu' or 'auto' on CPU tensors), got backend {backend!r} "
                         f"with tensors on {images.device}")
    with nvtx_range(f"{tag}/paste_resized"):
        return fn(images, perm=p, src_box=sb, dst_box=db, align_corners=align_corners, **kw)


def _vector_gather(simd: bool | None, dtype: torch.dtype) -> bool:
    """Whether the CPU paste uses the AVX-512 gather (``paste_resized``'s ``simd``)."""
    if simd is None:
        return dtype == torch.float32 and _simd.available()
    if simd and dtype != torch.float32:
        raise ValueError(f"simd=True needs float32 images, got {dtype}")
    if simd and not _simd.available():
        raise ValueError("simd=True needs a CPU with AVX-512F (and DALI_SNAPMIX_SIMD not 0); this one has none")
    return simd
