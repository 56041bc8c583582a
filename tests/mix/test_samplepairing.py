"""SamplePairing against its paper's rule: each image averaged with its partner, only its
own label kept."""

import pytest
import torch
from mix_helpers import SEED, assert_close, batch

from dali_snapmix.mix import SamplePairing, build_mix, mixed_cross_entropy


@pytest.mark.parametrize("n", [1, 5, 8])
def test_samplepairing_averages_and_keeps_the_first_label(rng, n):
    x, y = batch(rng, n=n, size=9)
    sp = SamplePairing(seed=int(rng.integers(1 << 30)))
    p = sp.sample(x, y)
    assert sorted(p.perm.tolist()) == list(range(n)) and p.mix
    out = sp.apply(x.clone(), y, p)
    assert_close(out.images, (x.double() + x.double()[p.perm]) / 2, tol=1e-6)
    assert torch.equal(out.y_a, y) and torch.equal(out.y_b, y[p.perm])
    assert torch.equal(out.w_a, torch.ones(n)) and torch.equal(out.w_b, torch.zeros(n))
    logits = torch.from_numpy(rng.standard_normal((n, 4)))
    want = torch.nn.functional.cross_entropy(logits, y)  # the loss is the first label's alone
    assert_close(mixed_cross_entropy(logits, out), want, tol=1e-12)
    for i in range(n):  # a self-pair leaves its image as it was
        if int(p.perm[i]) == i:
            assert torch.equal(out.images[i], x[i]), SEED


def test_samplepairing_switch_and_bad_parameters(rng):
    x, y = batch(rng, n=4, size=6)
    off = SamplePairing(prob=0.0, seed=1)
    assert torch.equal(off.apply(x.clone(), y, off.sample(x, y)).images, x)
    assert isinstance(build_mix("samplepairing", num_classes=4), SamplePairing)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 2"):
        SamplePairing(prob=2)
