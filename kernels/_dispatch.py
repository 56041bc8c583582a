"""Argument checks, backend choice, and handing torch tensors to Numba without copies."""

from __future__ import annotations

import math
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


def check_perm(name: str, perm, n: int, *, permutation: bool) -> torch.Tensor:
    """int64 CPU copy of ``perm``; every entry in [0, n) (and a permutation if asked)."""
    if not isinstance(perm, torch.Tensor) or perm.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an int64 tensor, got {getattr(perm, 'dtype', type(perm).__name__)}")
    p = perm.detach().to("cpu", torch.int64)
    if p.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(p.shape)}")
    a = p.numpy()
    if n and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name} entries must be in [0, {n}), got {p.tolist()}")
    if permutation and not np.array_equal(np.sort(a), np.arange(n)):
        raise ValueError(f"{name} must be a permutation of 0..{n - 1}, got {p.tolist()}")
    return p


def check_boxes(name: str, boxes, n: int, h: int, w: int) -> torch.Tensor:
    """int64 CPU copy of (n, 4) boxes (y0, y1, x0, x1), half-open, inside an h x w image."""
    if not isinstance(boxes, torch.Tensor) or boxes.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an int64 tensor of (y0, y1, x0, x1), got {getattr(boxes, 'dtype', type(boxes).__name__)}")
    b = boxes.detach().to("cpu", torch.int64)
    if b.shape != (n, 4):
        raise ValueError(f"{name} must have shape ({n}, 4), got {tuple(b.shape)}")
    y0, y1, x0, x1 = b.numpy().T  # numpy: a few us per op on these tiny arrays, torch ~5
    bad = (y0 < 0) | (y1 < y0) | (y1 > h) | (x0 < 0) | (x1 < x0) | (x1 > w)
    if bad.any():
        k = int(bad.nonzero()[0][0])
        raise ValueError(
            f"{name}[{k}] = {b[k].tolist()} is not a (y0, y1, x0, x1) box with 0 <= y0 <= y1 <= {h} "
            f"and 0 <= x0 <= x1 <= {w}"
        )
    return b


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
        kernel[2, 16](*args)
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
