"""One source, two targets: how the per-element math becomes a CPU and a CUDA kernel.

Each kernel module writes its math as plain Python functions. A function that calls a
helper gets it as an argument of a small factory around it (``x_coef_with(src_coord=...,
locate=...)`` returns ``x_coef``), so every name in a kernel body is a parameter, a local
or a module constant a reader can find. :class:`Target` compiles the functions for one
target, ``numba.njit`` for the CPU and ``numba.cuda.jit(device=True)`` for CUDA, and the
module's ``python_kernels`` wires the compiled helpers into the factories: the code is
the same for both targets, only the helpers handed in differ. Under the CUDA simulator
the same functions simply run as Python.

float16 images travel as their uint16 bit patterns and are converted by the two
functions below on both targets (Numba's CPU target has no float16), so a float16
kernel rounds exactly like ``tensor.half()`` (round to nearest even) everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
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


def load_f16_with(*, half_to_float):
    def load_f16(a, k):
        return half_to_float(a[k])

    return load_f16


def store_f16_with(*, float_to_half):
    def store_f16(a, k, v):
        a[k] = float_to_half(v)

    return store_f16


# ---------------------------------------------------------------- targets


class Target:
    """Compiles plain functions for ``"cpu"`` (njit) or ``"cuda"`` (device functions;
    the CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1``)."""

    def __init__(self, name: str) -> None:
        if name not in ("cpu", "cuda"):
            raise ValueError(f"target must be 'cpu' or 'cuda', got {name!r}")
        self.name = name

    def device(self, fn: Callable, *, inline: bool = False) -> Callable:
        """``fn`` as a helper callable from kernels. ``inline=True`` for tiny per-pixel
        helpers: Numba-level inlining is what lets LLVM optimise the pixel loop, but it
        multiplies compile time for big functions (CUDA inlines on its own)."""
        if self.name == "cpu":
            import numba

            return numba.njit(error_model="numpy", inline="always" if inline else "never")(fn)
        from numba import cuda

        return cuda.jit(device=True)(fn)

    def element(self, dtype: str) -> tuple[Callable, Callable]:
        """``(load, store)`` for one image dtype: ``load(a, k)`` is element k of ``a`` as
        float32, ``store(a, k, v)`` writes float32 ``v`` there."""
        if dtype == "float32":
            return self.device(load_f32, inline=True), self.device(store_f32, inline=True)
        if dtype == "float16":
            h2f, f2h = self.device(half_to_float, inline=True), self.device(float_to_half, inline=True)
            return (self.device(load_f16_with(half_to_float=h2f), inline=True),
                    self.device(store_f16_with(float_to_half=f2h), inline=True))
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")

    def grid(self) -> tuple[Callable, Callable]:
        """CUDA: ``(first, stride)``, device functions for a grid-stride loop
        ``for t in range(first(), n, stride())`` (see :mod:`._cuda_grid`)."""
        if self.name != "cuda":
            raise ValueError(f"grid() is for the 'cuda' target, not {self.name!r}")
        from . import _cuda_grid

        return self.device(_cuda_grid.first), self.device(_cuda_grid.stride)


def build(target: str, kernel: Callable) -> Callable:
    """Compile a top-level kernel body (grid-stride for CUDA, prange for CPU)."""
    if target == "cpu":
        import numba

        return _disk_cached(numba.njit(parallel=True, error_model="numpy")(kernel))
    from numba import cuda

    return cuda.jit(kernel)


# ---------------------------------------------------------------- the CPU kernels' disk cache


def variant_key(obj) -> str:
    """A kernel or helper with the helpers its factory closed over, recursively, as
    text: the same function body built with other helpers (float16 loads, the SIMD
    gather) is another variant and must not share a cache entry."""
    py = getattr(obj, "py_func", obj)  # a Numba dispatcher: its Python function
    if isinstance(py, (types.FunctionType, type)):
        name = f"{py.__module__}.{py.__qualname__}"
    else:
        return repr(py)
    deps = {}
    if getattr(py, "__closure__", None):
        deps = dict(zip(py.__code__.co_freevars, (c.cell_contents for c in py.__closure__)))
    return name + ("[" + ",".join(f"{k}={variant_key(v)}" for k, v in sorted(deps.items())) + "]" if deps else "")


@functools.cache
def sources_digest() -> str:
    """Every kernel source file: a helper's edit changes every kernel that may inline it."""
    h = hashlib.sha256()
    for path in sorted(os.scandir(os.path.dirname(__file__)), key=lambda e: e.name):
        if path.name.endswith(".py"):
            with open(path.path, "rb") as fh:
                h.update(path.name.encode() + b"\0" + fh.read())
    return h.hexdigest()


