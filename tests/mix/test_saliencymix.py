"""SaliencyMix against a transcription of its paper and release (numpy, OpenCV's own
detector on each source's 8-bit image, the release's box and area label), per sample
and per batch, and its edge cases and bad parameters."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close

from dali_snapmix.mix import SaliencyMix, build_mix

cv2 = pytest.importorskip("cv2", reason="opencv-contrib-python-headless (the dev extra) is the reference")

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def photos(rng, n, h, w):
    """8-bit RGB (n, h, w, 3) with structure (smoothed noise plus a bright blob, so peaks
    fall anywhere, borders included) and the normalised float32 NCHW batch of them."""
    base = rng.random((n, h // 4 + 1, w // 4 + 1, 3))
    img = np.kron(base, np.ones((1, 4, 4, 1)))[:, :h, :w] * 160
    for i in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        img[i, max(cy - 2, 0):cy + 2, max(cx - 2, 0):cx + 2] = 255
    levels = np.clip(np.rint(img + rng.integers(-8, 8, img.shape)), 0, 255).astype(np.uint8)
    x = ((levels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    return levels, torch.from_numpy(np.ascontiguousarray(x))


def release_box(rgb, lam):
    """The release's saliency_bbox on an 8-bit image (its names: 'x' is the row)."""
    ok, m = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(np.ascontiguousarray(rgb[..., ::-1]))
    m = (m * 255).astype("uint8") if m.dtype != np.uint8 else m
    x, y = np.unravel_index(np.argmax(m, axis=None), m.shape)
    W, H = rgb.shape[0], rgb.shape[1]
    cut = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(W * cut), int(H * cut)
    return (np.clip(x - cut_w // 2, 0, W), np.clip(x + cut_w // 2, 0, W),
            np.clip(y - cut_h // 2, 0, H), np.clip(y + cut_h // 2, 0, H))


def reference(levels, x, y, seed, *, per_sample, prob=1.0):
    """Out of place, float64, the release's order of draws (coin, lam, randperm)."""
    rng = np.random.default_rng(seed)
    mix = rng.random() < prob
    lam = rng.beta(1.0, 1.0)
    perm = rng.permutation(len(x))
    out = x.double().clone()
    if not mix:
        return out, torch.ones(len(x), dtype=torch.float64), perm
    h, w = x.shape[2:]
    w_b = torch.zeros(len(x), dtype=torch.float64)
    shared = release_box(levels[perm[0]], lam)
    for i in range(len(x)):
        y0, y1, x0, x1 = release_box(levels[perm[i]], lam) if per_sample else shared
        out[i, :, y0:y1, x0:x1] = x[perm[i], :, y0:y1, x0:x1].double()
        w_b[i] = (y1 - y0) * (x1 - x0) / (h * w)
    return out, 1.0 - w_b, perm


@pytest.mark.parametrize("semantics", ["paper", "released"])
@pytest.mark.parametrize("n,h,w", [(1, 32, 32), (5, 36, 44), (8, 48, 40)])
def test_saliencymix_matches_the_transcription(semantics, n, h, w):
    rng = np.random.default_rng(SEED)
    levels, x = photos(rng, n, h, w)
    y = torch.from_numpy(rng.integers(0, 5, n))
    for k in range(3):
        seed = SEED + k
        got = SaliencyMix(semantics=semantics, seed=seed)(x.clone(), y)
        want, w_a, perm = reference(levels, x, y, seed, per_sample=semantics == "paper")
        assert_close(got.images, want, tol=1e-5)
        assert_close(got.w_a, w_a, tol=1e-6)
        assert_close(got.w_a + got.w_b, torch.ones(n), tol=1e-6)
        assert torch.equal(got.y_b, y[perm]) and torch.equal(got.y_a, y)


def test_boxes_sit_on_the_sources_peaks_and_clip_at_borders(rng):
    """Each source's only bright pixel in a corner or on an edge: the box is centred on
    it and shrunk by the border; pixels outside it untouched; the label is its area."""
    n, h, w = 4, 40, 48
    levels = np.full((n, h, w, 3), 60, np.uint8)
    spots = [(0, 0), (h - 1, w - 1), (0, 20), (25, w - 1)]
    for i, (cy, cx) in enumerate(spots):
        levels[i, cy, cx] = 255
    x = torch.from_numpy(np.ascontiguousarray(((levels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2), np.float32))
    y = torch.arange(n)
    m = SaliencyMix(seed=int(rng.integers(1 << 30)))
    p = m.sample(x, y)
    got = m.apply(x.clone(), y, p)
    for i in range(n):
        cy, cx = spots[int(p.perm[i])]
        y0, y1, x0, x1 = p.dst_box[i].tolist()
        assert torch.equal(p.src_box[i], p.dst_box[i])
        assert y0 <= cy <= y1 and x0 <= cx <= x1 and (y0 == 0 or y1 == h or x0 == 0 or x1 == w)
        keep = torch.ones(h, w, dtype=torch.bool)
        keep[y0:y1, x0:x1] = False
        assert torch.equal(got.images[i][:, keep], x[i][:, keep])
        assert_close(got.w_b[i], torch.tensor((y1 - y0) * (x1 - x0) / (h * w)), tol=1e-6)


def test_switched_off_leaves_the_batch_and_skips_the_saliency():
    levels, x = photos(np.random.default_rng(SEED), 3, 24, 24)
    m = SaliencyMix(prob=0.0, seed=1)
    p = m.sample(x, torch.zeros(3, dtype=torch.int64))
    out = m.apply(x.clone(), torch.zeros(3, dtype=torch.int64), p)
    assert not p.mix and torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(3))


def test_registered_and_bad_parameters_are_refused():
    assert isinstance(build_mix("saliencymix", num_classes=3), SaliencyMix)
    assert SaliencyMix().semantics == "paper" and SaliencyMix().beta == 1.0
    with pytest.raises(ValueError, match="'per-batch'"):
        SaliencyMix(semantics="per-batch")
    with pytest.raises(ValueError, match="-1"):
        SaliencyMix(beta=-1)
    with pytest.raises(ValueError, match="1.5"):
        SaliencyMix(prob=1.5)
    with pytest.raises(ValueError, match=r"std=\(0.2, 0.0, 0.2\)"):
        SaliencyMix(std=(0.2, 0.0, 0.2))
