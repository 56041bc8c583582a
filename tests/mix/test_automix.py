"""AutoMix's Mix Block against a float64 numpy transcription of the release's equations on
the same weights, its mask loss against the formula, its gradients, and the refusals."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED

from dali_snapmix.mix.automix import MixBlock, mask_loss


def block_transcription(z, lam, perm, wq, bq, wv, bv, scale, lam_concat=True):
    """pmix_block's forward in numpy float64, pixel by pixel: z (N, C, h, w)."""
    n, c, h, w = z.shape
    za, zb = z, z[perm]
    if lam_concat:
        za = np.concatenate([za, np.full((n, 1, h, w), lam)], 1)
        zb = np.concatenate([zb, np.full((n, 1, h, w), 1 - lam)], 1)
    out = np.empty((n, 1, h * scale, w * scale))
    for i in range(n):
        a, b = za[i].reshape(za.shape[1], -1), zb[i].reshape(zb.shape[1], -1)  # (C + 1, hw)
        q, k = wq @ a + bq[:, None], wq @ b + bq[:, None]  # (C', hw)
        v = wv @ b + bv[:, None]  # (1, hw)
        logits = q.T @ k / np.sqrt(wq.shape[0])  # (hw, hw): pixel p of the own image against pixel r of the partner's
        att = np.exp(logits - logits.max(1, keepdims=True))
        att /= att.sum(1, keepdims=True)
        m = (att @ v.T).reshape(h, w)
        out[i, 0] = 1 / (1 + np.exp(-np.kron(m, np.ones((scale, scale)))))
    return out


@pytest.mark.parametrize("n,c,h,lam_concat", [(1, 4, 2, True), (3, 6, 3, True), (4, 5, 4, False), (5, 8, 1, True)])
def test_mix_block_matches_the_release_equations(n, c, h, lam_concat):
    rng = np.random.default_rng(SEED)
    block = MixBlock(c, lam_concat=lam_concat)
    with torch.no_grad():  # weights far from the init's near-uniform attention
        for conv in (block.query, block.value):
            conv.weight.copy_(torch.from_numpy(rng.normal(0, 0.7, conv.weight.shape)))
            conv.bias.copy_(torch.from_numpy(rng.normal(0, 0.3, conv.bias.shape)))
    z = rng.normal(size=(n, c, h, h))
    perm = rng.permutation(n)
    lam = float(rng.random())
    with torch.no_grad():
        got = block(torch.from_numpy(z).float(), lam, torch.from_numpy(perm), scale_factor=4)
    want = block_transcription(z, lam, perm, block.query.weight.detach().double().numpy()[:, :, 0, 0],
                               block.query.bias.detach().double().numpy(), block.value.weight.detach().double().numpy()[:, :, 0, 0],
                               block.value.bias.detach().double().numpy(), 4, lam_concat)
    assert got.shape == (n, 1, 4 * h, 4 * h) and got.dtype == torch.float32
    assert np.abs(got.double().numpy() - want).max() <= 1e-6, SEED
    assert float(np.ptp(want)) > 1e-3 or h == 1  # the comparison sees a mask that varies


@torch.no_grad()
def test_bilinear_upsamples_before_the_sigmoid_and_the_init_mask_is_near_half():
    torch.manual_seed(0)
    z, perm = torch.randn(3, 6, 4, 4), torch.tensor([2, 0, 1])
    near = MixBlock(6)(z, 0.4, perm, scale_factor=8)
    assert near.shape == (3, 1, 32, 32) and float((near - 0.5).abs().max()) < 0.01  # N(0, 0.01) convs
    block = MixBlock(6, upsample="bilinear")
    block.value.weight.normal_(0, 1.0)
    pre = torch.logit(MixBlock.forward(block, z, 0.4, perm, scale_factor=1).double())
    want = torch.sigmoid(torch.nn.functional.interpolate(pre, scale_factor=8, mode="bilinear"))
    assert (block(z, 0.4, perm, scale_factor=8).double() - want).abs().max() < 1e-5


