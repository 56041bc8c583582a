"""The mixed-example family against a transcription of the release's per-pair
constructions (mixed_example.py: concatenations of slices, Bernoulli masks), replayed
from the same draws, in float64; labels, invariants and bad parameters."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close

from dali_snapmix.mix import MixedExample, build_mix
from dali_snapmix.mix.mixed_example import VARIANTS


def release(v, xa, xb, r, semantics):
    """One pair as the release builds it (CHW here, HWC there), from this pair's draws
    taken off ``r`` in the documented order; returns (image, w_a)."""
    _, H, W = xa.shape
    cat = torch.cat
    if v == "vertical-concat":
        d = int(r.integers(0, H))
        return cat([xa[:, :d], xb[:, d:]], 1), d / H
    if v == "horizontal-concat":
        d = int(r.integers(0, W))
        return cat([xa[:, :, :d], xb[:, :, d:]], 2), d / W
    if v == "mixed-concat":
        if semantics == "paper":
            dr, dc = int(r.integers(0, H)), int(r.integers(0, W))
            lr, lc = dr / H, dc / W
        else:  # the release's dim_W splits the height, dim_H the width
            dr, dc = int(r.integers(0, W)), int(r.integers(0, H))
            lr, lc = dr / W, dc / H
        im1, im2 = cat([xa[:, :dr], xb[:, dr:]], 1), cat([xb[:, :dr], xa[:, dr:]], 1)
        return cat([im1[:, :, :dc], im2[:, :, dc:]], 2), lr * lc + (1 - lr) * (1 - lc)
    if v == "random-2x2":
        hb, wb = int(round(0.25 * H)), int(round(0.25 * W))
        dr, dc = int(r.integers(hb, H - hb)), int(r.integers(wb, W - wb))
        q = r.random()
        vals = (r.random(4) < q).astype(np.float64)
        mask = torch.zeros(H, W, dtype=torch.float64)
        mask[:dr, :dc], mask[:dr, dc:], mask[dr:, :dc], mask[dr:, dc:] = vals
        return mask * xa + (1 - mask) * xb, float(mask.mean())
    if v == "vh-mixup":
        dr, dc, a = int(r.integers(0, H)), int(r.integers(0, W)), r.random()
        v_img, h_img = cat([xa[:, :dr], xb[:, dr:]], 1), cat([xa[:, :, :dc], xb[:, :, dc:]], 2)
        return a * v_img + (1 - a) * h_img, a * dr / H + (1 - a) * dc / W
    if v in ("row-interval", "column-interval"):
        ax, side = (1, H) if v == "row-interval" else (2, W)
        i1 = int(r.integers(0, side))
        i2 = int(r.integers(i1, side))
        i3 = int(r.integers(0, side - (i2 - i1)))
        sl = [lambda a, b, t=t: t.narrow(ax, a, b - a) for t in (xa, xb)]
        return cat([sl[0](0, i1), sl[1](i3, i3 + i2 - i1), sl[0](i2, side)], ax), (side - (i2 - i1)) / side
    q = r.random()
    shape = {"random-rows": (1, H, 1), "random-columns": (1, 1, W), "random-pixels": (1, H, W),
             "random-elements": tuple(xa.shape)}[v]
    mask = torch.from_numpy((r.random(shape[1:] if v != "random-elements" else shape) < q).astype(np.float64))
    mask = mask.reshape(shape)
    return mask * xa + (1 - mask) * xb, float(mask.expand_as(xa).mean())


class _Column:
    """Hands one pair its values of the batch-wide draws, in call order."""

    def __init__(self, cols, i):
        self.vals, self.i, self.k = cols["vals"], i, 0

    def _next(self):
        v = self.vals[self.k][self.i]
        self.k += 1
        return v

    def integers(self, lo, hi=None):
        return self._next()

    def random(self, size=None):
        return self._next()


def _columns(v, shape, semantics, state):
    """The method's batch-wide draws, in its order, split into per-pair values."""
    n, c, h, w = shape
    g = np.random.default_rng()
    g.bit_generator.state = state
    vals = []
    if v in ("row-interval", "column-interval"):
        side = h if v == "row-interval" else w
        i1 = g.integers(0, side, size=n)
        i2 = g.integers(i1, side)
        vals = [i1, i2, g.integers(0, side - (i2 - i1))]
    elif v in ("vertical-concat", "horizontal-concat"):
        vals = [g.integers(0, h if v == "vertical-concat" else w, size=n)]
    elif v == "mixed-concat":
        a, b = (h, w) if semantics == "paper" else (w, h)
        vals = [g.integers(0, a, size=n), g.integers(0, b, size=n)]
    elif v == "random-2x2":
        hb, wb = int(round(0.25 * h)), int(round(0.25 * w))
        vals = [g.integers(hb, h - hb, size=n), g.integers(wb, w - wb, size=n), g.random(n), g.random((n, 4))]
    elif v == "vh-mixup":
        vals = [g.integers(0, h, size=n), g.integers(0, w, size=n), g.random(n)]
    else:
        shape = {"random-rows": (n, h, 1), "random-columns": (n, 1, w), "random-pixels": (n, h, w),
                 "random-elements": (n, c, h, w)}[v]
        vals = [g.random(n), g.random(shape)]
    return {"vals": vals}


