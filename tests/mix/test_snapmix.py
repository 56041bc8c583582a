"""Mixing methods against plain-torch transcriptions of their papers and of SnapMix's
released behaviour (docs/snapmix_release.md; the one transcription of the
release is dali_snapmix/mix/released.py): same params in, same images (1e-5) and same
label weights (1e-5) out.

The transcriptions are written for clarity: the full-resolution SPM, a convolution over
all classes, F.interpolate + slice assignment for the paste.
"""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mix_helpers import SEED, assert_close, batch, model

from dali_snapmix.mix import (
    BoxParams,
    CAMHead,
    SnapMix,
)
from dali_snapmix.mix.released import released_snapmix

# ---------------------------------------------------------------- transcription


def transcription(model, images, labels, p: BoxParams, cam_images=None):
    """The released code (dali_snapmix/mix/released.py, plain torch, float64 CAMs here; the
    release: float32) with our one deliberate difference: a self-pair is its own class.
    ``cam_images``: what the CAM pass sees (the low-resolution mode's downscaled copy).
    The head is given by hand, not found by CAMHead.of."""
    head = CAMHead(features=model.features, classifier=model.fc)
    with torch.no_grad():
        out = released_snapmix(images.clone(), labels, p, head=head, cam_images=cam_images, dtype=torch.float64)
    own = p.mix & (p.perm == torch.arange(len(labels)))
    w_a = torch.where(own & p.live, torch.ones_like(out.w_a), out.w_a)
    w_b = torch.where(own & p.live, torch.zeros_like(out.w_b), out.w_b)
    return out.images, out.y_a, out.y_b, w_a, w_b



# ---------------------------------------------------------------- SnapMix


@pytest.mark.parametrize("semantics", ["released", "improved"])
@pytest.mark.parametrize("n", [1, 5, 8])
def test_snapmix_matches_released_transcription(rng, semantics, n):
    x, y = batch(rng, n=n, classes=3)  # 3 classes: same-label pairs are common
    m = model(3)
    # NCHW CAM pass, as the transcription's: the same float32 features (the CPU default,
    # channels_last, sums the convolutions in another order: test_snapmix_cam_pass_layout)
    sm = SnapMix(semantics=semantics, seed=int(rng.integers(1 << 30)), channels_last=False)
    for _ in range(4):
        p = sm.sample(x, y)
        m1, m2 = copy.deepcopy(m), copy.deepcopy(m)
        if sm.cam_mode == "eval":
            m2.eval()  # the transcription's pass then sees the same BatchNorm mode
        got = sm.apply(x.clone(), y, p, model=m1)
        want = transcription(m2, x, y, p)
        assert_close(got.images, want[0])
        assert torch.equal(got.y_a, want[1]) and torch.equal(got.y_b, want[2])
        assert_close(got.w_a, want[3])
        assert_close(got.w_b, want[4])
        if semantics == "released":  # the CAM pass ran in train mode: running stats moved alike
            bn1 = [b for b in m1.modules() if isinstance(b, nn.BatchNorm2d)][0]
            bn2 = [b for b in m2.modules() if isinstance(b, nn.BatchNorm2d)][0]
            assert torch.allclose(bn1.running_mean, bn2.running_mean) and p.mix == (bn1.num_batches_tracked.item() == 1)
        else:
            assert m1.training  # restored after the eval-mode pass
            assert all(b.num_batches_tracked.item() == 0 for b in m1.modules() if isinstance(b, nn.BatchNorm2d))


