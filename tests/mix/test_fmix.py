"""FMix against a NumPy transcription of its paper's mask (and of the release's spectrum
under spectrum="release"), replayed from the same draws; the blend against float64 torch."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close, batch

from dali_snapmix.mix import FMix, build_mix
from dali_snapmix.mix.fmix import low_freq_images


def numpy_mask(r, *, n, H, W, beta, decay, max_soft, spectrum):
    """Replays FMix's draws from ``r`` and builds each mask as the paper (or the release's
    fmix.py) does, in NumPy: returns (lam, masks)."""
    r.random(), r.permutation(n)
    lam = r.beta(beta, beta, size=n)
    if spectrum == "paper":
        fx = np.fft.rfftfreq(W)
    else:  # the release's fftfreqnd: w // 2 + 2 columns for odd widths
        fx = np.fft.fftfreq(W)[: W // 2 + (2 if W % 2 else 1)]
    f = np.sqrt(fx[None, :] ** 2 + np.fft.fftfreq(H)[:, None] ** 2)
    scale = 1.0 / np.maximum(f, 1.0 / max(H, W)) ** decay
    noise = r.standard_normal((n, H, len(fx), 2))
    up = r.random(n) > 0.5
    masks = []
    for i in range(n):
        p = noise[i] * scale[..., None]
        if spectrum == "paper":
            g = np.fft.irfft2(p[..., 0] + 1j * p[..., 1], s=(H, W), axes=(0, 1))
        else:  # the release: spectrum.reshape(1, h, -1) read as real coefficients by irfftn
            g = np.fft.irfftn(p.reshape(1, H, -1), (H, W), axes=(1, 2))[0]
        g = g - g.min()
        g = (g / g.max()).ravel()
        idx = np.argsort(-g, kind="stable")
        num = int(np.ceil(lam[i] * H * W)) if up[i] else int(np.floor(lam[i] * H * W))
        eff = min(lam[i], 1 - lam[i]) if (max_soft > lam[i] or max_soft > 1 - lam[i]) else max_soft
        soft = int(H * W * eff)
        m = np.zeros(H * W)
        m[idx[: num + soft]] = 1
        m[idx[num - soft:]] = 0
        m[idx[num - soft: num + soft]] = np.linspace(1, 0, 2 * soft)
        masks.append(m.reshape(H, W))
    return lam, np.stack(masks)


@pytest.mark.parametrize("spectrum,n,H,W,max_soft", [("paper", 5, 32, 32, 0.0), ("release", 3, 33, 31, 0.0),
                                                     ("paper", 1, 17, 24, 0.1), ("release", 4, 20, 20, 0.1)])
def test_fmix_masks_match_the_paper_and_the_release(rng, spectrum, n, H, W, max_soft):
    x, y = batch(rng, n=n, size=H)
    x = x[..., :W].contiguous() if W <= H else torch.cat([x, x[..., : W - H]], 3)
    fm = FMix(per_sample=True, max_soft=max_soft, spectrum=spectrum)
    s = int(rng.integers(1 << 30))
    p = fm.sample(x, y, rng=np.random.default_rng(s))
    lam, want = numpy_mask(np.random.default_rng(s), n=n, H=H, W=W, beta=1.0, decay=3.0, max_soft=max_soft,
                           spectrum=spectrum)
    want = torch.from_numpy(want)
    if spectrum == "paper":
        assert_close(p.masks, want, tol=1e-6)
    else:  # the release's images are point-symmetric: its pixels tie in pairs, which two FFTs' last bits order
        def sym(m):
            return m.double() + torch.roll(m.double().flip(1, 2), (1, 1), (1, 2))
        assert_close(sym(p.masks), sym(want), tol=1e-6)
        assert_close(p.masks.reshape(n, -1).sort(1).values, want.reshape(n, -1).sort(1).values, tol=1e-6)
    # the label is the mask's mean, within 1 / (H W) of the release's sampled lam (no soft band)
    assert_close(p.w_a, want.mean((1, 2)), tol=1e-6)
    if max_soft == 0:
        assert bool(((p.masks == 0) | (p.masks == 1)).all())
        assert (p.w_a.double() - torch.from_numpy(lam)).abs().max() <= 1 / (H * W) + 1e-7, SEED
    out = fm.apply(x.clone(), y, p)
    m = p.masks.double()[:, None]
    assert_close(out.images, m * x.double() + (1 - m) * x.double()[p.perm], tol=1e-5)
    assert torch.equal(out.y_a, y) and torch.equal(out.y_b, y[p.perm])
    assert_close(out.w_a + out.w_b, torch.ones(n), tol=1e-6)


def test_fmix_release_images_are_point_symmetric_the_papers_are_not(rng):
    """The release's real-coefficient spectrum gives g(-y, -x) = g(y, x) (circularly)."""
    noise = rng.standard_normal((3, 24, 24 // 2 + 1, 2))

    def asymmetry(spectrum):
        g = low_freq_images(noise, height=24, width=24, decay=3.0, spectrum=spectrum)
        return float((g - torch.roll(g.flip(1, 2), (1, 1), (1, 2))).abs().max())

    assert asymmetry("release") < 1e-12 and asymmetry("paper") > 0.1, SEED


def test_fmix_one_mask_per_batch_switch_and_bad_parameters(rng):
    x, y = batch(rng, n=6, size=16)
    fm = FMix(seed=int(rng.integers(1 << 30)))
    p = fm.sample(x, y)
    assert bool((p.masks == p.masks[:1]).all()) and bool((p.w_a == p.w_a[0]).all()) and p.mix
    assert sorted(p.perm.tolist()) == list(range(6))
    lams = [float(fm.sample(x, y).w_a[0]) for _ in range(300)]
    assert min(lams) < 0.05 and max(lams) > 0.95, SEED  # lam ~ Beta(1, 1)
    off = FMix(prob=0.0, seed=1)
    out = off.apply(x.clone(), y, off.sample(x, y))
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(6))
    assert isinstance(build_mix("fmix", num_classes=4), FMix)
    with pytest.raises(ValueError, match=r"decay must be > 0, got -1"):
        FMix(decay=-1)
    with pytest.raises(ValueError, match=r"max_soft must be in \[0, 0.5\], got 0.7"):
        FMix(max_soft=0.7)
    with pytest.raises(ValueError, match=r"spectrum must be one of \('paper', 'release'\), got 'numpy'"):
        FMix(spectrum="numpy")
    with pytest.raises(ValueError, match=r"beta must be > 0, got 0"):
        FMix(beta=0)
    with pytest.raises(ValueError, match=r"masks must be in \[0, 1\], got masks\[2, 0, 0\] = 1.5"):
        bad = p.masks.clone()
        bad[2, 0, 0] = 1.5
        fm.apply(x.clone(), y, type(p)(mix=True, perm=p.perm, masks=bad, w_a=p.w_a))