@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_example_matches_the_release_per_pair(rng, variant):
    n, H, W = 5, 12, 9  # not square: the mixed concat's two semantics differ
    x = torch.from_numpy(rng.standard_normal((n, 3, H, W)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, n).astype(np.int64))
    for semantics in (("paper", "released") if variant == "mixed-concat" else ("paper",)):
        seed = int(rng.integers(1 << 30))
        m = MixedExample(variant=variant, semantics=semantics)
        p = m.sample(x, y, rng=np.random.default_rng(seed))
        out = m.apply(x.clone(), y, p)
        g = np.random.default_rng(seed)
        g.random(), g.permutation(n)
        cols = _columns(variant, x.shape, semantics, g.bit_generator.state)
        xd = x.double()
        for i in range(n):
            want, w_a = release(variant, xd[i], xd[int(p.perm[i])], _Column(cols, i), semantics)
            assert_close(out.images[i], want, tol=1e-5)
            assert abs(float(out.w_a[i]) - w_a) <= 1e-6, (SEED, variant, i)
        assert torch.equal(out.y_a, y) and torch.equal(out.y_b, y[p.perm])
        assert_close(out.w_a + out.w_b, torch.ones(n), tol=1e-6)
        if variant not in ("row-interval", "column-interval") and not (semantics == "released"):
            # a mask's label is its mean, the share of the image taken from x_a
            m4 = p.masks if p.masks.dim() == 4 else p.masks[:, None]
            assert_close(out.w_a, m4.double().mean((1, 2, 3)), tol=1e-6)


def test_mixed_example_released_mixed_concat_swaps_the_splits(rng):
    """On a tall image the release's row split is drawn up to W: its labels then are not
    the share the mask takes from x_a, the paper's are."""
    x = torch.zeros(64, 1, 20, 4)
    y = torch.zeros(64, dtype=torch.int64)
    paper = MixedExample(variant="mixed-concat", seed=1).sample(x, y)
    rel = MixedExample(variant="mixed-concat", semantics="released", seed=1).sample(x, y)
    assert bool((rel.masks[:, 4:] == rel.masks[:, 4:5]).all())  # rows split at < W = 4: every row below alike
    assert not bool((paper.masks[:, 4:] == paper.masks[:, 4:5]).all())  # the paper's split ranges over all 20
    assert_close(paper.w_a, paper.masks.double().mean((1, 2)), tol=1e-6)
    assert (rel.w_a.double() - rel.masks.double().mean((1, 2))).abs().max() > 0.05, SEED


def test_mixed_example_bad_parameters_and_registration():
    assert isinstance(build_mix("mixed-example", num_classes=3), MixedExample)
    assert MixedExample().variant == "vh-mixup"
    with pytest.raises(ValueError, match=r"variant must be one of .* got 'diagonal-concat'"):
        MixedExample(variant="diagonal-concat")
    with pytest.raises(ValueError, match=r"semantics must be one of \('paper', 'released'\), got 'tf'"):
        MixedExample(semantics="tf")
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 3"):
        MixedExample(prob=3)
