"""CutOut: a box of half the sides, filled with 0, labels unchanged."""


import torch
from mix_helpers import batch

from dali_snapmix.mix import (
    CutOut,
)


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
