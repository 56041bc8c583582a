"""One source, two targets: how the per-element math becomes a CPU and a CUDA kernel.

Each kernel module writes its math as plain Python functions that call their helpers
through module globals (``load``, ``store``, ``src_coord`` ...). :func:`build` re-binds
those globals to the helpers compiled for one target and compiles the function for it:
``numba.njit`` for the CPU, ``numba.cuda.jit(device=True)`` for CUDA. The code object is
the same for both; only what its global names point to differs. Under the CUDA
simulator the same functions simply run as Python.

float16 images travel as their uint16 bit patterns and are converted by the two
functions below on both targets (Numba's CPU target has no float16), so a float16
kernel rounds exactly like ``tensor.half()`` (round to nearest even) everywhere.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable

import numpy as np

__all__ = ["Target", "build", "half_to_float", "float_to_half", "nvtx_range"]


# ---------------------------------------------------------------- element helpers


def half_to_float(b):
    """IEEE binary16 bits (an integer) -> float32 value."""
    sign = np.float32(-1.0) if b & 0x8000 else np.float32(1.0)
    e = (b >> 10) & 0x1F
    m = b & 0x3FF
    if e == 0:
        return sign * np.float32(m) * np.float32(5.960464477539063e-08)  # 2**-24
    if e == 31:
        return sign * np.float32(math.inf) if m == 0 else np.float32(math.nan)
    return sign * np.float32(1024 + m) * np.float32(math.ldexp(1.0, int(e) - 25))


def float_to_half(v):
    """float value -> IEEE binary16 bits (uint16), round to nearest even like torch."""
    if v != v:
        return np.uint16(0x7E00)
    sign = 0x8000 if v < 0 or (v == 0 and math.copysign(1.0, v) < 0) else 0
    a = abs(float(v))
    if a >= 65520.0:  # rounds to infinity
        return np.uint16(sign | 0x7C00)
    if a < 6.103515625e-05:  # below 2**-14: subnormal, a multiple of 2**-24
        return np.uint16(sign | int(round(a * 16777216.0)))
    mant, e = math.frexp(a)  # a = mant * 2**e, 0.5 <= mant < 1
    frac = int(round((mant * 2.0 - 1.0) * 1024.0))  # may carry into the exponent: correct
    return np.uint16(sign | (((e - 1 + 15) << 10) + frac))


def load_f32(a, k):
    return np.float32(a[k])


def store_f32(a, k, v):
    a[k] = v


def load_f16(a, k):
    return half_to_float(a[k])


def store_f16(a, k, v):
    a[k] = float_to_half(v)


# ---------------------------------------------------------------- targets


class Target:
    """Compiles plain functions for ``"cpu"`` (njit) or ``"cuda"`` (device functions;
    the CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1``)."""

    def __init__(self, name: str) -> None:
        if name not in ("cpu", "cuda"):
            raise ValueError(f"target must be 'cpu' or 'cuda', got {name!r}")
        self.name = name

    def device(self, fn: Callable, *, inline: bool = False, **deps) -> Callable:
        """``inline=True`` for tiny per-pixel helpers: Numba-level inlining is what lets
        LLVM optimise the pixel loop, but it multiplies compile time for big functions."""
        f = rebind(fn, **deps)
        if self.name == "cpu":
            import numba

            return numba.njit(error_model="numpy", inline="always" if inline else "never")(f)
        from numba import cuda

        return cuda.jit(device=True)(f)

    def element(self, dtype: str, **deps) -> dict[str, Callable]:
        """load/store (and the helpers they need) for one image dtype."""
        if dtype == "float32":
            return {"load": self.device(load_f32, inline=True), "store": self.device(store_f32, inline=True)}
        if dtype == "float16":
            h2f, f2h = self.device(half_to_float, inline=True), self.device(float_to_half, inline=True)
            return {
                "load": self.device(load_f16, half_to_float=h2f, inline=True),
                "store": self.device(store_f16, float_to_half=f2h, inline=True),
            }
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")


def rebind(fn: Callable, **deps) -> Callable:
    """``fn``'s code with some of its global names pointing elsewhere."""
    missing = [k for k in deps if k not in fn.__code__.co_names]
    if missing:
        raise ValueError(f"{fn.__name__} does not use the globals {missing}")
    g = dict(fn.__globals__)
    g.update(deps)
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


def build(target: str, kernel: Callable, **deps) -> Callable:
    """Compile a top-level kernel body (grid-stride for CUDA, prange for CPU)."""
    f = rebind(kernel, **deps)
    if target == "cpu":
        import numba

        # no cache=True: Numba would key the cache on this file only, not on the helpers
        return numba.njit(parallel=True, error_model="numpy")(f)
    from numba import cuda

    return cuda.jit(f)


# ---------------------------------------------------------------- profiling


class _Range:
    """One named NVTX push/pop range of the ``dali_snapmix`` domain, reusable."""

    def __init__(self, domain, name: str) -> None:
        self.domain, self.attributes = domain, domain.get_event_attributes(message=name)

    def __enter__(self) -> None:
        self.domain.push_range(self.attributes)

    def __exit__(self, *exc) -> None:
        self.domain.pop_range()


@functools.cache
def nvtx_range(name: str) -> _Range:
    """An NVTX range (seen by Nsight Systems) for ``with``. Domain and attributes are
    looked up once per name: ``nvtx.annotate`` rebuilds them on every call (~30 us
    with cold caches). Without a profiler the domain is nvtx's no-op one."""
    import nvtx

    return _Range(nvtx.get_domain("dali_snapmix"), name)
