"""Per-element helpers shared by every kernel, written once for both targets.

``FT`` is the floating type the arithmetic runs in; :func:`kernels._target.rebind`
points it at ``np.float32`` (image kernels, like torch's float opmath) or
``np.float64`` (SPM masses).
"""

from __future__ import annotations

import numpy as np

FT = np.float32  # re-bound per use


def src_coord(d, n_in, n_out, align_corners):
    """torch's bilinear source position for output index ``d`` along one axis:
    ``(i0, i1, lam)`` with value = (1 - lam) * in[i0] + lam * in[i1].
    Same formulas as ATen's area_pixel_compute_source_index."""
    if align_corners:
        s = FT(0.0)
        if n_out > 1:
            s = FT(n_in - 1) / FT(n_out - 1) * FT(d)
    else:
        s = FT(n_in) / FT(n_out) * (FT(d) + FT(0.5)) - FT(0.5)
        if s < FT(0.0):
            s = FT(0.0)
    i0 = int(s)
    if i0 > n_in - 1:
        i0 = n_in - 1
    i1 = i0 + 1 if i0 < n_in - 1 else i0
    lam = s - FT(i0)
    if lam < FT(0.0):
        lam = FT(0.0)
    if lam > FT(1.0):
        lam = FT(1.0)
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
