"""Mixing methods against plain-torch transcriptions of their papers and of SnapMix's
released behaviour (docs/snapmix_release.md; the one transcription of the
release is dali_snapmix/mix/released.py): same params in, same images (1e-5) and same
label weights (1e-5) out.

The transcriptions are written for clarity: the full-resolution SPM, a convolution over
all classes, F.interpolate + slice assignment for the paste.
"""

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dali_snapmix.mix import (
    BlendParams,
    BoxParams,
    CAMHead,
    CutMix,
    CutOut,
    CutOutParams,
    Mixup,
    SnapMix,
    build_mix,
    class_activation_maps,
    mixed_cross_entropy,
    soft_targets,
)
from dali_snapmix.mix.released import released_snapmix
from dali_snapmix.models import SmallCNN

SEED = int.from_bytes(os.urandom(4), "little")


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


# ---------------------------------------------------------------- helpers


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def batch(rng, n=6, size=40, classes=4):
    x = torch.from_numpy(rng.standard_normal((n, 3, size, size)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, classes, n).astype(np.int64))
    return x, y


def model(classes=4, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(classes, width=8).train()


def assert_close(got, want, tol=1e-5):
    assert (got.double() - want.double()).abs().max() <= tol, (SEED, got, want)


# ---------------------------------------------------------------- SnapMix


@pytest.mark.parametrize("semantics", ["released", "improved"])
@pytest.mark.parametrize("n", [1, 5, 8])
def test_snapmix_matches_released_transcription(rng, semantics, n):
    x, y = batch(rng, n=n, classes=3)  # 3 classes: same-label pairs are common
    m = model(3)
    sm = SnapMix(semantics=semantics, seed=int(rng.integers(1 << 30)))
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
    sm = SnapMix(cam_resolution=0.5, seed=int(rng.integers(1 << 30)))
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
    False keeps NCHW; both match the NCHW transcription; no autograd graph either way."""
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
        assert_close(got.images, want[0])
        assert_close(got.w_a, want[3])
        assert_close(got.w_b, want[4])
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
    got = SnapMix(seed=0).apply(x.clone(), y, p, model=copy.deepcopy(m))
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


# ---------------------------------------------------------------- CutMix, Mixup, CutOut


def test_cutmix_matches_paper(rng):
    x, y = batch(rng, n=8)
    cm = CutMix(seed=int(rng.integers(1 << 30)))
    p = cm.sample(x, y)
    got = cm.apply(x.clone(), y, p)
    want = x.clone()
    y0, y1, x0, x1 = p.dst_box[0].tolist()
    want[:, :, y0:y1, x0:x1] = x[p.perm][:, :, y0:y1, x0:x1]  # released: slice assignment from x[perm]
    lam = 1 - (y1 - y0) * (x1 - x0) / (40 * 40)
    assert torch.equal(got.images, want)
    assert_close(got.w_a, torch.full((8,), lam))
    assert_close(got.w_b, torch.full((8,), 1 - lam))
    assert torch.equal(got.y_b, y[p.perm])


def test_asymmetric_cutmix_area_labels(rng):
    x, y = batch(rng, n=5)
    cm = build_mix("as-cutmix", seed=int(rng.integers(1 << 30)))
    p = cm.sample(x, y)
    got = cm.apply(x.clone(), y, p)
    want = x.clone()
    dy0, dy1, dx0, dx1 = p.dst_box[0].tolist()
    sy0, sy1, sx0, sx1 = p.src_box[0].tolist()
    if (dy1 - dy0) * (dx1 - dx0) > 0 and (sy1 - sy0) * (sx1 - sx0) > 0:
        want[:, :, dy0:dy1, dx0:dx1] = F.interpolate(x[p.perm][:, :, sy0:sy1, sx0:sx1], size=(dy1 - dy0, dx1 - dx0),
                                                     mode="bilinear", align_corners=True)
        assert_close(got.w_b, torch.full((5,), (dy1 - dy0) * (dx1 - dx0) / 1600))
    assert_close(got.images, want)


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_matches_paper(rng, per_sample):
    x, y = batch(rng, n=7)
    mu = Mixup(prob=1.0, per_sample=per_sample, seed=int(rng.integers(1 << 30)))
    p = mu.sample(x, y)
    got = mu.apply(x.clone(), y, p)
    lam = p.lam.double()[:, None, None, None]
    assert_close(got.images, lam * x.double() + (1 - lam) * x.double()[p.perm])
    # Eq. 1: the own label weighs lam, the partner's 1 - lam (swapped weights fail)
    assert_close(got.w_a, p.lam.double(), tol=0)
    assert_close(got.w_b, 1 - p.lam.double(), tol=1e-7)
    assert torch.equal(got.y_a, y) and torch.equal(got.y_b, y[p.perm])
    assert bool(((p.lam - 0.5).abs() > 1e-3).any())  # a draw where swapping would show
    assert per_sample == (len(set(p.lam.tolist())) > 1)


def test_cutout_box_of_half_sides(rng):
    x, y = batch(rng, n=4, size=64)
    co = CutOut(prob=1.0, seed=2)
    p = co.sample(x, y)
    got = co.apply(x.clone(), y, p)
    y0, y1, x0, x1 = p.box[0].tolist()
    assert y1 - y0 <= 32 and x1 - x0 <= 32
    want = x.clone()
    want[:, :, y0:y1, x0:x1] = 0
    assert torch.equal(got.images, want) and (got.w_a == 1).all() and torch.equal(got.y_a, got.y_b)


def test_same_params_replay_through_the_reference_backend(rng):
    x, y = batch(rng, n=6)
    m = model()
    for mix in (SnapMix(seed=5), CutMix(seed=5, asymmetric=True), Mixup(prob=1.0, seed=5), CutOut(prob=1.0, seed=5)):
        p = mix.sample(x, y)
        a = mix.apply(x.clone(), y, p, model=copy.deepcopy(m))
        b = mix.apply(x.clone(), y, p, model=copy.deepcopy(m), backend="reference")
        assert_close(a.images, b.images)
        assert torch.equal(a.y_a, b.y_a) and torch.equal(a.y_b, b.y_b), mix.name
        assert_close(a.w_a, b.w_a, tol=1e-6)
        assert_close(a.w_b, b.w_b, tol=1e-6)


# ---------------------------------------------------------------- loss and soft targets


def test_mixed_cross_entropy_and_soft_targets(rng):
    x, y = batch(rng, n=6)
    out = SnapMix(seed=0).apply(x.clone(), y, SnapMix(seed=0).sample(x, y), model=model())
    logits = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32))
    logp = torch.log_softmax(logits.double(), 1)
    want = torch.stack([-logp[i, out.y_a[i]] * out.w_a[i] - logp[i, out.y_b[i]] * out.w_b[i] for i in range(6)]).mean()
    assert mixed_cross_entropy(logits, out).item() == pytest.approx(want.item(), rel=1e-5)
    t = soft_targets(out, num_classes=4)
    assert_close(t.sum(1), out.w_a + out.w_b)
    assert (-(t * logp.float()).sum(1).mean()).item() == pytest.approx(want.item(), rel=1e-5)
    # timm's smoothing, written out: each label's one-hot becomes (1 - s) on the class + s / K everywhere
    s, K = 0.1, 4
    want_t = torch.zeros(6, K, dtype=torch.float64)
    for i in range(6):
        for k in range(K):
            for yy, w in ((out.y_a[i], out.w_a[i]), (out.y_b[i], out.w_b[i])):
                want_t[i, k] += float(w) * ((1 - s) * float(k == yy) + s / K)
    assert_close(soft_targets(out, num_classes=K, smoothing=s), want_t, tol=1e-6)
    assert_close(t, want_t.new_tensor([[float(out.w_a[i]) * (k == out.y_a[i]) + float(out.w_b[i]) * (k == out.y_b[i])
                                         for k in range(K)] for i in range(6)]), tol=1e-7)
    assert not torch.equal(out.w_a + out.w_b, torch.ones(6))  # SnapMix: weights that do not sum to 1


# ---------------------------------------------------------------- CAMs of real architectures


def _tv(name, **kw):
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=5, **kw).eval()


@pytest.mark.parametrize("name,size,feats", [
    ("resnet18", 64, lambda m, x: m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))),
    ("densenet121", 64, lambda m, x: m.features(x)),
    ("efficientnet_b0", 64, lambda m, x: m.features(x)),
    ("inception_v3", 80, None),
])
def test_cam_head_of_torchvision_models(rng, name, size, feats):
    m = _tv(name, **({"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}))
    x = torch.from_numpy(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    y = torch.tensor([1, 4])
    head = CAMHead.of(m)
    with torch.no_grad():
        cam = class_activation_maps(head, x, y)
        logits = m(x)
        if feats is not None:  # against a conv over all classes on hand-extracted features
            f = F.relu(feats(m, x))
            clf = head.classifier
            full = F.conv2d(f, clf.weight[:, :, None, None], bias=clf.bias)
            assert_close(cam, full[torch.arange(2), y], 1e-4)
    if name != "efficientnet_b0":  # (its features end in SiLU, so the ReLU of the CAM changes them)
        # GAP of the CAM is the model's own logit for that class
        assert_close(cam.mean((1, 2)), logits[torch.arange(2), y], 1e-4)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "efficientnet_b0", "inception_v3", "small_cnn"])
def test_one_classifier_discovery_serves_the_trainer_and_the_cam_head(name):
    """The layer the trainer treats as the new head is the layer CAMs are read from, named
    here by hand for each architecture."""
    from dali_snapmix.models import classifier_of

    m = SmallCNN(5) if name == "small_cnn" else _tv(name, **({"aux_logits": True, "init_weights": False}
                                                            if name == "inception_v3" else {}))
    want = {"resnet18": "fc", "densenet121": "classifier", "efficientnet_b0": "classifier.1", "inception_v3": "fc",
            "small_cnn": "fc"}[name]
    assert classifier_of(m) is m.get_submodule(want) and CAMHead.of(m).classifier is m.get_submodule(want)
    ddp_like = torch.nn.DataParallel(m)  # unwrapped, as the trainer may hold it
    assert classifier_of(ddp_like) is m.get_submodule(want)


def test_timm_models_when_installed(rng):
    timm = pytest.importorskip("timm", reason="timm is optional")
    m = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    x = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        cam = class_activation_maps(CAMHead.of(m), x, torch.tensor([0, 3]))
        assert_close(cam.mean((1, 2)), m(x)[torch.arange(2), torch.tensor([0, 3])], 1e-4)


def test_models_without_a_cam_head_get_a_clear_error():
    import torchvision

    m = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
    with pytest.raises(ValueError, match="cannot find a global-average-pooling \\+ linear head in MobileNetV3.*CAMHead\\(features="):
        CAMHead.of(m)
    from dali_snapmix.models import classifier_of

    with pytest.raises(ValueError, match=r"linear classifier of MobileNetV3 \(found: classifier=Sequential\)"):
        classifier_of(m)
    bad = CAMHead(features=lambda x: torch.zeros(len(x), 7, 2, 2), classifier=nn.Linear(9, 3))
    with pytest.raises(ValueError, match="7 channels but the classifier takes 9"):
        class_activation_maps(bad, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs the model"):
        sm = SnapMix(seed=0)
        x = torch.zeros(2, 3, 8, 8)
        sm.apply(x, torch.tensor([0, 1]), BoxParams(True, torch.tensor([1, 0]), torch.tensor([[0, 4, 0, 4]] * 2), torch.tensor([[0, 4, 0, 4]] * 2)))


# ---------------------------------------------------------------- bad input


def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        SnapMix(beta=0)
    with pytest.raises(ValueError, match="beta must be > 0, got -1"):
        CutMix(beta=-1)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        Mixup(prob=1.5)
    with pytest.raises(ValueError, match="semantics must be one of"):
        SnapMix(semantics="paper")
    with pytest.raises(ValueError, match="unknown mixing method 'fmix'"):
        build_mix("fmix")
    mix = CutMix(num_classes=4, seed=0)
    x = torch.zeros(3, 3, 8, 8)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got min 0, max 4"):
        mix(x, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="got min -1"):
        mix(x, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        mix(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NCHW float"):
        mix(x.to(torch.uint8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="NCHW float"):
        mix(x[0], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="int64"):
        mix(x, torch.tensor([0.0, 1.0, 2.0]))


def test_error_messages_name_what_is_wrong():
    """2-D labels: the message gives the shape, not just the (right) dtype; blend takes
    float64 weights and says so; MidLevel without its hook's output says why."""
    from dali_snapmix.kernels import blend

    from dali_snapmix.mix import CutMix
    from dali_snapmix.models import MidLevel, SmallCNN

    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"got torch.int64 of shape \(4, 1\)"):
        CutMix(num_classes=3)(x, torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="float32 or float64 tensor, got torch.int64"):
        blend(x, perm=torch.arange(4), weights=torch.ones(4, dtype=torch.int64))
    blend(x, perm=torch.arange(4), weights=torch.ones(4, dtype=torch.float64))  # accepted, as the message says
    body = SmallCNN(3)
    stray = torch.nn.Conv2d(64, 64, 1)  # not part of the backbone: its hook never fires
    with pytest.raises(RuntimeError, match="the hooked layer did not run in SmallCNN's forward"):
        MidLevel(body, stray, 64, 3)(torch.randn(2, 3, 32, 32))


