"""Mixup against the paper's Eq. 1 in plain torch."""


import pytest
import torch
from mix_helpers import assert_close, batch

from dali_snapmix.mix import (
    Mixup,
)


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
