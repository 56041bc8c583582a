"""Every CUDA kernel under Numba's CUDA simulator against its torch reference.

Run by tests/kernels/test_cuda_sim.py in a separate process, because the simulator must be
switched on before numba.cuda is first imported. Tiny tensors: the simulator runs each
CUDA thread as a Python thread. Exits non-zero on the first mismatch.
"""

import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import torch  # noqa: E402
from dali_snapmix.kernels import blend, centre_surround, grid_mrf_sweeps, mask_blend, paste_resized, spm_box_mass  # noqa: E402
from dali_snapmix.kernels.blend import blend_reference, mask_blend_reference  # noqa: E402
from dali_snapmix.kernels.centre_surround import centre_surround_reference  # noqa: E402
from dali_snapmix.kernels.grid_mrf import grid_mrf_sweeps_reference  # noqa: E402
from dali_snapmix.kernels.paste_resized import paste_resized_reference  # noqa: E402
from dali_snapmix.kernels.spm_box_mass import spm_box_mass_reference  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}  # float16: one half-ulp at |x| < 4


def check(name, got, want, tol):
    err = (got.double() - want.double()).abs().max().item()
    if not err <= tol:
        raise SystemExit(f"FAIL {name}: max |diff| {err} > {tol}")
    print(f"ok {name}: max |diff| {err:.2e}")


def main() -> None:
    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    B, C, H, W = 3, 2, 16, 16
    for dt in (torch.float32, torch.float16):
        x = torch.randn(B, C, H, W, generator=g).to(dt)
        perm = torch.tensor([1, 2, 0])  # one cycle: every source is also a destination
        sb = torch.tensor([[0, 16, 0, 16], [3, 4, 5, 6], [2, 9, 10, 16]])
        db = torch.tensor([[4, 12, 0, 5], [0, 16, 0, 16], [15, 16, 0, 16]])
        for ac in (True, False):
            check(
                f"paste_resized {dt} align_corners={ac}",
                paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=ac, backend="cuda"),
                paste_resized_reference(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=ac),
                TOL[dt],
            )
        w = torch.rand(B, generator=g)
        check(f"blend {dt}", blend(x.clone(), perm=perm, weights=w, backend="cuda"),
              blend_reference(x.clone(), perm=perm, weights=w), TOL[dt])
        m = torch.rand(B, H, W, generator=g)
        check(f"mask_blend {dt}", mask_blend(x.clone(), perm=perm, masks=m, backend="cuda"),
              mask_blend_reference(x.clone(), perm=perm, masks=m), TOL[dt])
    cams = torch.randn(B, 4, 5, generator=g)
    cams[1] = 0.25  # constant: NaN
    boxes = torch.tensor([[[0, 16, 0, 16], [3, 9, 2, 2]], [[1, 5, 1, 5], [0, 16, 0, 16]], [[15, 16, 0, 1], [4, 11, 3, 14]]])
    got = spm_box_mass(cams, boxes, image_size=(H, W), backend="cuda")
    want = spm_box_mass_reference(cams, boxes, image_size=(H, W))
    if not torch.equal(got.isnan(), want.isnan()):
        raise SystemExit(f"FAIL spm_box_mass NaN pattern: {got} vs {want}")
    ok = ~want.isnan()
    check("spm_box_mass", got[ok], want[ok], 1e-12)
    grey = torch.randint(0, 256, (2, 6, 9), generator=g).float()
    grey[1] = 40.0  # flat: a map of zeros
    integral = torch.nn.functional.pad(grey, (1, 0, 1, 0)).cumsum(1, dtype=torch.float64).cumsum(2).float()
    for scales in ((12, 24, 48, 28, 56, 112), (1, 3)):  # OpenCV's; a centre-only corner window
        got = centre_surround(integral, grey, scales=scales, backend="cuda")
        want = centre_surround_reference(integral, grey, scales=scales)
        if not torch.equal(got, want):
            raise SystemExit(f"FAIL centre_surround {scales}: {got} vs {want}")
        print(f"ok centre_surround {scales}: equal")
    u = torch.rand(2, 3, 4, 3, generator=g, dtype=torch.float64)
    wv, wh = torch.rand(2, 2, 4, generator=g, dtype=torch.float64), torch.rand(2, 3, 3, generator=g, dtype=torch.float64)
    lv = torch.arange(3, dtype=torch.float64)
    pw = (lv[:, None] - lv[None]) ** 2 / 4
    start = torch.randint(0, 3, (4, 3, 4), generator=g)
    got = grid_mrf_sweeps(u, wv, wh, pw, start.clone(), max_sweeps=4, backend="cuda")
    want = grid_mrf_sweeps_reference(u, wv, wh, pw, start.clone(), max_sweeps=4)
    if not torch.equal(got, want):
        raise SystemExit(f"FAIL grid_mrf_sweeps: {got} vs {want}")
    print("ok grid_mrf_sweeps: equal")
    print("all CUDA kernels agree with their references under the simulator")


if __name__ == "__main__":
    main()
