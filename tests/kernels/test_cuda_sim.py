"""The CUDA kernels without a GPU: Numba's simulator, and PTX for sm_80 / sm_90.

Both run in their own processes: the simulator must be on before numba.cuda is
imported, and the PTX compile patches numba.cuda while it runs.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_cuda_kernels_under_simulator(without_optional):
    r = subprocess.run([sys.executable, str(HERE / "cuda_sim_checks.py")], capture_output=True, text=True, timeout=600,
                       env=without_optional)  # the CUDA path needs none of the optional modules
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all CUDA kernels agree" in r.stdout


PTX_SCRIPT = """
import json, sys
from dali_snapmix.kernels.ptx import compile_all, ptxas_report
cc = (int(sys.argv[1]), int(sys.argv[2]))
out = {}
for name, ptx in compile_all(cc).items():
    assert ".entry" in ptx, name
    out[name] = ptxas_report(ptx, cc) if sys.argv[3] == "1" else None
print(json.dumps(out))
"""


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
def test_cuda_kernels_compile_to_ptx_without_spills(cc):
    import json

    if shutil.which("ptxas") is None:  # PTX text alone says nothing about registers or spills
        pytest.skip("ptxas is not on PATH: install the CUDA toolkit's ptxas to assemble the kernels")
    r = subprocess.run(
        [sys.executable, "-c", PTX_SCRIPT, str(cc[0]), str(cc[1]), "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    reports = json.loads(r.stdout.strip().splitlines()[-1])
    want = {f"{k}[{dt}]" for dt in ("float32", "float16") for k in
            ("paste_resized.coefs", "paste_resized.gather", "paste_resized.scatter", "blend+mask_blend")}
    assert set(reports) == want | {"spm_box_mass[float32]", "spm_box_mass[float64]", "centre_surround.contrast",
                                   "centre_surround.merge", "grid_mrf_sweeps"}, sorted(reports)
    for name, rep in reports.items():
        assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0, (name, rep)
        assert rep["registers"] > 0, (name, rep)


def test_mixing_methods_end_to_end_under_simulator(without_optional):
    """Every method with backend="cuda" (simulated) against backend="cpu" on the same params,
    none of the optional modules importable."""
    r = subprocess.run([sys.executable, str(HERE / "cuda_sim_methods.py")], capture_output=True, text=True, timeout=900,
                       env=without_optional)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all mixing methods agree" in r.stdout
    for name in ("mixup", "cutmix", "as-cutmix", "cutout", "snapmix released", "snapmix improved", "snapmix symmetric"):
        assert f"ok {name}" in r.stdout, name
