"""A CUDA thread's place in a 1-D grid, for the kernels' grid-stride loops:
``for t in range(first(), n, stride())``.

A module of its own, imported only when a CUDA kernel is built: importing numba.cuda is
what selects the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), and the simulator swaps in
its per-thread ``cuda`` among a function's module globals, so ``cuda`` must be one here
(a factory's closure variable would keep the real module).
"""

from numba import cuda


def first():
    return cuda.grid(1)


def stride():
    return cuda.gridsize(1)
