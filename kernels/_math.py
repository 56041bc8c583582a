"""Per-element helpers shared by every kernel, written once for both targets. They call
no other helper, so :class:`kernels._target.Target` compiles them as they are."""

from __future__ import annotations

import numpy as np


def src_coord(d, n_in, n_out, align_corners):
    """torch's bilinear source position for output index ``d`` along one axis:
    ``(i0, i1, lam)`` with value = (1 - lam) * in[i0] + lam * in[i1].
    Same formulas as ATen's area_pixel_compute_source_index, in float32 like torch's
    float32 interpolate."""
    if align_corners:
        s = np.float32(0.0)
        if n_out > 1:
            s = np.float32(n_in - 1) / np.float32(n_out - 1) * np.float32(d)
    else:
        s = np.float32(n_in) / np.float32(n_out) * (np.float32(d) + np.float32(0.5)) - np.float32(0.5)
        if s < np.float32(0.0):
            s = np.float32(0.0)
    i0 = int(s)
    if i0 > n_in - 1:
        i0 = n_in - 1
    i1 = i0 + 1 if i0 < n_in - 1 else i0
    lam = s - np.float32(i0)
    if lam < np.float32(0.0):
        lam = np.float32(0.0)
    if lam > np.float32(1.0):
        lam = np.float32(1.0)
    return i0, i1, lam


def locate(offsets, n, t):
    """Largest i < n with offsets[i] <= t (offsets non-decreasing, offsets[0] == 0)."""
    lo = 0
    hi = n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offsets[mid] <= t:
            lo = mid
        else:
            hi = mid
    return lo
