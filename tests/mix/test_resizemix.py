"""ResizeMix against its paper's rule (the whole partner, downscaled by tau, pasted;
labels by the pasted area), the release's sampling, and bad parameters."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mix_helpers import SEED, assert_close, batch

from dali_snapmix.mix import ResizeMix, build_mix


def reference(x, y, perm, dst):
    """Out of place, float64: each sample's box gets its partner's whole image resized
    by F.interpolate (bilinear, align_corners=False); labels (y, y[perm], 1 - A, A)."""
    n, _, H, W = x.shape
    out = x.double().clone()
    w_b = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        y0, y1, x0, x1 = (int(v) for v in dst[i])
        patch = F.interpolate(x[int(perm[i])][None].double(), size=(y1 - y0, x1 - x0), mode="bilinear",
                              align_corners=False)
        out[i, :, y0:y1, x0:x1] = patch[0]
        w_b[i] = (y1 - y0) * (x1 - x0) / (H * W)
    return out, y, y[perm], 1 - w_b, w_b


@pytest.mark.parametrize("n,size", [(1, 40), (5, 40), (8, 37)])
def test_resizemix_matches_the_paper_on_its_params(rng, n, size):
    x, y = batch(rng, n=n, size=size)
    rm = ResizeMix(seed=int(rng.integers(1 << 30)))
    # the kernel, like torch's float32 interpolate, computes source coordinates in float32:
    # off by a few ulp of the image side, times the image's slopes (the kernels' tests' bound)
    tol = 1e-5 + 4 * 2**-24 * size * float(x.max() - x.min())
    for _ in range(3):
        p = rm.sample(x, y)
        got = rm.apply(x.clone(), y, p)
        want, y_a, y_b, w_a, w_b = reference(x, y, p.perm, p.dst_box)
        assert_close(got.images, want, tol=tol)
        assert torch.equal(got.y_a, y_a) and torch.equal(got.y_b, y_b)
        assert_close(got.w_a, w_a, tol=1e-6)
        assert_close(got.w_b, w_b, tol=1e-6)
        # pixels outside each sample's box are its own, untouched
        inside = torch.zeros(n, 1, size, size, dtype=torch.bool)
        for i, (y0, y1, x0, x1) in enumerate(p.dst_box.tolist()):
            inside[i, :, y0:y1, x0:x1] = True
        assert torch.equal(torch.where(inside, 0.0, got.images), torch.where(inside, 0.0, x)), SEED
        # and the backend="reference" replay (per-sample F.interpolate + slice) agrees
        ref = rm.apply(x.clone(), y, p, backend="reference")
        assert_close(ref.images, want, tol=tol)


def test_resizemix_samples_as_the_release(rng):
    """tau ~ U(alpha, beta) once per batch: one patch size, floor(tau H) x floor(tau W);
    the whole patch inside the image at a place per sample; the source is the whole
    partner; randperm partners; over many batches tau covers its range."""
    x, y = batch(rng, n=16, size=50)
    rm = ResizeMix(scale=(0.2, 0.6), seed=int(rng.integers(1 << 30)))
    sides, places = [], set()
    for _ in range(200):
        p = rm.sample(x, y)
        d = p.dst_box
        h, w = d[:, 1] - d[:, 0], d[:, 3] - d[:, 2]
        assert bool((h == h[0]).all() and (w == w[0]).all())
        assert 10 <= int(h[0]) <= 30 and int(h[0]) == int(w[0])  # a square image: floor(50 tau) both ways
        assert bool((d[:, 0] >= 0).all() and (d[:, 1] <= 50).all() and (d[:, 2] >= 0).all() and (d[:, 3] <= 50).all())
        assert torch.equal(p.src_box, torch.tensor([[0, 50, 0, 50]]).expand(16, 4))
        assert sorted(p.perm.tolist()) == list(range(16)) and p.mix
        sides.append(int(h[0]))
        places |= {tuple(b) for b in d[:, [0, 2]].tolist()}
    assert min(sides) <= 12 and max(sides) >= 28, (SEED, min(sides), max(sides))
    assert len(places) > 100  # a place per sample, not per batch


def test_resizemix_switch_tiny_images_and_bad_parameters(rng):
    x, y = batch(rng, n=4, size=5)  # 0.1 * 5 < 1: the patch keeps one pixel
    p = ResizeMix(scale=(0.1, 0.1), seed=1).sample(x, y)
    assert torch.equal(p.dst_box[:, 1] - p.dst_box[:, 0], torch.ones(4, dtype=torch.int64))
    off = ResizeMix(prob=0.0, seed=2)
    out = off.apply(x.clone(), y, off.sample(x, y))
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(4)) and torch.equal(out.w_b, torch.zeros(4))
    assert isinstance(build_mix("resizemix", num_classes=4), ResizeMix)
    with pytest.raises(ValueError, match=r"scale must satisfy 0 < alpha <= beta <= 1, got \(0.9, 0.2\)"):
        ResizeMix(scale=(0.9, 0.2))
    with pytest.raises(ValueError, match=r"scale must satisfy .* got \(0.0, 0.5\)"):
        ResizeMix(scale=(0.0, 0.5))
    with pytest.raises(ValueError, match="scale must be two numbers"):
        ResizeMix(scale=0.5)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        ResizeMix(prob=1.5)
    np.testing.assert_equal(ResizeMix().scale, (0.1, 0.8))


@pytest.mark.parametrize("n,size", [(1, 40), (6, 37)])
def test_resizemix_nearest_is_the_release(rng, n, size):
    """resize="nearest": the release's construction (trainer.py: the batch resized once by
    F.interpolate(scale_factor=tau), nearest; a Python loop pasting each sample's partner
    patch at its place), exact on the same params."""
    x, y = batch(rng, n=n, size=size)
    rm = ResizeMix(resize="nearest", seed=int(rng.integers(1 << 30)))
    for _ in range(3):
        p = rm.sample(x, y)
        got = rm.apply(x.clone(), y, p)
        small = F.interpolate(x.clone(), scale_factor=p.tau)  # mode="nearest", the default
        want = x.clone()
        for i in range(n):
            y0, y1, x0, x1 = (int(v) for v in p.dst_box[i])
            want[i, :, y0:y1, x0:x1] = small[int(p.perm[i])]
        assert torch.equal(got.images, want), SEED
        assert_close(got.w_b, (p.dst_box[:, 1] - p.dst_box[:, 0]) * (p.dst_box[:, 3] - p.dst_box[:, 2]) / size**2, tol=1e-6)
        # not the bilinear default: the two resizes differ
        assert not torch.equal(ResizeMix().apply(x.clone(), y, p).images, got.images)
    with pytest.raises(ValueError, match=r"resize must be one of \('bilinear', 'nearest'\), got 'bicubic'"):
        ResizeMix(resize="bicubic")
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\], got 1.5"):
        rm.apply(x.clone(), y, type(p)(mix=True, perm=p.perm, src_box=p.src_box, dst_box=p.dst_box, tau=1.5))
