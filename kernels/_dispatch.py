"""Argument checks, backend choice, and handing torch tensors to Numba without copies."""

from __future__ import annotations

import functools
import math
import sys
import types
from collections.abc import Callable

import numpy as np
import torch

BACKENDS = ("auto", "cpu", "cuda", "reference")
_REGISTRY: dict[tuple[str, str], Callable] = {}


def register(kernel: str, backend: str) -> Callable[[Callable], Callable]:
    """Register one backend of one kernel; a second registration is a bug."""

    def deco(fn: Callable) -> Callable:
        key = (kernel, backend)
        if key in _REGISTRY:
            raise RuntimeError(f"backend {backend!r} of kernel {kernel!r} is registered twice")
        _REGISTRY[key] = fn
        return fn

    return deco


def simulator() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def pick(kernel: str, backend: str, device: torch.device) -> Callable:
    """The implementation to run. ``auto``: CUDA tensors -> CUDA kernel, else CPU kernel.
    ``cuda`` accepts CPU tensors only under the CUDA simulator."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "cuda" if device.type == "cuda" else "cpu"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
    if backend == "cuda" and device.type != "cuda" and not simulator():
        raise ValueError(
            f"backend='cuda' needs CUDA tensors, got tensors on {device} "
            "(CPU tensors are accepted only under the CUDA simulator, NUMBA_ENABLE_CUDASIM=1)"
        )
    return _REGISTRY[(kernel, backend)]


def check_images(name: str, x, *, dtypes=(torch.float32, torch.float16)) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be NCHW (4-D), got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (NCHW, not channels_last or a strided view), got strides {x.stride()}")


def _cpu_int64(name: str, t, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an int64 tensor{what}, got {getattr(t, 'dtype', type(t).__name__)}")
    if t.dtype == torch.int64 and t.device.type == "cpu" and not t.requires_grad:
        return t  # the common case: no copy, no torch op (each costs ~10 us on a cold cache)
    return t.detach().to("cpu", torch.int64)


def check_perm(name: str, perm, n: int, *, permutation: bool, numpy: bool = False):
    """int64 CPU ``perm``; every entry in [0, n) (and a permutation if asked).
    ``numpy=True`` returns the numpy view the check made (a CPU kernel's argument:
    each tensor -> numpy conversion costs ~35 us on a cold cache)."""
    p = _cpu_int64(name, perm, "")
    if p.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(p.shape)}")
    a = p.numpy()
    bad = _checks().perm_problem(a, n, permutation) if n else 0
    if bad == 1:
        raise ValueError(f"{name} entries must be in [0, {n}), got {p.tolist()}")
    if bad == 2:
        raise ValueError(f"{name} must be a permutation of 0..{n - 1}, got {p.tolist()}")
    return a if numpy else p


def check_boxes(name: str, boxes, n: int, h: int, w: int, *, numpy: bool = False):
    """int64 CPU (n, 4) ``boxes`` (y0, y1, x0, x1), half-open, inside an h x w image
    (``numpy=True``: as a numpy array, see :func:`check_perm`)."""
    b = _cpu_int64(name, boxes, " of (y0, y1, x0, x1)")
    if b.shape != (n, 4):
        raise ValueError(f"{name} must have shape ({n}, 4), got {tuple(b.shape)}")
    b = b.contiguous()
    a = b.numpy()
    k = _checks().first_bad_box(a.reshape(-1), h, w)
    if k >= 0:
        raise ValueError(
            f"{name}[{k}] = {b[k].tolist()} is not a (y0, y1, x0, x1) box with 0 <= y0 <= y1 <= {h} "
            f"and 0 <= x0 <= x1 <= {w}"
        )
    return a if numpy else b


@functools.cache
def _checks():
    """The argument checks as compiled loops: a dozen numpy and torch calls on these
    tiny arrays cost 0.1 ms when the caches are cold (as after any torch op), one
    compiled call a few us. Compiled on first use: importing needs no Numba."""
    import numba

    @numba.njit(cache=True)
    def first_bad_box(b, h, w):
        for k in range(b.shape[0] // 4):
            y0, y1, x0, x1 = b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]
            if y0 < 0 or y1 < y0 or y1 > h or x0 < 0 or x1 < x0 or x1 > w:
                return k
        return -1

    @numba.njit(cache=True)
    def perm_problem(p, n, permutation):
        """0: fine; 1: an entry outside [0, n); 2: not a permutation."""
        seen = np.zeros(n, np.bool_)
        twice = False
        for v in p:
            if v < 0 or v >= n:
                return 1
            twice |= seen[v]
            seen[v] = True
        return 2 if permutation and twice else 0

    return types.SimpleNamespace(first_bad_box=first_bad_box, perm_problem=perm_problem)


def flat(t: torch.Tensor, backend: str):
    """A 1-D Numba-usable view of a contiguous tensor, sharing its memory. float16 is
    handed over as its uint16 bit patterns (see kernels._target)."""
    t = t.reshape(-1)
    if t.dtype == torch.float16:
        t = t.view(torch.int16)
    if t.device.type == "cuda":
        from numba import cuda

        a = cuda.as_cuda_array(t)
        return a.view(np.uint16) if t.dtype == torch.int16 else a
    a = t.numpy()
    return a.view(np.uint16) if t.dtype == torch.int16 else a


def launch(backend: str, kernel, n_items: int, *args) -> None:
    """Run a compiled kernel over ``n_items`` work items: a CPU kernel is called (its
    prange covers the items); a CUDA kernel gets a grid-stride launch on torch's current
    stream (tiny grids under the simulator, where every thread is a Python thread)."""
    if n_items <= 0:
        return
    if backend == "cpu":
        kernel(*args)
        return
    from numba import cuda

    if simulator():
        # The simulator's scheduler polls its threads in a busy loop; at Python's default
        # 5 ms switch interval that loop keeps the GIL for whole slices while they wait
        # (a 5x3x16x16 method check: 230 s, against 36 s at 1 us).
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            kernel[2, 16](*args)
        finally:
            sys.setswitchinterval(old)
        return
    threads = 256
    blocks = min(math.ceil(n_items / threads), 65535)
    stream = cuda.external_stream(torch.cuda.current_stream().cuda_stream)
    kernel[blocks, threads, stream](*args)


def dtype_name(t: torch.Tensor) -> str:
    return {torch.float32: "float32", torch.float16: "float16", torch.float64: "float64"}[t.dtype]


def offsets(sizes: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums with the total appended: where each sample's items start."""
    return torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])


def on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Small index tensors moved next to the images."""
    return t.contiguous() if t.device == device else t.to(device, non_blocking=True).contiguous()
