"""kernels/_target.py: NVTX ranges (with and without the nvtx package), the disk cache of
compiled kernels, and the float16 helpers (bit for bit with torch)."""

import importlib
import re

import pytest
import torch
from dali_snapmix.kernels import blend, fill_box, mask_blend, paste_resized, spm_box_mass
from kernel_helpers import SEED


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

    from dali_snapmix.kernels import _target

    mods = {n: importlib.import_module(f"dali_snapmix.kernels.{n}") for n in ("paste_resized", "blend", "spm_box_mass")}
    builds = {
        "paste f32 simd": lambda: mods["paste_resized"].python_kernels("cpu", "float32", True)["paste_all"],
        "paste f32": lambda: mods["paste_resized"].python_kernels("cpu", "float32", False)["paste_all"],
        "paste f16": lambda: mods["paste_resized"].python_kernels("cpu", "float16", False)["paste_all"],
        "blend f32": lambda: mods["blend"].python_kernels("cpu", "float32")[0],
        "blend f16": lambda: mods["blend"].python_kernels("cpu", "float16")[0],
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

    script = ("import torch; from dali_snapmix.kernels import blend; "
              "from dali_snapmix.kernels.blend import _compiled; "
              "x = torch.randn(3, 2, 9, 7); p = torch.tensor([1, 2, 0]); w = torch.tensor([0.25, 0.5, 1.0]); "
              "want = x * w[:, None, None, None] + x[p] * (1 - w[:, None, None, None]); blend(x, perm=p, weights=w); "
              "assert torch.allclose(x, want, atol=1e-6); k = _compiled('cpu', 'float32'); "
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
