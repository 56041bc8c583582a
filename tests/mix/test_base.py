"""The label contract (mixed cross-entropy, soft targets), replay through the reference
kernels, and bad arguments named in their errors."""

import copy

import numpy as np
import pytest
import torch
from mix_helpers import assert_close, batch, model

from dali_snapmix.mix import (
    LOSSES,
    RICAP,
    CutMix,
    CutOut,
    Mixup,
    SnapMix,
    build_mix,
    mixed_bce_on_softmax,
    mixed_cross_entropy,
    soft_targets,
)
from dali_snapmix.models import SmallCNN


def test_same_params_replay_through_the_reference_backend(rng):
    x, y = batch(rng, n=6)
    m = model()
    for mix in (SnapMix(seed=5), CutMix(seed=5, asymmetric=True), Mixup(prob=1.0, seed=5), CutOut(prob=1.0, seed=5)):
        p = mix.sample(x, y)
        a = mix.apply(x.clone(), y, p, model=copy.deepcopy(m))
        b = mix.apply(x.clone(), y, p, model=copy.deepcopy(m), backend="reference")
        assert_close(a.images, b.images)
        assert torch.equal(a.y_a, b.y_a) and torch.equal(a.y_b, b.y_b), mix.name
        assert_close(a.w_a, b.w_a, tol=1e-6)
        assert_close(a.w_b, b.w_b, tol=1e-6)


# ---------------------------------------------------------------- loss and soft targets


def test_bce_on_softmax_is_the_releases_loss(rng):
    """BCELoss(softmax(logits), dense targets), written out in float64: the mean over N x C
    of -(t log p + (1 - t) log(1 - p)), t the weights' sum per class (K = 2 and RICAP's 4)."""
    x, y = batch(rng, n=7)
    for out in (CutMix(seed=1)(x.clone(), y), RICAP(seed=1)(x.clone(), y)):
        logits = torch.from_numpy(rng.standard_normal((7, 4)).astype(np.float32) * 3)
        p = torch.softmax(logits.double(), 1)
        t = torch.zeros(7, 4, dtype=torch.float64)
        for i in range(7):
            for k in range(out.k):
                t[i, out.labels[i, k]] += float(out.weights[i, k])
        want = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
        # float32 softmax: log(1 - p) of a near-certain class loses digits (at most 3.3e-5 relative over
        # 400 seeds; 2e-6 failed one run in a few dozen)
        assert mixed_bce_on_softmax(logits, out).item() == pytest.approx(want.item(), rel=1e-4)
    sure = torch.tensor([[200.0, 0.0, 0.0, 0.0]] * 7)  # p = (1, 0, 0, 0) in float32: BCELoss's log clamp at -100
    assert torch.isfinite(mixed_bce_on_softmax(sure, out)) and LOSSES["bce"] is mixed_bce_on_softmax


def test_mixed_cross_entropy_and_soft_targets(rng):
    x, y = batch(rng, n=6)
    out = SnapMix(seed=0).apply(x.clone(), y, SnapMix(seed=0).sample(x, y), model=model())
    logits = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32))
    logp = torch.log_softmax(logits.double(), 1)
    want = torch.stack([-logp[i, out.y_a[i]] * out.w_a[i] - logp[i, out.y_b[i]] * out.w_b[i] for i in range(6)]).mean()
    assert mixed_cross_entropy(logits, out).item() == pytest.approx(want.item(), rel=1e-5)
    t = soft_targets(out, num_classes=4)
    assert_close(t.sum(1), out.w_a + out.w_b)
    assert (-(t * logp.float()).sum(1).mean()).item() == pytest.approx(want.item(), rel=1e-5)
    # timm's smoothing, written out: each label's one-hot becomes (1 - s) on the class + s / K everywhere
    s, K = 0.1, 4
    want_t = torch.zeros(6, K, dtype=torch.float64)
    for i in range(6):
        for k in range(K):
            for yy, w in ((out.y_a[i], out.w_a[i]), (out.y_b[i], out.w_b[i])):
                want_t[i, k] += float(w) * ((1 - s) * float(k == yy) + s / K)
    assert_close(soft_targets(out, num_classes=K, smoothing=s), want_t, tol=1e-6)
    assert_close(t, want_t.new_tensor([[float(out.w_a[i]) * (k == out.y_a[i]) + float(out.w_b[i]) * (k == out.y_b[i])
                                         for k in range(K)] for i in range(6)]), tol=1e-7)
    assert not torch.equal(out.w_a + out.w_b, torch.ones(6))  # SnapMix: weights that do not sum to 1