def test_mask_loss_is_the_l1_margin_on_the_batch_mean_and_trains_the_block():
    rng = np.random.default_rng(SEED)
    m = torch.from_numpy(rng.random((4, 1, 8, 8)))
    for lam in (0.1, float(1 - m.mean()), 0.9):
        want = max(abs(1 - float(m.mean()) - lam) - 0.1, 0.0)
        assert abs(float(mask_loss(m, lam)) - want) < 1e-12
    assert float(mask_loss(m, float(1 - m.mean()) + 0.05)) == 0.0  # inside the margin
    block = MixBlock(6)
    z = torch.randn(4, 6, 2, 2)
    loss = mask_loss(block(z, 0.95, torch.tensor([1, 2, 3, 0]), scale_factor=2), 0.95)
    loss.backward()
    assert float(loss.detach()) > 0 and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in block.parameters())


def test_bad_input_is_refused_with_the_value():
    with pytest.raises(ValueError, match="in_channels .* 0"):
        MixBlock(0)
    with pytest.raises(ValueError, match="upsample .* 'bicubic'"):
        MixBlock(4, upsample="bicubic")
    block = MixBlock(4)
    with pytest.raises(ValueError, match=r"features must be \(N, 4, h, w\), got \(2, 5, 3, 3\)"):
        block(torch.zeros(2, 5, 3, 3), 0.5, torch.tensor([1, 0]), scale_factor=2)
    with pytest.raises(ValueError, match="lam must be in .* 1.5"):
        block(torch.zeros(2, 4, 3, 3), 1.5, torch.tensor([1, 0]), scale_factor=2)


def test_schedules_follow_the_release_hooks():
    """CosineScheduleHook (adjust scope [0.1, 1], constant warm-up) and CustomCosineAnnealingHook
    (0.1 to 0), written out here from their formulas."""
    import math

    from dali_snapmix.mix.automix import mask_loss_weight_at, momentum_at

    total = 1000
    for k in (0, 50, 99):
        assert momentum_at(k, total) == 0.999  # held before 10 % of the run
    for k in (100, 400, 999, 1000):
        want = 0.99999 - (0.99999 - 0.999) * (math.cos(math.pi * k / 1000) + 1) / 2
        assert abs(momentum_at(k, total) - want) < 1e-15
    assert momentum_at(1000, total) == 0.99999 and momentum_at(100, total) > 0.999  # the cosine's own start
    assert mask_loss_weight_at(0, total) == 0.1 and abs(mask_loss_weight_at(500, total) - 0.05) < 1e-15
    assert abs(mask_loss_weight_at(1000, total)) < 1e-15
    with pytest.raises(ValueError, match="step=1001"):
        momentum_at(1001, total)


def test_ema_update_moves_the_teachers_parameters_only():
    from dali_snapmix.mix.automix import ema_update
    from dali_snapmix.models import SmallCNN

    torch.manual_seed(SEED % 2**31)
    student, teacher = SmallCNN(3, width=4), SmallCNN(3, width=4)
    student(torch.randn(4, 3, 16, 16))  # BatchNorm statistics that differ between the two
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    ema_update(teacher, student, 0.9)
    params = dict(teacher.named_parameters())
    for k, v in teacher.state_dict().items():
        if k in params:
            want = (0.9 * before_t[k].double() + 0.1 * before_s[k].double()).float()
            assert torch.allclose(v, want, rtol=0, atol=1e-7), k
        else:
            assert torch.equal(v, before_t[k]), k  # buffers: the teacher's own
    assert all(torch.equal(v, before_s[k]) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(SmallCNN(3, width=4), SmallCNN(5, width=4), 0.9)
    with pytest.raises(ValueError, match="momentum .* 1.5"):
        ema_update(teacher, student, 1.5)