# ---------------------------------------------------------------- replayed params are checked


def _params_cases(n, h, w):
    perm = torch.arange(n).flip(0)
    box = torch.tensor([[0, h // 2, 0, w // 2]] * n)
    return [
        (CutMix(), BoxParams(True, perm[:-1], box[:-1], box[:-1]), r"perm must be a torch.int64 tensor of shape \(5,\), got torch.int64 of shape \(4,\)"),
        (CutMix(), BoxParams(True, perm + 1, box, box), r"perm must index the batch of 5, got values from 1 to 5"),
        (CutMix(), BoxParams(True, perm, box.clone().index_put_((torch.tensor([2]), torch.tensor([1])), torch.tensor(h + 1)), box),
         rf"src_box\[2\] = \[0, {h + 1}, 0, {w // 2}\] \(y0, y1, x0, x1\) does not lie inside the {h}x{w} images"),
        (SnapMix(), BoxParams(True, perm, box, torch.tensor([[3, 1, 0, 4]] * n)), r"dst_box\[0\] = \[3, 1, 0, 4\]"),
        (SnapMix(), BoxParams(True, perm, box, box.float()), r"dst_box must be a torch.int64 tensor of shape \(5, 4\), got torch.float32"),
        (Mixup(), BlendParams(True, perm, torch.full((n,), 1.5)), r"lam must be in \[0, 1\], got lam\[0\] = 1.5"),
        (Mixup(), BlendParams(True, perm, torch.full((n + 1,), 0.5)), r"lam must be a torch.float32 or torch.float64 tensor of shape \(5,\)"),
        (CutOut(), CutOutParams(True, torch.tensor([[0, 2, -1, 3]] * n)), r"box\[0\] = \[0, 2, -1, 3\]"),
        (CutMix(), BlendParams(True, perm, torch.full((n,), 0.5)), "CutMix takes BoxParams, got BlendParams"),
        (build_mix("baseline"), BlendParams(True, perm, torch.full((n,), 0.5)), "Baseline takes NoneType, got BlendParams"),
    ]


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("entry", ["apply", "call"])
def test_replayed_params_that_do_not_fit_the_batch_are_refused(rng, case, entry):
    """apply() (and __call__ with params=) check the params against the batch before any
    kernel writes: another batch size, a box outside the image, a partner out of range."""
    x, y = batch(rng, n=5, size=12)
    mix, p, msg = _params_cases(5, 12, 12)[case]
    before = x.clone()
    with pytest.raises(ValueError, match=msg):
        if entry == "apply":
            mix.apply(x, y, p, model=model())
        else:
            mix(x, y, params=p, model=model())
    assert torch.equal(x, before)  # nothing written


def test_fitting_replayed_params_pass_the_check(rng):
    """The edges that are legal: full-image boxes, 1-pixel boxes, empty boxes, self-pairs."""
    x, y = batch(rng, n=3, size=12)
    full = torch.tensor([[0, 12, 0, 12], [5, 6, 11, 12], [4, 4, 0, 12]])
    out = CutMix().apply(x.clone(), y, BoxParams(True, torch.tensor([0, 2, 1]), full, full))
    assert torch.equal(out.images[0], x[0])  # a self-pair pastes itself
    assert_close(out.w_b, torch.tensor([1.0, 1 / 144, 0.0]))
