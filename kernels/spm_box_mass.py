"""Semantic percent map mass inside boxes (SnapMix, Huang et al., AAAI 2021, Eq. 5-6).

The SPM of a sample is its class activation map upsampled bilinearly
(align_corners=False) to the image size, shifted by its minimum and divided by its sum
(no epsilon: a constant CAM gives NaN, as in the authors' code). This returns the SPM's
mass inside each box without materialising the H x W map:

* the upsampled map is U = Ry @ C @ Rx^T (separable, linear), so its sum over a box is
  wy^T C wx, where wy[j] sums Ry's column j over the box's rows: a difference of two
  rows of Ry's prefix sums, a small table cached per (h, H) (same for x);
* its minimum is exact too: within a run of output rows that share the same pair of
  input rows, U is linear in the row weight, so it is smallest at the run's first or
  last row; the same holds for columns. The minimum over the 2h x 2w run ends is the
  minimum over all H x W samples.

Arithmetic in float64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import _dispatch as D
from ._target import Target, build, nvtx_range

__all__ = ["spm_box_mass", "spm_box_mass_reference", "spm_reference"]


# ---------------------------------------------------------------- per-axis tables (host)


@functools.cache
def axis_tables(n_in: int, n_out: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For one axis upsampled n_in -> n_out (bilinear, align_corners=False):

    * ``prefix`` (n_out + 1, n_in): prefix[b, j] = sum over outputs d < b of the weight of
      input j in output d, so a box [b0, b1) weighs input j by prefix[b1, j] - prefix[b0, j];
    * ``ends`` (m, 4): (i0, i1, w0, w1) of every output that starts or ends a run of
      outputs sharing one input pair (the only candidates for the map's minimum).

    The weights are torch's own: F.interpolate applied to the identity, in float64.
    """
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in, 1)
    R = F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T  # (n_out, n_in)
    prefix = torch.cat([torch.zeros(1, n_in, dtype=torch.float64), R.cumsum(0)])
    i0 = (R != 0).int().argmax(1)  # first nonzero input of each output
    i1 = torch.minimum(i0 + 1, torch.tensor(n_in - 1))
    new_run = torch.ones(n_out, dtype=torch.bool)
    new_run[1:] = i0[1:] != i0[:-1]
    last = torch.ones(n_out, dtype=torch.bool)
    last[:-1] = new_run[1:]
    d = (new_run | last).nonzero()[:, 0]
    w0 = R[d, i0[d]]
    w1 = torch.where(i1[d] != i0[d], R[d, i1[d]], torch.zeros_like(w0))
    ends = torch.stack([i0[d].double(), i1[d].double(), w0, w1], 1)
    return prefix.contiguous().to(device), ends.contiguous().to(device)


# ---------------------------------------------------------------- the math, once (kernel)


def weighted_sum(cams, base, py, y0, y1, px, x0, x1, h, w):
    """Sum of the upsampled map over rows [y0, y1) x columns [x0, x1): wy^T C wx."""
    acc = 0.0
    for j in range(h):
        wy = py[y1 * h + j] - py[y0 * h + j]
        if wy != 0.0:
            s = 0.0
            for k in range(w):
                s += np.float64(cams[base + j * w + k]) * (px[x1 * w + k] - px[x0 * w + k])
            acc += wy * s
    return acc


def upsampled_min(cams, base, ey, my, ex, mx, w):
    """Exact minimum of the upsampled map: along a run of outputs that share one input
    pair the map is linear in the weight, so its extremes are at the runs' ends."""
    mn = math.inf
    for a in range(my):
        y0 = int(ey[4 * a])
        y1 = int(ey[4 * a + 1])
        wy0 = ey[4 * a + 2]
        wy1 = ey[4 * a + 3]
        for b in range(mx):
            x0 = int(ex[4 * b])
            x1 = int(ex[4 * b + 1])
            wx0 = ex[4 * b + 2]
            wx1 = ex[4 * b + 3]
            v = wy0 * (wx0 * np.float64(cams[base + y0 * w + x0]) + wx1 * np.float64(cams[base + y0 * w + x1])) + wy1 * (
                wx0 * np.float64(cams[base + y1 * w + x0]) + wx1 * np.float64(cams[base + y1 * w + x1])
            )
            if v < mn:
                mn = v
    return mn


