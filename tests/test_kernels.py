"""CPU kernels against independent float64 torch computations, edge cases and bad input.

Fresh random inputs every run (the seed is printed on failure through the ids).
Tolerances: float32 kernels vs a float64 computation: 1e-5 absolute on N(0, 1)
images; float16: 2e-3 (one half-precision step at |x| < 4); SPM masses: 1e-12 relative
(float64 accumulation agrees to ~1e-15; float32 anywhere would miss by ~1e-7); the
half <-> float element helpers: bit for bit with torch.
"""

import importlib
import os
import re

import pytest
import torch
import torch.nn.functional as F
from dali_snapmix.kernels import _simd, blend, fill_box, mask_blend, paste_resized, spm_box_mass
from dali_snapmix.kernels.blend import cycles
from dali_snapmix.kernels.paste_resized import paste_resized_reference

PASTE = importlib.import_module("dali_snapmix.kernels.paste_resized")  # the module (the package exports the function)

SEED = int(os.environ.get("DALI_SNAPMIX_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))  # replay a failure
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.fixture
def g():
    return torch.Generator().manual_seed(SEED)


def rand_boxes(g, n, H, W, *, allow_empty=True):
    y0 = torch.randint(0, H + (1 if allow_empty else 0), (n,), generator=g)
    x0 = torch.randint(0, W + (1 if allow_empty else 0), (n,), generator=g)
    lo = 0 if allow_empty else 1
    y1 = y0 + (torch.randint(0, 1 << 30, (n,), generator=g) % (H - y0 + 1 - lo) + lo)
    x1 = x0 + (torch.randint(0, 1 << 30, (n,), generator=g) % (W - x0 + 1 - lo) + lo)
    return torch.stack([y0, y1.clamp(max=H), x0, x1.clamp(max=W)], 1)


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
def gather(request, monkeypatch):
    """Run a test with the CPU paste's vector column gather (AVX-512 hosts) and without."""
    if request.param == "vector" and not _simd.available():
        pytest.skip("this CPU has no AVX-512F: the vector gather is not used here")
    monkeypatch.setattr(PASTE, "SIMD", request.param == "vector")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("B", [1, 5, 16])
def test_paste_resized_random(g, dtype, align, B, gather):
    H, W = 37, 45
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    perm = torch.randperm(B, generator=g)  # self-pairs included by chance
    sb, db = rand_boxes(g, B, H, W), rand_boxes(g, B, H, W)
    want = expected_paste(x, perm, sb, db, align)
    got = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align, backend="cpu")
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
def test_paste_resized_vector_gather_equals_scalar(g, align, monkeypatch):
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
        monkeypatch.setattr(PASTE, "SIMD", simd)
        out[simd] = paste_resized(x.clone(), perm=perm, src_box=sb, dst_box=db, align_corners=align, backend="cpu")
    assert torch.equal(out[True].isnan(), out[False].isnan()) and torch.equal(out[True].nan_to_num(), out[False].nan_to_num())
    assert torch.equal(out[True].isnan(), want.isnan())
    assert (out[True].double() - want).nan_to_num().abs().max() <= 1e-4


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


def _spm_oracle(cams, boxes, H, W):
    up = F.interpolate(cams[:, None].double(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    spm = up / up.sum(dim=(1, 2), keepdim=True)
    return torch.stack([torch.stack([spm[b, y0:y1, x0:x1].sum() for y0, y1, x0, x1 in boxes[b].tolist()]) for b in range(len(boxes))])


@pytest.mark.parametrize("h,w,H,W", [(14, 14, 448, 448), (7, 7, 224, 224), (7, 9, 100, 61), (5, 5, 3, 4), (1, 1, 8, 8), (3, 1, 17, 9)])
def test_spm_box_mass_matches_materialised_map(g, h, w, H, W):
    B, K = 5, 3
    cams = torch.randn(B, h, w, generator=g) * 3 + 1
    cams[1] = 0.7  # constant CAM: NaN, as the reference (0 / 0)
    boxes = rand_boxes(g, B * K, H, W).view(B, K, 4)
    boxes[0, 0] = torch.tensor([0, H, 0, W])  # full image: mass 1
    boxes[2, 1] = torch.tensor([H - 1, H, W - 1, W])  # one pixel at the corner
    boxes[3, 2] = torch.tensor([0, 1, 0, W])  # border row
    got = spm_box_mass(cams, boxes, image_size=(H, W), backend="cpu")
    want = _spm_oracle(cams, boxes, H, W)
    # Constant CAM: NaN for every non-empty box. (The materialised map is usually exactly
    # constant, hence 0 / 0 = NaN; for some sizes float rounding in interpolate leaves
    # ~1e-17 noise that would be normalised into a meaningless map: the kernel says NaN.)
    nonempty = (boxes[..., 1] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 2])
    assert torch.equal(got[1].isnan(), nonempty[1]) and (got[1][~nonempty[1]] == 0).all()
    if h * w > 1:  # (a 1 x 1 CAM is always constant)
        assert not got[[0, 2, 3, 4]].isnan().any() and not want[[0, 2, 3, 4]].isnan().any()
    ok = ~got.isnan()
    # float64 accumulation agrees to ~1e-15; 1e-12 fails any float32 step (~1e-7)
    assert ((got[ok] - want[ok]).abs() <= 1e-12 * want[ok].abs() + 1e-15).all(), SEED
    if h > 1 or w > 1:
        assert got[0, 0] == pytest.approx(1.0, abs=1e-12)
    # (N, 4) boxes give (N,); no boxes give (N, 0)
    assert torch.equal(spm_box_mass(cams, boxes[:, 0], image_size=(H, W)).nan_to_num(), got[:, 0].nan_to_num())
    assert spm_box_mass(cams, boxes[:, :0], image_size=(H, W)).shape == (B, 0)


def test_spm_box_mass_minimum_is_the_upsampled_one():
    """A CAM whose minimum sits at an interior grid point that the 448-grid never
    samples exactly: shifting by the CAM's own minimum would be wrong by ~1e-2."""
    cams = torch.zeros(1, 14, 14, dtype=torch.float64)
    cams[0, 7, 7] = -5.0
    cams[0, 2, 3] = 4.0
    box = torch.tensor([[100, 300, 50, 250]])
    got = spm_box_mass(cams, box, image_size=(448, 448), backend="cpu")
    assert got.item() == pytest.approx(_spm_oracle(cams, box[:, None], 448, 448).item(), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B", [1, 2, 7, 16])
@pytest.mark.parametrize("H,W", [(11, 13), (23, 29)])  # a plane inside one CPU chunk (256 px), and over three
def test_blend_and_mask_blend(g, dtype, B, H, W):
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    for perm in (torch.randperm(B, generator=g), torch.arange(B), torch.roll(torch.arange(B), 1)):
        w = torch.rand(B, generator=g)
        want = w.double()[:, None, None, None] * x.double() + (1 - w.double())[:, None, None, None] * x.double()[perm]
        got = blend(x.clone(), perm=perm, weights=w, backend="cpu")
        assert (got.double() - want).abs().max() <= TOL[dtype]
        m = torch.rand(B, H, W, generator=g)
        want = m.double()[:, None] * x.double() + (1 - m.double())[:, None] * x.double()[perm]
        got = mask_blend(x.clone(), perm=perm, masks=m, backend="cpu")
        assert (got.double() - want).abs().max() <= TOL[dtype]


def test_cycles_cover_the_permutation(g):
    for perm, ncycles in ((torch.randperm(13, generator=g), None), (torch.arange(5), 5), (torch.tensor([0]), 1)):
        order, starts = cycles(perm)
        assert sorted(order.tolist()) == list(range(len(perm)))
        assert ncycles is None or len(starts) - 1 == ncycles
        for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
            seg = order[s:e].tolist()
            assert [int(perm[i]) for i in seg] == seg[1:] + seg[:1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fill_box(g, dtype):
    B, H, W = 9, 15, 17
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    boxes = rand_boxes(g, B, H, W)
    boxes[0] = torch.tensor([0, H, 0, W])
    boxes[1] = torch.tensor([H - 1, H, 0, 1])
    val = (0.25, -1.5, 3.0)
    want = x.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        for c in range(3):
            want[i, c, y0:y1, x0:x1] = val[c]
    assert torch.equal(fill_box(x.clone(), boxes=boxes, value=val, backend="cpu"), want)
    assert torch.equal(fill_box(x.clone(), boxes=boxes, backend="cpu")[0], torch.zeros(3, H, W, dtype=dtype))


def test_bad_input_is_named():
    x = torch.randn(2, 3, 8, 8)
    perm = torch.tensor([1, 0])
    box = torch.tensor([[0, 4, 0, 4], [1, 5, 1, 5]])
    with pytest.raises(ValueError, match="float64"):
        paste_resized(x.double(), perm=perm, src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="contiguous"):
        paste_resized(x.transpose(2, 3), perm=perm, src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="NCHW"):
        blend(x[0], perm=perm, weights=torch.rand(2))
    with pytest.raises(ValueError, match=r"dst_box\[1\] = \[1, 9, 1, 5\]"):
        paste_resized(x, perm=perm, src_box=box, dst_box=torch.tensor([[0, 4, 0, 4], [1, 9, 1, 5]]))
    with pytest.raises(ValueError, match=r"src_box\[0\] = \[3, 2, 0, 4\]"):
        paste_resized(x, perm=perm, src_box=torch.tensor([[3, 2, 0, 4], [0, 1, 0, 1]]), dst_box=box)
    with pytest.raises(ValueError, match=r"perm entries must be in \[0, 2\), got \[2, 0\]"):
        paste_resized(x, perm=torch.tensor([2, 0]), src_box=box, dst_box=box)
    with pytest.raises(ValueError, match="permutation"):
        blend(x, perm=torch.tensor([0, 0]), weights=torch.rand(2))
    with pytest.raises(ValueError, match=r"perm entries must be in \[0, 2\), got \[-1, 0\]"):
        paste_resized(x, perm=torch.tensor([-1, 0]), src_box=box, dst_box=box)
    with pytest.raises(ValueError, match=r"boxes\[1\] = \[0, 1, 2, 9\] .* x1 <= 8"):
        fill_box(x, boxes=torch.tensor([[0, 1, 0, 1], [0, 1, 2, 9]]))
    # int32 index tensors are accepted (converted), with the same result as int64
    want = paste_resized(x.clone(), perm=perm, src_box=box, dst_box=box)
    assert torch.equal(paste_resized(x.clone(), perm=perm.int(), src_box=box.int(), dst_box=box.int()), want)
    with pytest.raises(ValueError, match="NaN"):
        blend(x, perm=perm, weights=torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="masks must have shape"):
        mask_blend(x, perm=perm, masks=torch.rand(2, 8, 7))
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        fill_box(x, boxes=box, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        fill_box(x, boxes=box, backend="gpu")
    with pytest.raises(ValueError, match="value must be"):
        fill_box(x, boxes=box, value=(1.0, 2.0))
    with pytest.raises(ValueError, match="cams must be float32 or float64"):
        spm_box_mass(torch.zeros(2, 3, 3, dtype=torch.float16), box, image_size=(8, 8))
    with pytest.raises(ValueError, match="image_size"):
        spm_box_mass(torch.zeros(2, 3, 3), box, image_size=(8, 0))
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        spm_box_mass(torch.zeros(2, 3, 3), torch.tensor([[0, 4, 0, 4], [0, 4, 0, 9]]), image_size=(8, 8))


def test_every_kernel_opens_its_nvtx_range(g, monkeypatch):
    """Each call pushes and pops one range named <tag>/<kernel> in the dali_snapmix
    domain (what the Nsight commands of docs/performance.md filter on)."""
    nvtx = pytest.importorskip("nvtx")
    from dali_snapmix.kernels import _target

    log = []

    class Domain:
        def get_event_attributes(self, *, message):
            return message

        def push_range(self, attributes):
            log.append(("push", attributes))

        def pop_range(self):
            log.append(("pop",))

    domains = []
    monkeypatch.setattr(nvtx, "get_domain", lambda name: domains.append(name) or Domain())
    _target.nvtx_range.cache_clear()
    try:
        x = torch.randn(2, 3, 8, 8, generator=g)
        perm, box = torch.tensor([1, 0]), torch.tensor([[0, 4, 0, 4], [2, 8, 2, 8]])
        paste_resized(x, perm=perm, src_box=box, dst_box=box, tag="snapmix")
        spm_box_mass(torch.randn(2, 2, 2, generator=g), box, image_size=(8, 8))
        blend(x, perm=perm, weights=torch.rand(2, generator=g))
        mask_blend(x, perm=perm, masks=torch.rand(2, 8, 8, generator=g))
        fill_box(x, boxes=box, tag="cutout")
    finally:
        _target.nvtx_range.cache_clear()  # drop the fake domain
    names = ["snapmix/paste_resized", "mix/spm_box_mass", "mix/blend", "mix/mask_blend", "cutout/fill_box"]
    assert log == [e for n in names for e in (("push", n), ("pop",))]
    assert set(domains) == {"dali_snapmix"}


def test_without_the_nvtx_package_the_ranges_go_through_torch(g, monkeypatch):
    """The GPU machine's image has no nvtx module: the same names, pushed and popped by
    torch.cuda.nvtx (a no-op without a profiler), and the kernels still run."""
    import sys

    from dali_snapmix.kernels import _target

    log = []
    monkeypatch.setitem(sys.modules, "nvtx", None)  # import nvtx -> ImportError
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda msg: log.append(("push", msg)))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: log.append(("pop",)))
    _target.nvtx_range.cache_clear()
    try:
        x = torch.randn(2, 3, 8, 8, generator=g)
        want = x.clone()
        box = torch.tensor([[0, 4, 0, 4], [2, 8, 2, 8]])
        fill_box(x, boxes=box, tag="cutout")
        spm_box_mass(torch.randn(2, 2, 2, generator=g), box, image_size=(8, 8))
    finally:
        _target.nvtx_range.cache_clear()
    assert log == [("push", "cutout/fill_box"), ("pop",), ("push", "mix/spm_box_mass"), ("pop",)]
    want[0, :, 0:4, 0:4] = 0.0
    want[1, :, 2:8, 2:8] = 0.0
    assert torch.equal(x, want)


def test_kernel_disk_cache_keys_tell_every_variant_apart():
    """The on-disk cache shares one index file per kernel function: its key must tell
    apart each build of the same body with other helpers (dtype, column gather), hold
    no memory address (another process must find it), and be the same when rebuilt."""
    import importlib

    from dali_snapmix.kernels import _target

    mods = {n: importlib.import_module(f"dali_snapmix.kernels.{n}") for n in ("paste_resized", "blend", "fill_box",
                                                                              "spm_box_mass")}
    builds = {
        "paste f32 simd": lambda: mods["paste_resized"].python_kernels("cpu", "float32", True)["paste_all"],
        "paste f32": lambda: mods["paste_resized"].python_kernels("cpu", "float32", False)["paste_all"],
        "paste f16": lambda: mods["paste_resized"].python_kernels("cpu", "float16", False)["paste_all"],
        "blend f32": lambda: mods["blend"].python_kernels("cpu", "float32")[0],
        "blend f16": lambda: mods["blend"].python_kernels("cpu", "float16")[0],
        "fill": lambda: mods["fill_box"].python_kernels("cpu")[0],
        "spm": lambda: mods["spm_box_mass"].python_kernels("cpu")[0],
    }
    keys = {name: _target.variant_key(b()) for name, b in builds.items()}
    assert len(set(keys.values())) == len(keys), keys
    assert all(_target.variant_key(b()) == keys[n] for n, b in builds.items())
    assert not any(re.search(r"0x[0-9a-f]{6,}", k) for k in keys.values()), keys
    assert "gather3_simd" in keys["paste f32 simd"] and "gather3_simd" not in keys["paste f32"]
    assert "load_f16" in keys["paste f16"] and "load_f16" not in keys["paste f32"]


def test_a_second_process_loads_the_compiled_kernel_from_the_disk_cache(tmp_path):
    """Compiled once, loaded after: what keeps every later process (and make test) from
    paying seconds of compiling per kernel. The loaded kernel computes the same."""
    import subprocess
    import sys

    script = ("import torch; from dali_snapmix.kernels import fill_box; "
              "from dali_snapmix.kernels.fill_box import _compiled; "
              "x = torch.randn(3, 3, 9, 7); b = torch.tensor([[0, 9, 0, 7], [2, 3, 4, 5], [0, 0, 0, 0]]); "
              "want = x.clone(); want[0] = 0.5; want[1, :, 2:3, 4:5] = 0.5; fill_box(x, boxes=b, value=0.5); "
              "assert torch.equal(x, want); k = _compiled('cpu'); "
              "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))")
    env = {**__import__("os").environ, "DALI_SNAPMIX_KERNEL_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    (hits0, misses0), (hits1, misses1) = (map(int, r.stdout.split()) for r in runs)
    assert (hits0, misses0) == (0, 1) and (hits1, misses1) == (1, 0)
    assert any(p.name.startswith("kernels-") for p in tmp_path.iterdir())


def test_half_conversions_match_torch_bit_for_bit():
    """The float16 kernels' element helpers (kernels/_target.py) on every one of the 65 536
    half bit patterns, and on float32 values that stress rounding (random bit patterns,
    exact ties between neighbouring halves, the overflow edge), against torch's own
    conversions, bit for bit. NaNs only need to stay NaNs."""
    from dali_snapmix.kernels._target import float_to_half, half_to_float

    bits = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16)  # every pattern, as int16
    want = bits.view(torch.float16).float()
    got = torch.tensor([half_to_float(int(b) & 0xFFFF) for b in bits.tolist()], dtype=torch.float32)
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))  # -0.0 included

    g = torch.Generator().manual_seed(SEED)
    rand = torch.randint(-(1 << 31), 1 << 31, (100_000,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)
    finite = want[~nan & want.isfinite()].double().unique()
    ties = ((finite[1:] + finite[:-1]) / 2).float()  # exactly halfway: rounds to the even neighbour
    edge = torch.tensor([65504.0, 65519.996, 65520.0, 6.1035156e-05, 6.1035153e-05, 2.9802322e-08,
                         2.9802326e-08, -0.0, 0.0, float("inf"), -float("inf")], dtype=torch.float32)
    for xs in (rand, ties, edge, want[~nan]):
        xs = xs[~xs.isnan()]
        ref = xs.half().view(torch.int16).int() & 0xFFFF
        ours = torch.tensor([int(float_to_half(v)) for v in xs.tolist()], dtype=torch.int32)
        bad = (ours != ref).nonzero().flatten()
        assert len(bad) == 0, [(xs[i].item(), hex(ours[i]), hex(ref[i])) for i in bad[:5]]
    assert half_to_float(int(float_to_half(float("nan")))) != half_to_float(int(float_to_half(float("nan"))))  # NaN
