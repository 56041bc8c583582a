"""SnapMix's cached-CAM mode: re-projection against plain-torch "upsample, then crop"
on a canvas (float64), the cache's freshness schedule, the free refresh from unmixed
batches, and bad input."""

import copy
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dali_snapmix import kernels
from dali_snapmix.mix import CAMCache, SnapMix
from dali_snapmix.mix.cam import feature_module
from dali_snapmix.mix.cam_cache import reproject
from dali_snapmix.mix.params import BoxParams
from dali_snapmix.models import SmallCNN, build_model

SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture
def rng():
    print(f"seed {SEED}")
    return np.random.default_rng(SEED)


def upsample_then_crop(cam, a_pos, a_flip, b_pos, b_flip, *, crop, canvas):
    """The ideal map of crop B: crop A's CAM upsampled to its crop pixels, flipped back,
    placed on a source canvas (unknown pixels = its minimum), cut out at B, flipped."""
    out = []
    for i in range(cam.shape[0]):
        up = F.interpolate(cam[i][None, None], (crop, crop), mode="bilinear", align_corners=False)[0, 0]
        up = up.flip(-1) if a_flip[i] else up
        c = torch.full((canvas, canvas), float(up.min()), dtype=torch.float64)
        (ay, ax), (by, bx) = a_pos[i], b_pos[i]
        c[ay:ay + crop, ax:ax + crop] = up
        m = c[by:by + crop, bx:bx + crop]
        out.append(m.flip(-1) if b_flip[i] else m)
    return torch.stack(out)


def masses(spm_full, boxes):
    m = spm_full - spm_full.amin((1, 2), keepdim=True)
    m = m / m.sum((1, 2), keepdim=True)
    return torch.stack([m[i, y0:y1, x0:x1].sum() for i, (y0, y1, x0, x1) in enumerate(boxes.tolist())])


def windows(pos, crop):
    return torch.tensor([[y, y + crop, x, x + crop] for y, x in pos], dtype=torch.float32)


def test_identity_round_trip_is_exact(rng):
    cam = torch.from_numpy(rng.normal(size=(5, 7, 9)))
    win = torch.from_numpy(rng.uniform(0, 50, size=(5, 4))).float().sort(dim=1).values[:, [0, 1, 2, 3]]
    win = torch.stack([win[:, 0], win[:, 0] + 30, win[:, 2], win[:, 2] + 40], 1)
    flip = torch.from_numpy(rng.random(5) < 0.5)
    got = reproject(cam, win, flip, win, flip, size=(7, 9))
    assert (got - cam).abs().max() <= 1e-6


# worst over 40 seeds: 0.067 at scale 1, 0.028 at scale 4 (median 0.05 and 0.012); 0.025
# at scale 4 failed about one run in 40
@pytest.mark.parametrize("scale, tol", [(1, 0.08), (4, 0.035)])
def test_reprojection_against_upsample_then_crop(rng, scale, tol):
    """White-noise 7x7 maps (the hardest case: smooth CAMs do better), shifted and
    flipped crops, random boxes: SPM box masses within ``tol`` absolute of the ideal."""
    crop, canvas, n, h = 112, 170, 6, 7
    worst = 0.0
    for _ in range(4):
        cam = torch.from_numpy(rng.normal(size=(n, h, h)))
        a = [tuple(int(v) for v in rng.integers(0, canvas - crop + 1, 2)) for _ in range(n)]
        b = [tuple(int(v) for v in rng.integers(0, canvas - crop + 1, 2)) for _ in range(n)]
        fa, fb = torch.from_numpy(rng.random(n) < 0.5), torch.from_numpy(rng.random(n) < 0.5)
        got_map = reproject(cam, windows(a, crop), fa, windows(b, crop), fb, size=(h * scale, h * scale))
        want_map = upsample_then_crop(cam, a, fa, b, fb, crop=crop, canvas=canvas)
        y0 = rng.integers(0, crop - 1, n)
        x0 = rng.integers(0, crop - 1, n)
        boxes = torch.from_numpy(np.stack([y0, rng.integers(y0 + 1, crop + 1), x0, rng.integers(x0 + 1, crop + 1)], 1))
        got = kernels.spm_box_mass(got_map, boxes[:, None], image_size=(crop, crop)).view(-1)
        worst = max(worst, float((got - masses(want_map, boxes)).abs().max()))
    print(f"scale {scale}: worst SPM box mass error {worst:.4f}")
    assert worst <= tol


