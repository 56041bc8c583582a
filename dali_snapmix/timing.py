"""How the benchmarks time their variants: one clock, shuffled rounds, medians.

Every round runs each variant once, in a fresh random order, and no variant runs twice
in a row across a round boundary: a repeated step finds warm caches and allocator state,
and a fixed or alternating order hands the variants at its ends a neighbour they always
keep. Warm-up rounds (JIT compilation, allocators, page cache) are run and discarded.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable

import numpy as np

__all__ = ["clock", "medians", "shuffled_rounds"]


def clock(device: str = "cpu") -> Callable[[Callable[[], object]], float]:
    """A function that runs ``fn()`` and returns its seconds: CUDA events on ``"cuda"``
    (the GPU's own time, synchronised), ``time.perf_counter`` elsewhere."""
    if device == "cuda":
        import torch

        def timed_cuda(fn) -> float:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            return e0.elapsed_time(e1) / 1e3

        return timed_cuda

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    return timed


def shuffled_rounds(variants: dict[Hashable, Callable[[], object]], *, rounds: int, warmup: int = 1, seed: int = 0,
                    measure: Callable[[Callable[[], object]], float] | None = None) -> dict[Hashable, list[float]]:
    """``rounds`` measured rounds after ``warmup`` discarded ones; returns each variant's
    figures in round order (index r of every list is round r, for paired ratios).
    ``measure(fn)`` runs a variant and returns its figure: by default its seconds
    (:func:`clock`); a benchmark that measures inside (images/s) passes its own."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    measure = measure or clock()
    names = list(variants)
    rng, last = np.random.default_rng(seed), None
    times: dict[Hashable, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = [names[i] for i in rng.permutation(len(names))]
        if len(order) > 1 and order[0] == last:  # never the same variant twice in a row
            order.append(order.pop(0))
        for n in order:
            t = measure(variants[n])
            if r >= warmup:
                times[n].append(t)
        last = order[-1]
    return times


def medians(times: dict[Hashable, list[float]]) -> dict[Hashable, float]:
    return {n: statistics.median(v) for n, v in times.items()}
