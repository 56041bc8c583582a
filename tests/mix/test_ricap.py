"""RICAP against the release's rule (four crops tiled around one boundary, four area
labels), its sampling, the K = 4 label contract in the loss, and bad parameters."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close, batch

from dali_snapmix.mix import RICAP, RICAPParams, build_mix, mixed_cross_entropy


def released(x, y, p):
    """The release's construction, written out: crop each region from its permuted batch,
    concatenate the four crops into one image; labels and area weights per region."""
    n, _, H, W = x.shape
    h, w = p.boundary
    sizes = [(h, w), (h, W - w), (H - h, w), (H - h, W - w)]
    crops = [x[p.perms[k]][:, :, oy:oy + rh, ox:ox + rw] for k, ((rh, rw), (oy, ox)) in
             enumerate(zip(sizes, p.offsets.tolist()))]
    img = torch.cat([torch.cat([crops[0], crops[1]], 3), torch.cat([crops[2], crops[3]], 3)], 2)
    labels = torch.stack([y[p.perms[k]] for k in range(4)], 1)
    weights = torch.tensor([[rh * rw / (H * W) for rh, rw in sizes]] * n, dtype=torch.float64)
    return img, labels, weights


@pytest.mark.parametrize("n,height,width", [(1, 32, 32), (5, 40, 40), (6, 31, 45)])
def test_ricap_matches_the_release_on_its_params(rng, n, height, width):
    x = torch.from_numpy(rng.standard_normal((n, 3, height, width)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 7, n))
    r = RICAP(seed=int(rng.integers(1 << 30)))
    for _ in range(5):
        p = r.sample(x, y)
        out = r.apply(x.clone(), y, p)
        img, labels, weights = released(x, y, p)
        assert torch.equal(out.images, img), SEED  # copies: exact
        assert out.k == 4 and torch.equal(out.labels, labels)
        assert_close(out.weights, weights, tol=1e-7)
        assert_close(out.weights.sum(1), torch.ones(n), tol=1e-6)
        # the loss is the weighted sum of the four cross-entropies (float64 by hand)
        logits = torch.from_numpy(rng.standard_normal((n, 7)).astype(np.float32))
        logp = torch.log_softmax(logits.double(), 1)
        want = -(logp.gather(1, labels) * weights).sum(1).mean()
        assert mixed_cross_entropy(logits, out).item() == pytest.approx(want.item(), rel=1e-6)


def test_ricap_samples_as_the_release(rng):
    """One boundary per batch from Beta(0.3, 0.3) (mostly near the edges), four
    independent permutations, one crop offset per region inside its source image."""
    x, y = batch(rng, n=8, size=40)
    r = RICAP(seed=int(rng.integers(1 << 30)))
    hs = []
    for _ in range(300):
        p = r.sample(x, y)
        p.check(n=8, height=40, width=40)  # every offset keeps its crop inside the image
        assert all(sorted(p.perms[k].tolist()) == list(range(8)) for k in range(4)) and p.mix
        hs.append(p.boundary[0])
    hs = np.array(hs)
    # Beta(0.3, 0.3) is U-shaped: P(h <= 4 or h >= 36) = 0.587 at 40 px (2e6 draws)
    near_edge = np.mean((hs <= 4) | (hs >= 36))
    assert 0.35 < near_edge < 0.75, (SEED, near_edge)
    assert 0 < np.mean(hs <= 20) < 1


def test_ricap_switch_edges_and_bad_params(rng):
    x, y = batch(rng, n=3, size=16)
    off = RICAP(prob=0.0, seed=1)
    out = off.apply(x.clone(), y, off.sample(x, y))
    assert torch.equal(out.images, x) and torch.equal(out.w_a, torch.ones(3))
    # a boundary on the border: two regions are empty and weigh 0; the others tile the image
    p = RICAPParams(mix=True, boundary=(0, 5), perms=torch.stack([torch.tensor([2, 0, 1])] * 4),
                    offsets=torch.tensor([[0, 0], [0, 0], [0, 3], [0, 0]]))
    out = RICAP().apply(x.clone(), y, p)
    assert torch.equal(out.images[:, :, :, :5], x[[2, 0, 1]][:, :, :, 3:8])
    assert torch.equal(out.images[:, :, :, 5:], x[[2, 0, 1]][:, :, :, :11])
    assert_close(out.weights[0], torch.tensor([0.0, 0.0, 5 / 16, 11 / 16]))
    assert isinstance(build_mix("ricap", num_classes=4), RICAP)
    with pytest.raises(ValueError, match=r"offsets\[2\] = \[0, 12\] puts the 16x5 crop outside the 16x16 images"):
        RICAP().apply(x.clone(), y, RICAPParams(mix=True, boundary=(0, 5), perms=p.perms,
                                               offsets=torch.tensor([[0, 0], [0, 0], [0, 12], [0, 0]])))
    with pytest.raises(ValueError, match=r"boundary must lie in the 16x16 images, got \(17, 5\)"):
        RICAP().apply(x.clone(), y, RICAPParams(mix=True, boundary=(17, 5), perms=p.perms, offsets=p.offsets))
    with pytest.raises(ValueError, match=r"perms must be an int64 tensor of shape \(4, 3\)"):
        RICAP().apply(x.clone(), y, RICAPParams(mix=True, boundary=(0, 5), perms=p.perms[:2], offsets=p.offsets))
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        RICAP(beta=0)
    with pytest.raises(AttributeError, match="K = 4"):
        RICAP(seed=3).apply(x.clone(), y, RICAP(seed=3).sample(x, y)).y_a  # noqa: B018