def test_whole_cell_shift_is_exact_inside_and_minimum_outside(rng):
    """A crop moved by whole cells: the map moves by whole cells; unknown cells get the minimum."""
    cam = torch.from_numpy(rng.normal(size=(1, 7, 7)))
    a, b = windows([(0, 0)], 224), windows([(64, 32)], 224)  # 2 cells down, 1 right (32 px per cell)
    got = reproject(cam, a, torch.tensor([False]), b, torch.tensor([False]), size=(7, 7))[0]
    assert torch.allclose(got[:5, :6], cam[0, 2:, 1:], atol=1e-12)
    assert (got[5:, :] == cam.min()).all() and (got[:, 6:] == cam.min()).all()
    far = windows([(500, 500)], 224)  # no overlap: nothing known, a constant map -> NaN SPM
    flat = reproject(cam, a, torch.tensor([False]), far, torch.tensor([False]), size=(7, 7))
    mass = kernels.spm_box_mass(flat, torch.tensor([[[0, 10, 0, 10]]]), image_size=(224, 224))
    assert torch.isnan(mass).all()


def _geometry(idx, win, flip):
    return SimpleNamespace(indices=torch.as_tensor(idx, dtype=torch.int64), window=win, flip=flip)


def _model(classes=4):
    torch.manual_seed(0)
    return SmallCNN(num_classes=classes).train()


