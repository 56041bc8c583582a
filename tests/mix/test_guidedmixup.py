"""Guided-SR against a float64 numpy transcription of GuidedMixup's release (its
spectral residual, smoothing, sum-to-one maps, FGVC greedy pairing and masks), the greedy
cycle against the release's own greedy on random distances, and the guards where the
release divides by zero."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close

from benchmarks.overhead import release_greedy as fgvc_greedy  # the release's greedy, transcribed
from dali_snapmix.mix import GuidedMixup, build_mix
from dali_snapmix.mix.guidedmixup import greedy_cycle, guided_masks
from dali_snapmix.mix.saliency import normalise_sum, smooth, spectral_residual


def gauss_np(maps, kernel=7, sigma=3.0):
    """torchvision's GaussianBlur in float64 numpy: the 1-D kernel, reflect padding, k x k."""
    x = np.linspace(-(kernel - 1) / 2, (kernel - 1) / 2, kernel)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    r = kernel // 2
    p = np.pad(maps, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = maps.shape[1:]
    out = np.zeros_like(maps)
    for i in range(kernel):
        for j in range(kernel):
            out += k[i] * k[j] * p[:, i:i + h, j:j + w]
    return out


def sr_np(images):
    """The release's transform_spectral_residual for images no taller than 128, float64."""
    x = images.double().numpy()
    grey = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    freq = np.fft.fft2(grey)
    mag = np.sqrt(freq.real ** 2 + freq.imag ** 2 + 1e-10)
    la = np.log(mag)
    p = np.pad(la, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = la.shape[1:]
    box = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    freq = freq * np.exp(la - box) / mag
    return gauss_np(np.abs(np.fft.ifft2(freq)))


def is_one_cycle(p):
    seen, i = set(), 0
    for _ in range(len(p)):
        seen.add(i)
        i = int(p[i])
    return i == 0 and len(seen) == len(p)


@pytest.mark.parametrize("n,h,w", [(3, 32, 32), (5, 40, 57), (2, 128, 96)])
def test_spectral_residual_matches_the_release(n, h, w):
    x = torch.from_numpy(np.random.default_rng(SEED).standard_normal((n, 3, h, w)).astype(np.float32))
    got, want = spectral_residual(x).double().numpy(), sr_np(x)
    assert np.abs(got - want).max() <= 1e-4 * want.max(), (SEED, np.abs(got - want).max(), want.max())


def test_spectral_residual_caps_the_size_as_the_release():
    """Taller than 128: the map is computed at 128 x 128 (torchvision's antialiased resize)
    and resized back; smoothing equals torchvision's 2-D GaussianBlur."""
    from torchvision.transforms.functional import gaussian_blur, resize

    x = torch.from_numpy(np.random.default_rng(SEED).standard_normal((2, 3, 150, 140)).astype(np.float32))
    small = resize(x, [128, 128], antialias=True)
    want = resize(torch.from_numpy(sr_np(small)).float()[:, None], [150, 140], antialias=True)[:, 0]
    got = spectral_residual(x)
    assert got.shape == (2, 150, 140) and (got - want).abs().max() <= 1e-4 * want.max()
    m = torch.rand(3, 20, 31)
    assert (smooth(m) - gaussian_blur(m[:, None], [7, 7], [3.0, 3.0])[:, 0]).abs().max() <= 1e-6


@pytest.mark.parametrize("b", [2, 3, 5, 16, 33])
def test_greedy_cycle_is_the_releases_greedy_and_one_cycle(b):
    rng = np.random.default_rng(SEED)
    for _ in range(20):
        a = rng.random((b, b))
        d = a + a.T  # a symmetric distance, zero diagonal
        np.fill_diagonal(d, 0)
        got = greedy_cycle(torch.from_numpy(d)).numpy()
        assert np.array_equal(got, fgvc_greedy(d)), (SEED, b)
        assert is_one_cycle(got) and not np.any(got == np.arange(b))


def test_greedy_cycle_stays_a_cycle_where_the_release_breaks():
    """Four identical maps: every distance 0. The release's 0-masking revisits image 0;
    -inf masking still walks one cycle. One image: itself."""
    d = np.zeros((4, 4))
    assert not is_one_cycle(fgvc_greedy(d))
    assert is_one_cycle(greedy_cycle(torch.from_numpy(d)).numpy())
    assert greedy_cycle(torch.zeros(1, 1)).tolist() == [0]
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        greedy_cycle(torch.zeros(2, 3))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_guided_sr_matches_the_transcription(n):
    rng = np.random.default_rng(SEED)
    x = torch.from_numpy(rng.standard_normal((n, 3, 36, 44)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, n))
    m = GuidedMixup(prob=1.0, seed=SEED)
    p = m.sample(x, y)
    got = m.apply(x.clone(), y, p)
    s = gauss_np(sr_np(x))
    s = s / s.sum((1, 2), keepdims=True)
    if n > 1:
        flat = s.reshape(n, -1)
        d = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
        assert np.array_equal(p.perm.numpy(), fgvc_greedy(d)), SEED
    perm = p.perm.numpy()
    ma = s / (s + s[perm])
    want = ma[:, None] * x.double().numpy() + (1 - ma[:, None]) * x.double().numpy()[perm]
    assert_close(got.images, torch.from_numpy(want), tol=1e-5)
    assert_close(got.w_a, torch.from_numpy(ma.mean((1, 2))), tol=1e-6)
    assert_close(got.w_a + got.w_b, torch.ones(n), tol=1e-6)
    assert torch.equal(got.y_b, y[p.perm])
    assert float(p.masks.min()) >= 0 and float(p.masks.max()) <= 1


def test_random_pairing_switch_and_zero_guards():
    x, y = torch.randn(6, 3, 24, 24), torch.arange(6)
    rnd = GuidedMixup(prob=1.0, pairing="random", seed=3).sample(x, y)
    rng = np.random.default_rng(3)
    rng.random()  # the coin
    assert torch.equal(rnd.perm, torch.from_numpy(rng.permutation(6)))
    off = GuidedMixup(prob=0.0).sample(x, y)
    out = GuidedMixup(prob=0.0).apply(x.clone(), y, off)
    assert not off.mix and torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(6))
    zero = torch.zeros(2, 4, 4)
    assert torch.equal(normalise_sum(zero), zero)  # the release: 0 / 0
    s = torch.rand(2, 4, 4)
    s[:, 0, 0] = 0
    m = guided_masks(s, torch.tensor([1, 0]))
    assert float(m[0, 0, 0]) == 0.5 and torch.allclose(m + m.flip(0), torch.ones(2, 4, 4))


def test_registered_and_bad_parameters_are_refused():
    assert isinstance(build_mix("guided-sr", num_classes=3), GuidedMixup)
    assert GuidedMixup().prob == 0.5 and GuidedMixup().pairing == "greedy"
    assert GuidedMixup(variant="ap").prob == 0.8 and isinstance(build_mix("guided-ap"), GuidedMixup)
    with pytest.raises(ValueError, match="'puzzle'"):
        GuidedMixup(variant="puzzle")
    with pytest.raises(ValueError, match="'frozen'"):
        GuidedMixup(variant="ap", saliency_bn="frozen")
    with pytest.raises(ValueError, match="model="):
        GuidedMixup(variant="ap", prob=1.0)(torch.randn(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(ValueError, match="'best'"):
        GuidedMixup(pairing="best")
    with pytest.raises(ValueError, match="kernel=4"):
        GuidedMixup(kernel=4)
    with pytest.raises(ValueError, match="2.0"):
        GuidedMixup(prob=2.0)


def small_model(seed):
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(5, width=4).train()


def release_ap_saliency(model, x, y):
    """The release's Guided-AP pass: the clean loss backpropagated (parameters included),
    the input's gradient's channel RMS, then its blur (torchvision's 2-D GaussianBlur) and
    the sum to one; float64 from there."""
    from torchvision.transforms.functional import gaussian_blur

    xa = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xa), y).backward()
    sc = (xa.grad ** 2).mean(dim=1).sqrt()
    sc = gaussian_blur(sc[:, None], [7, 7], [3.0, 3.0])[:, 0].double()
    return sc / sc.sum((1, 2), keepdim=True)


@pytest.mark.parametrize("n", [2, 7])
def test_guided_ap_matches_the_transcription(n):
    import copy

    from dali_snapmix.mix.saliency import input_gradient

    rng = np.random.default_rng(SEED)
    x = torch.from_numpy(rng.standard_normal((n, 3, 32, 40)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 5, n))
    model = small_model(SEED % 997)
    ref = copy.deepcopy(model)
    s = release_ap_saliency(ref, x, y)
    g = input_gradient(copy.deepcopy(model), x, y)
    xa = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(copy.deepcopy(model)(xa), y).backward()
    assert (g - (xa.grad ** 2).mean(1).sqrt()).abs().max() <= 1e-6 * float(g.max())
    m = GuidedMixup(variant="ap", prob=1.0, seed=SEED)
    p = m.sample(x, y)
    assert p.mix and p.perm is None  # greedy: partners from the saliency, in apply
    before = model.features[0][1].running_mean.clone()
    got = m.apply(x.clone(), y, p, model=model)
    assert not torch.equal(model.features[0][1].running_mean, before)  # train-mode pass, as the release
    assert all(q.grad is None for q in model.parameters())  # and no gradient left behind
    flat = s.reshape(n, -1)
    perm = fgvc_greedy(torch.cdist(flat[None], flat[None])[0].numpy())
    assert torch.equal(got.y_b, y[torch.from_numpy(perm)]), SEED
    sb = s[torch.from_numpy(perm)]
    ma = s / (s + sb)
    want = ma[:, None] * x.double() + (1 - ma[:, None]) * x.double()[torch.from_numpy(perm)]
    assert_close(got.images, want, tol=1e-5)
    assert_close(got.w_a, ma.mean((1, 2)), tol=1e-6)


def test_guided_ap_eval_mode_saliency_leaves_batchnorm_alone():
    x, y = torch.randn(4, 3, 24, 24), torch.arange(4)
    model = small_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = GuidedMixup(variant="ap", prob=1.0, saliency_bn="eval", pairing="random", seed=1)
    p = m.sample(x, y)
    r = m.resolve(x, y, p, model=model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(r.perm, p.perm) and r.masks.shape == (4, 24, 24)
    off = GuidedMixup(variant="ap", prob=0.0).sample(x, y)
    out = GuidedMixup(variant="ap", prob=0.0).apply(x.clone(), y, off, model=model)
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(4))
