"""paste_resized against per-sample F.interpolate + slice assignment in float64: random
batches, edge boxes, both column gathers, aliasing (tolerances: kernel_helpers.py)."""


import pytest
import torch
import torch.nn.functional as F
from dali_snapmix.kernels import _simd, paste_resized
from dali_snapmix.kernels.paste_resized import paste_resized_reference
from kernel_helpers import SEED, TOL, rand_boxes


def expected_paste(x, perm, sb, db, align):
    """Out of place, float64: the source patches come from an untouched copy."""
    orig, out = x.double(), x.double().clone()
    for i in range(x.shape[0]):
        sy0, sy1, sx0, sx1 = sb[i].tolist()
        dy0, dy1, dx0, dx1 = db[i].tolist()
        if min(sy1 - sy0, sx1 - sx0, dy1 - dy0, dx1 - dx0) <= 0:
            continue
        patch = orig[int(perm[i]), :, sy0:sy1, sx0:sx1][None]
        out[i, :, dy0:dy1, dx0:dx1] = F.interpolate(patch, size=(dy1 - dy0, dx1 - dx0), mode="bilinear", align_corners=align)[0]
    return out


EDGE_BOXES = {
    # name: (src boxes, dst boxes) for a batch of 3 images of 20 x 24
    "one-pixel source (upscale)": ([[5, 6, 7, 8], [0, 1, 0, 1], [19, 20, 23, 24]], [[0, 20, 0, 24], [3, 9, 4, 10], [10, 20, 12, 24]]),
    "one-pixel destination": ([[0, 20, 0, 24], [2, 9, 3, 17], [0, 1, 0, 24]], [[0, 1, 0, 1], [19, 20, 23, 24], [7, 8, 9, 10]]),
    "full image both": ([[0, 20, 0, 24]] * 3, [[0, 20, 0, 24]] * 3),
    "borders": ([[0, 7, 0, 24], [13, 20, 0, 5], [0, 20, 19, 24]], [[13, 20, 0, 24], [0, 20, 0, 3], [0, 4, 20, 24]]),
    "downscale": ([[0, 20, 0, 24], [1, 19, 2, 22], [0, 16, 0, 16]], [[2, 5, 3, 6], [0, 7, 0, 2], [4, 8, 4, 12]]),
    "zero-area boxes": ([[3, 3, 0, 5], [0, 5, 0, 5], [2, 8, 2, 8]], [[0, 5, 0, 5], [4, 9, 6, 6], [0, 0, 0, 0]]),
}


@pytest.fixture(params=["vector", "scalar"])
def gather(request):
    """The CPU paste's ``simd`` argument: its vector column gather (AVX-512 hosts) and not."""
    if request.param == "vector" and not _simd.available():
        pytest.skip("this CPU has no AVX-512F: the vector gather is not used here")
    return request.param == "vector"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("B", [1, 5, 16])
def test_paste_resized_random(g, dtype, align, B, gather):
    H, W = 37, 45
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    perm = torch.randperm(B, generator=g)  # self-pairs included by chance
    sb, db = rand_boxes(g, B, H, W), rand_boxes(g, B, H, W)
    want = expected_paste(x, perm, sb, db, align)
    got = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align, backend="cpu",
                        simd=gather and dtype == torch.float32)
    # float32 source coordinates (as torch's float32 interpolate computes them) are off by a
    # few ulp of the image side, and the value by that times a neighbour difference: 1e-5
    # alone failed one seed in many (2775153251: 1.06e-5, before and after the disk cache)
    tol = TOL[dtype] + (4 * 2**-24 * max(H, W) * float(x.max() - x.min()) if dtype == torch.float32 else 0.0)
    assert (got.double() - want).abs().max() <= tol, (SEED, sb, db)
    ref = paste_resized_reference(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align)
    assert (ref.double() - want).abs().max() <= tol


def test_paste_resized_many_small_cases(g):
    """300 random small batches (1-7 samples, empty boxes, self-pairs, every cycle
    structure): the CPU kernel saves aside only the rows a cycle's first sample
    overwrites before its last reads them, and starts each cycle where that is least;
    any wrong row shows against the out-of-place float64 oracle."""
    for _ in range(300):
        B = int(torch.randint(1, 8, (1,), generator=g))
        H, W = int(torch.randint(1, 13, (1,), generator=g)), int(torch.randint(1, 15, (1,), generator=g))
        x = torch.randn(B, 3, H, W, generator=g)
        perm = torch.randperm(B, generator=g)
        sb, db = rand_boxes(g, B, H, W), rand_boxes(g, B, H, W)
        want = expected_paste(x, perm, sb, db, True)
        got = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, backend="cpu")
        assert (got.double() - want).abs().max() <= 1e-5, (SEED, perm, sb, db)


@pytest.mark.parametrize("case", EDGE_BOXES)
@pytest.mark.parametrize("align", [True, False])
def test_paste_resized_edges(g, case, align):
    sb, db = (torch.tensor(b) for b in EDGE_BOXES[case])
    x = torch.randn(3, 2, 20, 24, generator=g)
    for perm in (torch.tensor([0, 1, 2]), torch.tensor([2, 0, 1])):  # self-pairs; one cycle
        want = expected_paste(x, perm, sb, db, align)
        got = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align, backend="cpu")
        assert (got.double() - want).abs().max() <= 1e-5, case


