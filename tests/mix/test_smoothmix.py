"""SmoothMix against its paper's rule (x~ = (1 - G) x_a + G x_b, the partner's label
weighted by mean G), its mask against OpenMixup's construction, and bad parameters."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close, batch

from dali_snapmix.mix import SmoothMix, build_mix
from dali_snapmix.mix.smoothmix import gaussian_masks


def openmixup_kernel(h, rand_a, rand_b, sigma):
    """OpenMixup's construction, float64: a Gaussian of peak 1 on a 2h x 2h grid, the
    grid rolled by the random offsets and its centre h x h cropped."""
    s = 2 * h
    x_grid = torch.arange(s).repeat(s).view(s, s)
    grid = torch.stack([x_grid, x_grid.t()], -1).double()
    grid = torch.roll(torch.roll(grid, rand_a, 0), rand_b, 1)[s // 4: s - s // 4, s // 4: s - s // 4]
    return torch.exp(-((grid - (s - 1) / 2) ** 2).sum(-1) / (2 * sigma**2))


def test_gaussian_mask_is_openmixups_half_a_pixel_over(rng):
    """OpenMixup's offsets r = randint(0, h) - h / 2 put the centre at r + (h - 1) / 2, half a pixel
    before pixel randint(0, h); with that centre the masks agree."""
    h = 24
    for _ in range(4):
        a, b = (int(rng.integers(0, h)) - h // 2 for _ in range(2))
        s = float(rng.uniform(0.25, 0.5))
        want = openmixup_kernel(h, a, b, s * h)
        # rolling dim 0 by a moves the rows: the centre (y, x) is (a, b) + (h - 1) / 2
        got = gaussian_masks(torch.tensor([[a + (h - 1) / 2, b + (h - 1) / 2]]), torch.tensor([s], dtype=torch.float64), height=h, width=h)[0]
        assert_close(got, want, tol=1e-12)


@pytest.mark.parametrize("n,H,W,per_sample", [(1, 20, 20, False), (5, 21, 30, True), (6, 16, 16, False)])
def test_smoothmix_matches_the_paper_on_its_params(rng, n, H, W, per_sample):
    x = torch.from_numpy(rng.standard_normal((n, 3, H, W)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, n).astype(np.int64))
    sm = SmoothMix(per_sample=per_sample, seed=int(rng.integers(1 << 30)))
    p = sm.sample(x, y)
    g = 1 - p.masks.double()  # the partner's weight per pixel
    # a Gaussian of peak 1 at a pixel, sigma = s (H, W) with s in [0.25, 0.5]: recover them and rebuild
    for i in range(n):
        cy, cx = divmod(int(g[i].argmax()), W)
        assert abs(float(g[i, cy, cx]) - 1) < 1e-6
        if 0 < cy < H - 1:  # the second difference of log G along y is -1 / (s H)^2
            d2 = float(torch.log(g[i, cy + 1, cx]) + torch.log(g[i, cy - 1, cx]) - 2 * torch.log(g[i, cy, cx]))
            s = (-1 / d2) ** 0.5 / H
            assert 0.25 - 1e-3 <= s <= 0.5 + 1e-3, (SEED, s)
            rebuilt = gaussian_masks(torch.tensor([[cy, cx]]), torch.tensor([s]), height=H, width=W)[0]
            assert_close(g[i], rebuilt, tol=1e-5)
    out = sm.apply(x.clone(), y, p)
    assert_close(out.images, (1 - g[:, None]) * x.double() + g[:, None] * x.double()[p.perm], tol=1e-5)
    assert torch.equal(out.y_a, y) and torch.equal(out.y_b, y[p.perm])
    assert_close(out.w_b, g.mean((1, 2)), tol=1e-6)  # the partner's label gets mean G (OpenMixup swaps them)
    assert_close(out.w_a + out.w_b, torch.ones(n), tol=1e-6)
    assert per_sample or bool((p.masks == p.masks[:1]).all())


def test_smoothmix_sampling_switch_and_bad_parameters(rng):
    x, y = batch(rng, n=4, size=12)
    sm = SmoothMix(seed=int(rng.integers(1 << 30)))
    centres = set()
    for _ in range(200):
        g = 1 - sm.sample(x, y).masks[0]
        centres.add(divmod(int(g.argmax()), 12))
    assert len(centres) > 100, SEED  # of 144 pixels: a centre anywhere
    off = SmoothMix(prob=0.0, seed=1)
    out = off.apply(x.clone(), y, off.sample(x, y))
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(4))
    assert isinstance(build_mix("smoothmix", num_classes=4), SmoothMix)
    with pytest.raises(ValueError, match=r"sigma must satisfy 0 < low <= high, got \(0.5, 0.25\)"):
        SmoothMix(sigma=(0.5, 0.25))
    with pytest.raises(ValueError, match="sigma must be two numbers"):
        SmoothMix(sigma=0.3)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got -0.1"):
        SmoothMix(prob=-0.1)
