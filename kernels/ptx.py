"""Compile every CUDA kernel to PTX without a GPU, and ask ptxas for its resource use.

    python -m dali_snapmix.kernels.ptx --cc 80 90     # registers, spills, per kernel

Numba compiles a device function for the *current* device's compute capability, which
does not exist here; while compiling we tell it which one to assume. Run this in its
own process (it patches numba.cuda for the duration, and must not meet the simulator).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

__all__ = ["compile_all", "ptxas_report", "signatures"]


def signatures():
    """(name, python kernel body, argument types) for every CUDA kernel and dtype."""
    from numba import boolean, float32, float64, int32, int64, uint16

    # (from-imports: the package re-exports functions under the modules' names)
    from .blend import python_kernels as blend_kernels
    from .centre_surround import python_kernels as saliency_kernels
    from .grid_mrf import python_kernels as mrf_kernels
    from .paste_resized import python_kernels as paste_kernels
    from .spm_box_mass import python_kernels as spm_kernels

    i64 = int64[::1]
    out = []
    for dtype, img in (("float32", float32[::1]), ("float16", uint16[::1])):
        k = paste_kernels("cuda", dtype)
        out.append((f"paste_resized.coefs[{dtype}]", k["coefs"], (i64, i64, float32[::1], i64, i64, i64, int64, boolean)))
        out.append((f"paste_resized.gather[{dtype}]", k["gather"], (img, float32[::1], i64, i64, i64, i64, i64, i64, i64, float32[::1], i64, int64, int64, int64, int64, boolean)))
        out.append((f"paste_resized.scatter[{dtype}]", k["scatter"], (img, float32[::1], i64, i64, i64, int64, int64, int64, int64)))
        (mix,) = blend_kernels("cuda", dtype)
        out.append((f"blend+mask_blend[{dtype}]", mix, (img, float32[::1], i64, i64, int64, int64, int64, boolean)))
    (masses,) = spm_kernels("cuda")
    for dt, arr in (("float32", float32[::1]), ("float64", float64[::1])):
        out.append((f"spm_box_mass[{dt}]", masses, (arr, i64, float64[::1], float64[::1], float64[::1], float64[::1], int64, float64[::1], int64, int64, int64, int64, int64, int64)))
    contrast, merge = saliency_kernels("cuda")
    i32, f32 = int32[::1], float32[::1]
    out.append(("centre_surround.contrast", contrast, (f32, f32, i32, i32, int64, int64, int64, i64, int64)))
    out.append(("centre_surround.merge", merge, (i32, i32, i32, i32, i32, int64, int64)))
    (sweeps,) = mrf_kernels("cuda")
    f64 = float64[::1]
    out.append(("grid_mrf_sweeps", sweeps, (f64, f64, f64, f64, i64, f64, i64, f64, f64) + (int64,) * 6))
    return out


@contextmanager
def _assume_device(cc: tuple[int, int]):
    import numba.cuda.dispatcher as dispatcher

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_all(cc: tuple[int, int]) -> dict[str, str]:
    """PTX text per kernel, compiled for ``cc`` (e.g. (8, 0))."""
    from numba import cuda

    res = {}
    with _assume_device(cc):
        for name, fn, sig in signatures():  # fresh device functions per call: no cross-cc reuse
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
            res[name] = ptx
    return res


def ptxas_report(ptx: str, cc: tuple[int, int]) -> dict[str, int]:
    """Registers and spill bytes from ``ptxas -v`` (raises if ptxas is missing)."""
    exe = shutil.which("ptxas")
    if exe is None:
        raise FileNotFoundError("ptxas is not on PATH (it comes with the CUDA toolkit)")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run(
            [exe, f"-arch=sm_{cc[0]}{cc[1]}", "-v", str(src), "-o", str(Path(d) / "k.cubin")],
            capture_output=True,
            text=True,
        )
    if r.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{r.stderr}")
    text = r.stderr + r.stdout

    def grab(pat: str) -> int:
        return sum(int(m) for m in re.findall(pat, text))

    return {
        "registers": max((int(m) for m in re.findall(r"Used (\d+) registers", text)), default=0),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
        "stack": max((int(m) for m in re.findall(r"(\d+) bytes stack frame", text)), default=0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cc", nargs="+", default=["80", "90"], help="compute capabilities, e.g. 80 90")
    a = ap.parse_args()
    print("| kernel | sm | registers | spill stores (B) | spill loads (B) | stack (B) |")
    print("|---|---|---|---|---|---|")
    for c in a.cc:
        cc = (int(c[:-1]), int(c[-1]))
        for name, ptx in compile_all(cc).items():
            r = ptxas_report(ptx, cc)
            print(f"| {name} | {c} | {r['registers']} | {r['spill_stores']} | {r['spill_loads']} | {r['stack']} |")


if __name__ == "__main__":
    main()
