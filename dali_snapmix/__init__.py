"""dali-snapmix: DALI data loading and fast mixing augmentations (SnapMix and friends).

Importing this package never needs a GPU: DALI's pipelines, numba.cuda and CuPy are
reached lazily, only when a GPU code path is actually used.
"""

__version__ = "0.1.0"