def test_snapmix_low_resolution_mode(rng):
    x, y = batch(rng, n=6, size=64, classes=3)
    m = model(3)
    sm = SnapMix(cam_resolution=0.5, seed=int(rng.integers(1 << 30)), channels_last=False)
    p = sm.sample(x, y)
    p = BoxParams(mix=True, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    got = sm.apply(x.clone(), y, p, model=copy.deepcopy(m))
    want = transcription(copy.deepcopy(m), x, y, p, cam_images=small)
    assert sm.last_cam.shape[-2:] == (2, 2)  # 64 px -> 4x4 features at full size, 2x2 at half
    assert not got.w_a.isnan().any()
    assert_close(got.images, want[0])
    assert_close(got.w_a, want[3])
    assert_close(got.w_b, want[4])
    with pytest.raises(ValueError, match="cam_resolution must be in"):
        SnapMix(cam_resolution=0)


@pytest.mark.parametrize("cam_resolution", [1.0, 0.5])
def test_snapmix_cam_pass_layout(rng, cam_resolution):
    """On the CPU the CAM pass feeds channels_last input by default (faster with oneDNN);
    False keeps NCHW and matches the NCHW transcription exactly (to 1e-5); no autograd
    graph either way. channels_last sums each convolution in another order: its maps
    agree with NCHW's to float32 rounding (1e-5 of the map's scale), and its weights to
    1e-4, because the SPM divides by the map's mass above its minimum, which amplifies
    those roundings where a map varies little (seed 1660993594: 1.5e-5)."""
    x, y = batch(rng, n=5, size=48, classes=3)
    m = model(3)
    seen = []
    first_conv = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda _mod, args: seen.append((args[0].is_contiguous(
        memory_format=torch.channels_last) and not args[0].is_contiguous(), torch.is_grad_enabled())))
    p = SnapMix(seed=0).sample(x, y)
    p = BoxParams(mix=True, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    want = transcription(copy.deepcopy(m), x, y, p, cam_images=small if cam_resolution < 1 else None)
    for layout, expect in ((None, True), (True, True), (False, False)):
        seen.clear()
        sm = SnapMix(cam_resolution=cam_resolution, channels_last=layout)
        got = sm.apply(x.clone(), y, p, model=copy.deepcopy(m))  # deepcopy keeps the hook
        assert seen == [(expect, False)], (layout, seen)  # and no autograd graph is recorded
        if layout is False:
            nchw = sm.last_cam
        else:
            ref = SnapMix(cam_resolution=cam_resolution, channels_last=False)
            ref.apply(x.clone(), y, p, model=copy.deepcopy(m))
            nchw = ref.last_cam
        cam = sm.last_cam
        assert (cam - nchw).abs().max() <= 1e-5 * nchw.abs().max(), (SEED, layout)
        tol = 1e-5 if layout is False else 1e-4
        assert_close(got.images, want[0])
        assert_close(got.w_a, want[3], tol=tol)
        assert_close(got.w_b, want[4], tol=tol)
    with pytest.raises(ValueError, match="channels_last must be None, True or False, got 'yes'"):
        SnapMix(channels_last="yes")


def test_snapmix_same_label_nan_fallback_and_self_pairs(rng):
    x, y = batch(rng, n=6, classes=3)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    m = model(3)
    with torch.no_grad():
        m.fc.weight[0] = 0.0  # class 0: CAM = bias, constant -> NaN -> area fallback
    H = W = x.shape[-1]
    p = BoxParams(mix=True, perm=torch.tensor([1, 0, 2, 4, 3, 5]),
                  src_box=torch.tensor([[3, 30, 5, 25]] * 6), dst_box=torch.tensor([[10, 40, 0, 20]] * 6))
    got = SnapMix(seed=0, channels_last=False).apply(x.clone(), y, p, model=copy.deepcopy(m))
    want = transcription(copy.deepcopy(m), x, y, p)
    assert_close(got.images, want[0])
    assert_close(got.w_a, want[3])
    assert_close(got.w_b, want[4])
    lam = 1 - 30 * 20 / (H * W)
    assert got.w_a[0] == pytest.approx(lam) and got.w_b[0] == pytest.approx(1 - lam)  # NaN fallback
    assert (got.w_a[[2, 5]] == 1).all() and (got.w_b[[2, 5]] == 0).all()  # self-pairs
    assert got.w_a[3] == pytest.approx(got.w_b[3].item())  # same label 1, 1: both rho_a + rho_b
    assert got.w_a[1] == pytest.approx(lam)  # same label, NaN: the fallback wins (released order)


def test_snapmix_invariants_and_skips(rng):
    x, y = batch(rng, n=7, classes=5)
    m = model(5)
    sm = SnapMix(seed=1, num_classes=5)
    p = sm.sample(x, y)
    p = BoxParams(mix=True, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
    orig = x.clone()
    out = sm.apply(x, y, p, model=m)
    y0, y1, x0, x1 = p.dst_box[0].tolist()
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[:, :, y0:y1, x0:x1] = False
    assert torch.equal(out.images[outside], orig[outside])
    diff = (out.y_a != out.y_b)
    assert ((out.w_a[diff] >= 0) & (out.w_a[diff] <= 1) & (out.w_b[diff] >= 0) & (out.w_b[diff] <= 1)).all()
    # no mix: (y, y[perm], 1, 0), images untouched, no CAM pass (a model is not needed)
    p0 = BoxParams(mix=False, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box)
    out = sm.apply(orig.clone(), y, p0)
    assert torch.equal(out.images, orig) and (out.w_a == 1).all() and (out.w_b == 0).all()
    empty = BoxParams(mix=True, perm=p.perm, src_box=p.src_box, dst_box=torch.tensor([[3, 3, 0, 9]] * 7))
    out = sm.apply(orig.clone(), y, empty)
    assert torch.equal(out.images, orig) and (out.w_a == 1).all()


def test_snapmix_improved_has_no_self_pairs_and_per_sample_boxes(rng):
    x, y = batch(rng, n=9)
    sm = SnapMix(semantics="improved", seed=3)
    for _ in range(20):
        p = sm.sample(x, y)
        assert not (p.perm == torch.arange(9)).any()
    assert len({tuple(b) for b in p.dst_box.tolist()}) > 1
    released = SnapMix(seed=3).sample(x, y)
    assert len({tuple(b) for b in released.dst_box.tolist()}) == 1