def cache_dir() -> str:
    """Where compiled CPU kernels are kept: DALI_SNAPMIX_KERNEL_CACHE_DIR, else
    NUMBA_CACHE_DIR, else ~/.cache/dali_snapmix; one folder per state of kernels/."""
    root = (os.environ.get("DALI_SNAPMIX_KERNEL_CACHE_DIR") or os.environ.get("NUMBA_CACHE_DIR")
            or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dali_snapmix"))
    return os.path.join(root, "kernels-" + sources_digest()[:16])


@functools.cache
def _variant_cache_class() -> type:
    """Numba's FunctionCache, located by content (one folder per state of kernels/, not
    beside the source file) and keyed on the variant too; built once, on first use."""
    from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator

    class ContentLocator(_CacheLocator):
        def __init__(self, py_func) -> None:
            self._path, self._lineno = cache_dir(), py_func.__code__.co_firstlineno

        def get_cache_path(self) -> str:
            return self._path

        def get_source_stamp(self) -> str:
            return sources_digest()

        def get_disambiguator(self) -> str:
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            self = cls(py_func)
            try:
                self.ensure_cache_path()
            except OSError:
                return None
            return self

    class Impl(CompileResultCacheImpl):
        _locator_classes = [ContentLocator]

    class VariantCache(FunctionCache):
        _impl_class = Impl

        def __init__(self, py_func, variant: str) -> None:
            self._variant = variant
            super().__init__(py_func)

        def _index_key(self, sig, codegen):
            # Numba's own key hashes the closure's cells pickled, which differ between
            # processes when they hold compiled helpers: the variant names them instead
            code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
            return (sig, codegen.magic_tuple(), code, self._variant)

    return VariantCache


def _disk_cached(dispatcher):
    """Numba's on-disk cache, keyed on the content of every file in kernels/ and on the
    variant (Numba's own key is the kernel's file, its path and its bytecode, blind to the
    helpers bound in, and a copy elsewhere, such as an install, starts cold): a process
    loads a compiled kernel in milliseconds instead of compiling it for seconds.
    DALI_SNAPMIX_KERNEL_CACHE=0 turns it off (each process compiles, as Numba does
    without a cache); where no cache folder is writable, the same."""
    if os.environ.get("DALI_SNAPMIX_KERNEL_CACHE", "1") == "0":
        return dispatcher
    try:
        dispatcher._cache = _variant_cache_class()(dispatcher.py_func, variant_key(dispatcher.py_func))
    except RuntimeError:  # no writable cache folder
        pass
    return dispatcher


# ---------------------------------------------------------------- profiling


class _Range:
    """One named NVTX push/pop range of the ``dali_snapmix`` domain, reusable."""

    def __init__(self, domain, name: str) -> None:
        self.domain, self.attributes = domain, domain.get_event_attributes(message=name)

    def __enter__(self) -> None:
        self.domain.push_range(self.attributes)

    def __exit__(self, *exc) -> None:
        self.domain.pop_range()


class _TorchRange:
    """The same range through ``torch.cuda.nvtx`` (default domain, no extra package);
    a no-op on a torch built without CUDA, whose NVTX calls would raise."""

    def __init__(self, name: str) -> None:
        import torch

        self.message = name
        self.nvtx = torch.cuda.nvtx if hasattr(torch._C, "_nvtx") else None

    def __enter__(self) -> None:
        if self.nvtx is not None:
            self.nvtx.range_push(self.message)

    def __exit__(self, *exc) -> None:
        if self.nvtx is not None:
            self.nvtx.range_pop()


@functools.cache
def nvtx_range(name: str) -> _Range | _TorchRange:
    """An NVTX range (seen by Nsight Systems) for ``with``.

    With the ``nvtx`` package (extra ``profile``) the range is in the ``dali_snapmix``
    domain, its attributes looked up once per name (``nvtx.annotate`` rebuilds them on
    every call, ~30 us with cold caches). Without it, torch's own NVTX calls put the same
    name in the default domain. Without a profiler attached both are no-ops."""
    try:
        import nvtx
    except ImportError:
        return _TorchRange(name)
    return _Range(nvtx.get_domain("dali_snapmix"), name)
