"""CutMix and asymmetric CutMix against their papers' box and area-label rules."""


import torch
import torch.nn.functional as F
from mix_helpers import assert_close, batch

from dali_snapmix.mix import (
    CutMix,
    build_mix,
)


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