def test_k_labels_loss_and_soft_targets_against_plain_loops(rng):
    """K labels per sample (RICAP: 4): the loss and the smoothed dense targets against
    float64 loops over samples and labels, on fresh random labels (repeats included)
    and weights that need not sum to 1; a K = 2 batch built from its columns is the
    same batch as one built from (N, 2) tensors."""
    from dali_snapmix.mix import MixedBatch

    for n, k in ((1, 4), (7, 4), (5, 3), (6, 1)):
        C = 5
        labels = torch.from_numpy(rng.integers(0, C, (n, k)))
        weights = torch.from_numpy(rng.uniform(0, 1.2, (n, k)).astype(np.float32))
        logits = torch.from_numpy(rng.standard_normal((n, C)).astype(np.float32))
        out = MixedBatch(torch.zeros(n, 3, 2, 2), labels=labels, weights=weights)
        logp = torch.log_softmax(logits.double(), 1)
        want = sum(-logp[i, labels[i, j]] * float(weights[i, j]) for i in range(n) for j in range(k)) / n
        assert mixed_cross_entropy(logits, out).item() == pytest.approx(float(want), rel=1e-6, abs=1e-7), (n, k)
        s = 0.1
        want_t = torch.zeros(n, C, dtype=torch.float64)
        for i in range(n):
            for j in range(k):
                for c in range(C):
                    want_t[i, c] += float(weights[i, j]) * ((1 - s) * float(c == labels[i, j]) + s / C)
        assert_close(soft_targets(out, num_classes=C, smoothing=s), want_t, tol=1e-6)
        assert out.k == k
        if k != 2:
            with pytest.raises(AttributeError, match=f"y_a is a column of a K = 2 batch; this one has K = {k}"):
                out.y_a  # noqa: B018
    y_a, y_b = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    w_a, w_b = torch.tensor([0.2, 0.5, 1.0]), torch.tensor([0.8, 0.7, 0.0])
    a = MixedBatch(torch.zeros(3, 1, 1, 1), y_a, y_b, w_a, w_b)
    b = MixedBatch(torch.zeros(3, 1, 1, 1), labels=torch.stack([y_a, y_b], 1), weights=torch.stack([w_a, w_b], 1))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.weights, b.weights)
    assert torch.equal(a.y_b, y_b) and torch.equal(a.w_a, w_a) and a.k == 2


def test_mixed_batch_refuses_inconsistent_labels():
    from dali_snapmix.mix import MixedBatch

    x, y, w = torch.zeros(3, 1, 1, 1), torch.zeros(3, 2, dtype=torch.int64), torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"labels and weights must both be \(N, K\), got \(3, 2\) and \(3, 3\)"):
        MixedBatch(x, labels=y, weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"N = 4 images and K >= 1, got \(3, 2\)"):
        MixedBatch(torch.zeros(4, 1, 1, 1), labels=y, weights=w)
    with pytest.raises(ValueError, match="not a mix of both"):
        MixedBatch(x, y[:, 0], labels=y, weights=w)
    with pytest.raises(ValueError, match="needs y_a, y_b, w_a, w_b"):
        MixedBatch(x, y[:, 0], y[:, 1])


# ---------------------------------------------------------------- bad input


def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        SnapMix(beta=0)
    with pytest.raises(ValueError, match="beta must be > 0, got -1"):
        CutMix(beta=-1)
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        Mixup(prob=1.5)
    with pytest.raises(ValueError, match="semantics must be one of"):
        SnapMix(semantics="paper")
    with pytest.raises(ValueError, match="unknown mixing method 'no-such-mix'"):
        build_mix("no-such-mix")
    mix = CutMix(num_classes=4, seed=0)
    x = torch.zeros(3, 3, 8, 8)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got min 0, max 4"):
        mix(x, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="got min -1"):
        mix(x, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        mix(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NCHW float"):
        mix(x.to(torch.uint8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="NCHW float"):
        mix(x[0], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="int64"):
        mix(x, torch.tensor([0.0, 1.0, 2.0]))


def test_error_messages_name_what_is_wrong():
    """2-D labels: the message gives the shape, not just the (right) dtype; blend takes
    float64 weights and says so; MidLevel without its hook's output says why."""
    from dali_snapmix.kernels import blend

    from dali_snapmix.mix import CutMix
    from dali_snapmix.models import MidLevel

    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"got torch.int64 of shape \(4, 1\)"):
        CutMix(num_classes=3)(x, torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="float32 or float64 tensor, got torch.int64"):
        blend(x, perm=torch.arange(4), weights=torch.ones(4, dtype=torch.int64))
    blend(x, perm=torch.arange(4), weights=torch.ones(4, dtype=torch.float64))  # accepted, as the message says
    body = SmallCNN(3)
    stray = torch.nn.Conv2d(64, 64, 1)  # not part of the backbone: its hook never fires
    with pytest.raises(RuntimeError, match="the hooked layer did not run in SmallCNN's forward"):
        MidLevel(body, stray, 64, 3)(torch.randn(2, 3, 32, 32))
