"""compute-sanitizer's memcheck over the kernel tests on real CUDA tensors: no
out-of-bounds or misaligned access, no leak reported by the tool.

Skipped without CUDA or without compute-sanitizer on PATH."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


WHY_NOT = ("no CUDA device: tests/gpu/ runs on a GPU machine (make gpu-check)" if not torch.cuda.is_available()
           else "compute-sanitizer is not on PATH" if shutil.which("compute-sanitizer") is None else "")


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)
def test_kernels_are_clean_under_memcheck():
    # the small cases: memcheck slows every access down by orders of magnitude
    cmd = ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "97", "--report-api-errors", "no",
           sys.executable, "-P", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(HERE / "test_kernels_gpu.py"),
           "-k", "small"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "ERROR SUMMARY: 0 errors" in out, out[-3000:]
    assert " passed" in out