@pytest.mark.skipif(not _simd.available(), reason="this CPU has no AVX-512F: the vector gather is not used here")
@pytest.mark.parametrize("align", [True, False])
def test_paste_resized_vector_gather_equals_scalar(g, align):
    """Wide boxes, so rows hold many 16-column chunks: upscales, downscales under 2x
    (every chunk permuted), beyond 2x (chunks fall back to scalar), widths that are
    not multiples of 16. Bit-identical to the scalar loop, 1e-5 from float64, and
    NaN-poisoned pixels outside the destinations stay as they were. Tolerance against
    float64: 1e-4, since float32 source coordinates (torch's too) are off by up to
    ~x * 2**-24 px at column x ~ 300, times N(0, 1) noise's slopes of up to ~3 per
    pixel (torch's float32 interpolate is as far from float64 here: 6e-5)."""
    B, H, W = 7, 40, 300
    x = torch.randn(B, 3, H, W, generator=g)
    x[:, :, :, 290:] = float("nan")  # nobody reads or writes these columns
    sb = torch.tensor([[0, 40, 0, 40], [3, 30, 10, 230], [0, 40, 0, 290], [5, 6, 100, 117], [0, 40, 0, 290],
                       [1, 39, 7, 150], [0, 20, 0, 1]])
    db = torch.tensor([[0, 40, 0, 290], [0, 33, 5, 150], [2, 38, 1, 100], [0, 40, 0, 289], [10, 30, 3, 259],
                       [1, 39, 7, 150], [0, 40, 16, 48]])  # 7x up, <2x down, 2.9x down, 1 row up, 1.1x down, same, 1 column
    perm = torch.randperm(B, generator=g)
    want = expected_paste(x, perm, sb, db, align)
    out = {}
    for simd in (True, False):
        out[simd] = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align, backend="cpu",
                                  simd=simd)
    assert torch.equal(out[True].isnan(), out[False].isnan()) and torch.equal(out[True].nan_to_num(), out[False].nan_to_num())
    assert torch.equal(out[True].isnan(), want.isnan())
    assert (out[True].double() - want).nan_to_num().abs().max() <= 1e-4


def test_paste_resized_simd_argument(g, monkeypatch):
    """``simd``: None takes the vector gather only where it can run, and the result
    does not depend on it; True where it cannot run is an error naming why, never a
    silent scalar run; anything but None/True/False is refused."""
    x = torch.randn(3, 3, 20, 24, generator=g)
    perm, sb, db = torch.tensor([2, 0, 1]), rand_boxes(g, 3, 20, 24), rand_boxes(g, 3, 20, 24)
    want = expected_paste(x, perm, sb, db, True)

    def run(t, **kw):
        return paste_resized(t.clone(), perm=perm, src_box=sb, dst_box=db, **kw)

    with pytest.raises(ValueError, match="simd must be None, True or False, got 'yes'"):
        run(x, simd="yes")
    with pytest.raises(ValueError, match="simd=True needs float32 images, got torch.float16"):
        run(x.half(), simd=True)
    with pytest.raises(ValueError, match="simd=True needs the CPU kernel .* backend 'reference'"):
        run(x, simd=True, backend="reference")
    monkeypatch.setattr(_simd, "available", lambda: False)  # a CPU without AVX-512F
    with pytest.raises(ValueError, match="simd=True needs a CPU with AVX-512F"):
        run(x, simd=True)
    got = run(x)  # None: the scalar gather here
    assert (got.double() - want).abs().max() <= 1e-5
    assert torch.equal(got, run(x, simd=False))


def test_paste_resized_aliasing_and_untouched_pixels(g):
    """Sources overlap other samples' destinations. Pixels that are destinations but
    no one's source are poisoned with NaN: all must be overwritten; pixels outside the
    destinations (NaN or not) must come back bit for bit."""
    B, H, W = 6, 30, 30
    x = torch.randn(B, 3, H, W, generator=g)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    sb = torch.tensor([[5, 25, 5, 25]] * B)
    db = torch.tensor([[0, 20, 0, 20], [10, 30, 10, 30], [0, 30, 0, 15], [3, 4, 0, 30], [0, 30, 29, 30], [0, 30, 0, 30]])
    read = torch.zeros(B, H, W, dtype=torch.bool)
    for i in range(B):
        read[perm[i], 5:25, 5:25] = True
    poison = torch.zeros(B, H, W, dtype=torch.bool)
    outside = torch.ones(B, H, W, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(db.tolist()):
        outside[i, y0:y1, x0:x1] = False
    poison = ~read  # NaN wherever nobody reads: inside and outside the destinations
    x[poison[:, None].expand_as(x)] = float("nan")
    want = expected_paste(x, perm, sb, db, True)
    got = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, backend="cpu")
    assert not got[~outside[:, None].expand_as(got)].isnan().any()  # every destination pixel written
    o = outside[:, None].expand_as(got)
    assert torch.equal(got[o].isnan(), x[o].isnan()) and torch.equal(got[o].nan_to_num(), x[o].nan_to_num())
    assert (got.double() - want).nan_to_num().abs().max() <= 1e-5
