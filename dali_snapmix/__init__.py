"""dali-snapmix: DALI data loading and fast mixing augmentations (SnapMix and friends).

Importing this package never needs a GPU: DALI's pipelines, numba.cuda and CuPy are
reached lazily, only when a GPU code path is actually used.
"""

__version__ = "0.1.0"

from pathlib import Path as _Path

# A source checkout keeps kernels/ beside this package (setuptools installs it as
# dali_snapmix.kernels): a checkout on sys.path, uninstalled, imports it the same way.
_here = _Path(__file__).resolve().parent
if not (_here / "kernels").is_dir() and (_here.parent / "kernels" / "_dispatch.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's own __path__)
del _Path, _here