def sample_masses_with(*, upsampled_min, weighted_sum):
    def sample_masses(n, cams, boxes, out, py, px, ey, my, ex, mx, K, h, w, H, W):
        """SPM masses of sample n inside its K boxes: the map's minimum and total once, then
        one weighted sum per box."""
        base = n * h * w
        lo = np.float64(cams[base])
        hi = lo
        for k in range(h * w):
            v = np.float64(cams[base + k])
            lo = min(lo, v)
            hi = max(hi, v)
        constant = lo == hi or lo != lo or hi != hi  # constant map (or NaN in it): 0 / 0 in the reference
        mn = 0.0
        total = 0.0
        if not constant:
            mn = upsampled_min(cams, base, ey, my, ex, mx, w)
            total = weighted_sum(cams, base, py, 0, H, px, 0, W, h, w) - mn * H * W
        for k in range(K):
            q = n * K + k
            y0 = boxes[4 * q]
            y1 = boxes[4 * q + 1]
            x0 = boxes[4 * q + 2]
            x1 = boxes[4 * q + 3]
            if y1 <= y0 or x1 <= x0:  # an empty sum, even of a NaN map
                out[q] = 0.0
            elif constant:
                out[q] = math.nan
            else:
                inside = weighted_sum(cams, base, py, y0, y1, px, x0, x1, h, w) - mn * (y1 - y0) * (x1 - x0)
                out[q] = inside / total

    return sample_masses


# ---------------------------------------------------------------- kernels


