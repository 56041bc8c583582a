"""Every kernel on real CUDA tensors against its torch reference (run on the GPU too):
the simulator's small cases, full-size batches (64 x 3 x 448 x 448), float32 and
float16, a non-default torch stream, and NaN-poisoned destinations.

Skipped without CUDA (make gpu-check runs it on a GPU machine)."""

import pytest
import torch
from dali_snapmix.kernels import blend, fill_box, mask_blend, paste_resized, spm_box_mass
from dali_snapmix.kernels.blend import blend_reference, mask_blend_reference
from dali_snapmix.kernels.fill_box import fill_box_reference
from dali_snapmix.kernels.paste_resized import paste_resized_reference
from dali_snapmix.kernels.spm_box_mass import spm_box_mass_reference

from dali_snapmix.mix.boxes import rand_boxes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: tests/gpu/ runs on a GPU "
                                "machine (make gpu-check)")
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}  # float16: one half-ulp at |x| < 4


def _cases(size: str, g: torch.Generator):
    """(batch, perm, src_box, dst_box) on the CPU."""
    import numpy as np

    if size == "small":  # the simulator's case: one 3-cycle, full-image, 1-pixel and border boxes
        return ((3, 2, 16, 16), torch.tensor([1, 2, 0]), torch.tensor([[0, 16, 0, 16], [3, 4, 5, 6], [2, 9, 10, 16]]),
                torch.tensor([[4, 12, 0, 5], [0, 16, 0, 16], [15, 16, 0, 16]]))
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g)))
    B, S = 64, 448
    perm = torch.from_numpy(rng.permutation(B))
    perm[:3] = torch.tensor([0, 2, 1])  # a self-pair and a 2-cycle
    src = rand_boxes(rng.beta(5.0, 5.0, B), height=S, width=S, rng=rng)
    dst = rand_boxes(rng.beta(5.0, 5.0, B), height=S, width=S, rng=rng)
    dst[3] = torch.tensor([0, 0, 0, 0])  # empty: sample untouched
    src[4], dst[4] = torch.tensor([0, S, 0, S]), torch.tensor([S - 1, S, 0, 1])  # whole image into one pixel
    return (B, 3, S, S), perm, src, dst


def _compare(name, got, want, tol):
    assert torch.equal(got.isnan(), want.isnan()), f"{name}: NaN pattern differs"
    ok = ~want.isnan()
    err = (got[ok].double() - want[ok].double()).abs().max().item() if ok.any() else 0.0
    assert err <= tol, f"{name}: max |diff| {err} > {tol}"


def _poisoned(shape, dst, dtype, g):
    """Random images whose destination boxes are NaN: every pixel the kernel must write
    starts as NaN, so a pixel it skips shows."""
    x = torch.randn(shape, generator=g).to(dtype)
    for i, (y0, y1, x0, x1) in enumerate(dst.tolist()):
        x[i, :, y0:y1, x0:x1] = float("nan")
    return x.cuda()


@pytest.mark.parametrize("size", ["small", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("side_stream", [False, True])
def test_paste_resized_on_cuda(size, dtype, side_stream):
    g = torch.Generator().manual_seed(7)
    shape, perm, src, dst = _cases(size, g)
    for ac in (True, False):
        x = _poisoned(shape, dst, dtype, g)
        want = paste_resized_reference(x.clone(), perm=perm, src_box=src, dst_box=dst, align_corners=ac)
        got = x.clone()
        if side_stream:  # the kernel must run on torch's current stream, after the work queued there
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                got.mul_(1.0)  # queued work the kernel must wait for
                paste_resized(got, perm=perm, src_box=src, dst_box=dst, align_corners=ac, backend="auto")
            torch.cuda.current_stream().wait_stream(s)
        else:
            paste_resized(got, perm=perm, src_box=src, dst_box=dst, align_corners=ac, backend="auto")
        torch.cuda.synchronize()
        _compare(f"paste_resized {size} {dtype} ac={ac}", got, want, TOL[dtype])


@pytest.mark.parametrize("size", ["small", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_blends_and_fill_on_cuda(size, dtype):
    g = torch.Generator().manual_seed(11)
    shape, perm, _, dst = _cases(size, g)
    B, _, H, W = shape
    x = torch.randn(shape, generator=g).to(dtype).cuda()
    w = torch.rand(B, generator=g)
    _compare(f"blend {size} {dtype}", blend(x.clone(), perm=perm, weights=w), blend_reference(x.clone(), perm=perm, weights=w),
             TOL[dtype])
    m = torch.rand(B, H, W, generator=g).cuda()
    _compare(f"mask_blend {size} {dtype}", mask_blend(x.clone(), perm=perm, masks=m),
             mask_blend_reference(x.clone(), perm=perm, masks=m), TOL[dtype])
    vals = (0.5, -1.0, 2.0)[: shape[1]]
    x = _poisoned(shape, dst, dtype, g)  # every pixel to fill starts as NaN
    got = fill_box(x.clone(), boxes=dst, value=vals)
    assert not got.isnan().any()
    _compare(f"fill_box {size} {dtype}", got, fill_box_reference(x.clone(), boxes=dst, values=torch.tensor(vals)), 0.0)


@pytest.mark.parametrize("size", ["small", "full"])
def test_spm_box_mass_on_cuda(size):
    g = torch.Generator().manual_seed(13)
    shape, _, src, dst = _cases(size, g)
    B, _, H, W = shape
    cam_side = (4, 5) if size == "small" else (14, 14)
    cams = torch.randn(B, *cam_side, generator=g, dtype=torch.float64)
    cams[1] = 0.25  # constant: NaN
    boxes = torch.stack([dst, src], 1)
    got = spm_box_mass(cams.cuda(), boxes.cuda(), image_size=(H, W))
    assert got.is_cuda and got.dtype == torch.float64
    want = spm_box_mass_reference(cams, boxes, image_size=(H, W))
    _compare(f"spm_box_mass {size}", got.cpu(), want, 1e-12)
    # the tables on another CUDA device index than 0, where there is one
    if torch.cuda.device_count() > 1:
        got1 = spm_box_mass(cams.to("cuda:1"), boxes.to("cuda:1"), image_size=(H, W))
        assert got1.device == torch.device("cuda:1")
        _compare(f"spm_box_mass {size} cuda:1", got1.cpu(), want, 1e-12)