def test_snapmix_cached_equals_exact_on_identical_crops_and_skips_the_pass(rng):
    n, size = 6, 48
    x = torch.from_numpy(rng.normal(size=(n, 3, size, size))).float()
    y = torch.from_numpy(rng.integers(0, 4, n))
    p = SnapMix(seed=0).sample(x, y)
    p = BoxParams(True, p.perm, p.src_box, p.dst_box)
    geo = _geometry(rng.permutation(20)[:n], windows([(3, 5)] * n, size), torch.from_numpy(rng.random(n) < 0.5))
    m = _model()
    exact = SnapMix(seed=0, cache=None).apply(x.clone(), y, p, model=copy.deepcopy(m))
    sm = SnapMix(seed=0, cache=CAMCache(size=20, refresh_every=2, project_scale=1))
    first = sm.apply(x.clone(), y, p, model=copy.deepcopy(m), geometry=geo)
    assert sm.cache_stats == {"exact": n, "cached": 0, "free": 0}
    torch.testing.assert_close(first.w_a, exact.w_a, atol=1e-6, rtol=0)

    calls = []
    m2 = copy.deepcopy(m)
    m2.features.register_forward_hook(lambda *a: calls.append(1))
    sm.set_epoch(1)
    second = sm.apply(x.clone(), y, p, model=m2, geometry=geo)
    assert calls == [] and sm.cache_stats["cached"] == n  # no forward at all
    torch.testing.assert_close(second.w_a, exact.w_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(second.w_b, exact.w_b, atol=1e-6, rtol=0)
    torch.testing.assert_close(second.images, exact.images)

    sm.set_epoch(2)  # refresh_every=2: the epoch-0 maps are stale now
    sm.apply(x.clone(), y, p, model=m2, geometry=geo)
    assert len(calls) == 1 and sm.cache_stats["exact"] == 2 * n


def test_partly_stale_batch_runs_the_pass_on_the_stale_samples_only(rng):
    n, size = 5, 48
    x = torch.from_numpy(rng.normal(size=(n, 3, size, size))).float()
    y = torch.from_numpy(rng.integers(0, 4, n))
    win = windows([(0, 0)] * n, size)
    flip = torch.zeros(n, dtype=torch.bool)
    m = _model().eval()  # eval: the subset's features do not depend on the rest of the batch
    sm = SnapMix(seed=0, cache=CAMCache(size=n), cam_mode="eval")
    sm.source.maps(x[:2], y[:2], m, _geometry([0, 1], win[:2], flip[:2]))
    seen = []
    m.features.register_forward_hook(lambda mod, i, o: seen.append(o.shape[0]))
    cam = sm.source.maps(x, y, m, _geometry(range(n), win, flip))
    assert seen == [3] and sm.cache_stats["cached"] == 2
    want = sm.cam_pass.exact(x, y, m)
    want = F.interpolate(want[:, None], size=cam.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cam, want, atol=1e-6, rtol=1e-6)


def _unmixed_setup(rng, n=4, size=48):
    """A batch of 4, its geometry, a model, and SnapMix that never mixes, with a cache."""
    x = torch.from_numpy(rng.normal(size=(n, 3, size, size))).float()
    y = torch.from_numpy(rng.integers(0, 4, n))
    geo = _geometry([3, 1, 7, 0], windows([(1, 2)] * n, size), torch.tensor([True, False, True, False]))
    return x, y, geo, _model(), SnapMix(seed=0, prob=0.0, cache=CAMCache(size=8, project_scale=1))


def test_unmixed_batches_refresh_the_cache_for_free(rng):
    x, y, geo, m, sm = _unmixed_setup(rng)
    n = len(x)
    want = sm.cam_pass.exact(x, y, copy.deepcopy(m))  # train mode, same batch: the same features
    out = sm(x.clone(), y, model=m, geometry=geo)
    assert (out.w_a == 1).all() and sm.cache.cam is None  # nothing stored before the forward
    m(out.images)  # the trainer's forward
    assert sm.cache_stats["free"] == n
    torch.testing.assert_close(sm.cache.cam[geo.indices].double(), want, atol=1e-5, rtol=1e-5)
    assert sm.cache.fresh(geo.indices, 0).all() and not sm.cache.fresh(torch.tensor([2, 4]), 0).any()
    m(out.images)  # one shot: a second forward stores nothing
    assert sm.cache_stats["free"] == n


def test_a_call_without_the_model_drops_an_armed_refresh(rng):
    """An unmixed batch arms the free refresh for the forward that follows it; a later
    call without the model must drop it, or the next same-sized forward (another batch)
    would be stored under the first batch's indices and crops."""
    x, y, geo, m, sm = _unmixed_setup(rng)
    sm(x.clone(), y, model=m, geometry=geo)  # armed
    sm(x.clone(), y, geometry=geo)  # unmixed again, no model given
    m(torch.from_numpy(rng.normal(size=x.shape)).float())  # another batch's forward
    assert sm.cache_stats["free"] == 0 and sm.cache.cam is None


@pytest.mark.parametrize("name", ["resnet18", "small_cnn"])
def test_feature_module_found(name):
    m = build_model(name, num_classes=3)
    sm = SnapMix()
    fm = feature_module(m, sm.cam_pass.head_of(m), torch.randn(1, 3, 64, 64))
    assert fm is (m.layer4 if name == "resnet18" else m.features)


def test_bad_input_is_named(rng):
    cache = CAMCache(size=4)
    with pytest.raises(ValueError, match=r"max 9"):
        cache.fresh(torch.tensor([0, 9]), 0)
    with pytest.raises(ValueError, match="NaN"):
        cache.store(torch.tensor([0]), torch.full((1, 2, 2), float("nan")), torch.zeros(1, 4), torch.zeros(1, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="refresh_every"):
        CAMCache(size=4, refresh_every=0)
    with pytest.raises(ValueError, match="empty"):
        cache.project(torch.tensor([0]), torch.zeros(1, 4), torch.zeros(1, dtype=torch.bool))
    cache.store(torch.tensor([0]), torch.zeros(1, 2, 2), torch.zeros(1, 4), torch.zeros(1, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        cache.store(torch.tensor([1]), torch.zeros(1, 3, 3), torch.zeros(1, 4), torch.zeros(1, dtype=torch.bool), 0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    sm = SnapMix(prob=1.0, cache=CAMCache(size=4))
    p = BoxParams(True, torch.tensor([1, 0]), torch.tensor([[0, 8, 0, 8]] * 2), torch.tensor([[0, 8, 0, 8]] * 2))
    with pytest.raises(ValueError, match="geometry="):
        sm.apply(x, y, p, model=_model())
    with pytest.raises(ValueError, match="cache must be a CAMCache"):
        SnapMix(cache={})


def _filled_cache(rng, size=10, n=6, hw=(3, 4)):
    c = CAMCache(size=size, refresh_every=2)
    idx = torch.from_numpy(rng.permutation(size)[:n])
    c.store(idx, torch.from_numpy(rng.normal(size=(n, *hw))), torch.from_numpy(rng.uniform(0, 50, (n, 4))).float(),
            torch.from_numpy(rng.random(n) < 0.5), 1)
    return c, idx


def test_cache_and_snapmix_state_round_trip(rng):
    """What a checkpoint keeps: the same maps, windows, flips, epochs and counters."""
    c, idx = _filled_cache(rng)
    sm = SnapMix(cache=c)
    sm.cache_stats = {"exact": 6, "cached": 3, "free": 2}
    state = copy.deepcopy(sm.state_dict())
    back = SnapMix(cache=CAMCache(size=10, refresh_every=2))
    back.load_state_dict(state)
    assert back.cache_stats == {"exact": 6, "cached": 3, "free": 2}
    for k in ("cam", "window", "flip", "epoch", "new"):
        assert torch.equal(getattr(back.cache, k), getattr(c, k)), k
    assert torch.equal(back.cache.fresh(torch.arange(10), 2), c.fresh(torch.arange(10), 2))
    with pytest.raises(ValueError, match="the saved cache has size=10 but this one 11"):
        SnapMix(cache=CAMCache(size=11, refresh_every=2)).load_state_dict(state)
    with pytest.raises(ValueError, match="has CAM cache but this SnapMix has none"):
        SnapMix().load_state_dict(state)
    with pytest.raises(ValueError, match="CutMix keeps no state"):
        from dali_snapmix.mix import CutMix

        CutMix().load_state_dict({"x": 1})


def _sync_worker(rank, world, init, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    c = CAMCache(size=8, refresh_every=3)
    flip = torch.tensor([True, False])
    # rank r stores indices (2r, 2r + 1) at epoch r; both store index 7 at epoch 1 (a tie:
    # the higher rank's map wins everywhere); rank 1 also stores index 6 at epoch 0 and
    # rank 0 stores it at epoch 1 (the newer map wins)
    c.store(torch.tensor([2 * rank, 2 * rank + 1]), torch.full((2, 2, 3), float(rank)) + torch.arange(6.).view(2, 3),
            torch.full((2, 4), 10.0 * rank), flip, rank)
    c.store(torch.tensor([7]), torch.full((1, 2, 3), 100.0 + rank), torch.zeros(1, 4), torch.tensor([False]), 1)
    c.store(torch.tensor([6]), torch.full((1, 2, 3), 50.0 + rank), torch.zeros(1, 4), torch.tensor([False]), 1 - rank)
    got = c.sync()
    again = c.sync()  # nothing new since: nothing sent
    torch.save({"state": c.state_dict(), "received": got, "again": again}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_sync_shares_new_maps_across_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_sync_worker, args=(2, f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True)
    s0, s1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k in ("cam", "window", "flip", "epoch"):
        assert torch.equal(s0["state"][k], s1["state"][k]), k  # equal caches on both processes
    st = s0["state"]
    assert st["epoch"].tolist() == [0, 0, 1, 1, -1, -1, 1, 1]
    for r in (0, 1):
        want = torch.full((2, 2, 3), float(r)) + torch.arange(6.).view(2, 3)
        assert torch.equal(st["cam"][2 * r:2 * r + 2], want) and torch.equal(st["window"][2 * r], torch.full((4,), 10.0 * r))
        assert st["flip"][2 * r:2 * r + 2].tolist() == [True, False]
    assert (st["cam"][7] == 101.0).all() and (st["cam"][6] == 50.0).all()  # tie: rank 1; newer: rank 0's epoch 1
    # taken from the other process: rank 0 keeps its newer map of 6; rank 1 takes 0, 1, 6 and 7
    assert (s0["received"], s1["received"]) == (3, 4) and s0["again"] == s1["again"] == 0
    assert not st["new"].any()