def cpu_masses_with(*, prange, item):
    def cpu_masses(cams, boxes, out, py, px, ey, my, ex, mx, K, h, w, H, W):
        for n in prange(out.shape[0] // K):
            item(n, cams, boxes, out, py, px, ey, my, ex, mx, K, h, w, H, W)

    return cpu_masses


def cuda_masses_with(*, first, stride, item):
    def cuda_masses(cams, boxes, out, py, px, ey, my, ex, mx, K, h, w, H, W):
        for n in range(first(), out.shape[0] // K, stride()):
            item(n, cams, boxes, out, py, px, ey, my, ex, mx, K, h, w, H, W)

    return cuda_masses


def python_kernels(target: str):
    """The kernel body for ``target``, its helpers compiled for that target, the body
    itself not yet compiled (the PTX check compiles it)."""
    tg = Target(target)
    item = tg.device(sample_masses_with(upsampled_min=tg.device(upsampled_min), weighted_sum=tg.device(weighted_sum)))
    if target == "cpu":
        from numba import prange

        return (cpu_masses_with(prange=prange, item=item),)
    first, stride = tg.grid()
    return (cuda_masses_with(first=first, stride=stride, item=item),)


@functools.cache
def _compiled(target: str):
    return build(target, python_kernels(target)[0])


# ---------------------------------------------------------------- backends


@functools.cache
def _table_args(h: int, w: int, H: int, W: int, device: str, backend: str) -> tuple:
    """The kernel's table arguments, flattened once per shape (a per-call flattening of
    six tensors was a third of a call's time)."""
    py, ey = axis_tables(h, H, device)
    px, ex = axis_tables(w, W, device)
    return (D.flat(py, backend), D.flat(px, backend), D.flat(ey, backend), ey.shape[0], D.flat(ex, backend),
            ex.shape[0])


def _numba(backend: str):
    def run(cams, boxes, *, image_size):
        """boxes: checked int64 numpy array (B, K, 4)."""
        B, h, w = cams.shape
        K = boxes.shape[1]
        H, W = image_size
        dev = cams.device
        if backend == "cpu":  # numpy in and out: each torch op costs ~10-20 us with cold caches
            out = np.empty(B * K, np.float64)
            if K:
                _compiled("cpu")(D.flat(cams, "cpu"), boxes.reshape(-1), out, *_table_args(h, w, H, W, "cpu", "cpu"),
                                 K, h, w, H, W)
            return torch.from_numpy(out).view(B, K)
        out = torch.empty(B * K, dtype=torch.float64, device=dev)
        if K == 0:  # the kernels loop over samples, B * K // K of them
            return out.view(B, K)
        args = (D.flat(cams, backend), D.flat(D.on(torch.from_numpy(boxes).reshape(-1), dev), backend),
                D.flat(out, backend), *_table_args(h, w, H, W, str(dev), backend), K, h, w, H, W)
        D.launch(backend, _compiled(backend), B, *args)
        return out.view(B, K)

    return run


D.register("spm_box_mass", "cpu")(_numba("cpu"))
D.register("spm_box_mass", "cuda")(_numba("cuda"))


def spm_reference(cams, *, image_size, precision=torch.float64):
    """SnapMix Eq. 5 materialised: (N, H, W) CAMs upsampled bilinearly (align_corners=False)
    to ``image_size``, minus their minimum, over their sum (NaN for a constant map)."""
    up = F.interpolate(cams[:, None].to(precision), size=tuple(image_size), mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    return up / up.sum(dim=(1, 2), keepdim=True)


@D.register("spm_box_mass", "reference")
def spm_box_mass_reference(cams, boxes, *, image_size, precision=torch.float64):
    """Materialise the SPM at full resolution (float64; the authors' code: float32) and
    sum it inside each box."""
    spm = spm_reference(cams, image_size=image_size, precision=precision)
    out = torch.empty(boxes.shape[:2], dtype=torch.float64, device=cams.device)
    for b in range(boxes.shape[0]):
        for k in range(boxes.shape[1]):
            y0, y1, x0, x1 = boxes[b, k].tolist()
            out[b, k] = spm[b, y0:y1, x0:x1].sum()
    return out


# ---------------------------------------------------------------- public


def spm_box_mass(
    cams: torch.Tensor,
    boxes: torch.Tensor,
    *,
    image_size: tuple[int, int],
    backend: str = "auto",
    tag: str = "mix",
) -> torch.Tensor:
    """Mass of each sample's semantic percent map inside its box(es).

    cams: (N, h, w) float32/float64 class activation maps at feature resolution (CPU or
    CUDA). boxes: int64 (N, 4) or (N, K, 4) as (y0, y1, x0, x1) in image pixels.
    image_size: (H, W) the CAM is upsampled to. Returns float64 (N,) or (N, K); NaN for
    a sample whose CAM is constant (the SPM is 0 / 0 there).
    """
    if not isinstance(cams, torch.Tensor) or cams.dim() != 3:
        raise ValueError(f"cams must be an (N, h, w) tensor, got {getattr(cams, 'shape', type(cams).__name__)}")
    if cams.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cams must be float32 or float64 (cast autocast outputs), got {cams.dtype}")
    if not cams.is_contiguous():
        raise ValueError(f"cams must be contiguous, got strides {cams.stride()}")
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and s > 0 for s in image_size)
    ):
        raise ValueError(f"image_size must be (H, W) positive ints, got {image_size!r}")
    N = cams.shape[0]
    H, W = image_size
    squeeze = isinstance(boxes, torch.Tensor) and boxes.dim() == 2
    b3 = boxes[:, None] if squeeze else boxes
    if not isinstance(b3, torch.Tensor) or b3.dim() != 3:
        raise ValueError(f"boxes must be (N, 4) or (N, K, 4), got {getattr(boxes, 'shape', type(boxes).__name__)}")
    K = b3.shape[1]
    flat_boxes = D.check_boxes("boxes", b3.reshape(-1, 4), N * K, H, W, numpy=True)
    fn = D.pick("spm_box_mass", backend, cams.device)
    with nvtx_range(f"{tag}/spm_box_mass"):
        out = fn(cams, flat_boxes.reshape(N, K, 4), image_size=(H, W))
    return out[:, 0] if squeeze else out
