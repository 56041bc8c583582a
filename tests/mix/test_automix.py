"""AutoMix's Mix Block against a float64 numpy transcription of the release's equations on
the same weights, its mask loss against the formula, its gradients, and the refusals."""

import numpy as np
import pytest
import torch
from mix_helpers import SEED, assert_close

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


# ---------------------------------------------------------------- the method and its step


def block64(z, lam, perm, wq, bq, wv, bv, scale):
    """PixelMixBlock (lam_concat, one query conv for query and key, scaled softmax,
    nearest upsampling) in float64 torch ops: einsum for the 1 x 1 convs, repeat_interleave
    for the upsampling; differentiable, so phi's gradients have a reference too."""
    n, _, h, w = z.shape
    lam_map = torch.full((n, 1, h, w), lam, dtype=torch.float64)
    za, zb = torch.cat([z, lam_map], 1).flatten(2), torch.cat([z[perm], 1 - lam_map], 1).flatten(2)
    q, k = torch.einsum("oc,ncp->nop", wq, za) + bq[:, None], torch.einsum("oc,ncp->nop", wq, zb) + bq[:, None]
    v = torch.einsum("oc,ncp->nop", wv, zb) + bv[:, None]
    att = torch.softmax(q.transpose(1, 2) @ k / wq.shape[0] ** 0.5, -1)
    m = (att @ v.transpose(1, 2)).reshape(n, 1, h, w)
    return torch.sigmoid(m.repeat_interleave(scale, 2).repeat_interleave(scale, 3))


def ce64(logits, y):
    return -torch.log_softmax(logits, 1).gather(1, y[:, None]).mean()


class SmoothNet(torch.nn.Module):
    """SmallCNN's layout (stages ``features[k]``: conv, BatchNorm, activation, pooling) with
    SiLU and average pooling: no ReLU or max-pool kink, where float32 and float64 can route
    a gradient differently (with SmallCNN one seed in a few hundred moved phi's float32
    gradient 1 % off the float64 one while every loss agreed to 1e-5)."""

    def __init__(self, classes=4, w=4):
        super().__init__()

        def stage(cin, cout, pool=True):
            return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout),
                                       torch.nn.SiLU(), *([torch.nn.AvgPool2d(2)] if pool else []))

        self.features = torch.nn.Sequential(stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w), stage(4 * w, 4 * w, False))
        self.fc = torch.nn.Linear(4 * w, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def automix_on(student, **options):
    """AutoMix with a copy of ``student`` (a SmoothNet) as its teacher, on its stride-8 stage."""
    import copy

    from dali_snapmix.mix.automix import AutoMix

    teacher = copy.deepcopy(student)
    return AutoMix(teacher=teacher, layer=teacher.features[2], channels=teacher.features[2][0].out_channels, **options)


def automix_case(rng, n, lam_bb, *, block_lr=0.5):
    """A mid-run AutoMix on a SmoothNet (its stride-8 stage: 4 x 4 maps of 32-pixel images):
    a teacher that is no longer the student, a Mix Block far from its init, the clock at
    step 5 of 12, epoch 1 of 3; and params with lam_mb away from the mask's mean (the mask
    loss is not in its margin)."""
    from dali_snapmix.mix.automix import AutoMixParams

    torch.manual_seed(int(rng.integers(2**31)))
    student = SmoothNet().train()
    mix = automix_on(student, epochs=3, steps_per_epoch=4, num_classes=4, block_lr=block_lr)
    with torch.no_grad():
        for p in mix.teacher.parameters():
            p.add_(torch.from_numpy(rng.normal(0, 0.05, p.shape)).float())
        for p in mix.block.parameters():
            p.copy_(torch.from_numpy(rng.normal(0, 0.3, p.shape)))
    mix.step = 5
    mix.set_epoch(1)
    x, y = torch.from_numpy(rng.standard_normal((n, 3, 32, 32)).astype(np.float32)), torch.from_numpy(rng.integers(0, 4, n))
    perm_mb = torch.from_numpy(rng.permutation(n))
    with torch.no_grad():  # lam_mb on the far side of the mask's own share: the loss is outside its margin
        own = 1 - float(mix.block(mix.eval().teacher_features(x), 0.5, perm_mb, scale_factor=8).mean())
    mix.train()
    lam_mb = float(rng.uniform(0.05, 0.15) if own > 0.5 else rng.uniform(0.85, 0.95))
    params = AutoMixParams(mix=True, perm_mb=perm_mb, lam_mb=lam_mb, perm_bb=torch.from_numpy(rng.permutation(n)),
                           lam_bb=lam_bb)
    return student, mix, x, y, params


@pytest.mark.parametrize("n,lam_bb", [(5, None), (4, 0.05), (3, 0.93), (1, None)])
def test_a_step_matches_a_float64_transcription_of_the_release(n, lam_bb):
    """One training step of the whole pipeline against the release's forward_train written
    out in float64 on the same weights and params: the Mix Block's two losses (the
    teacher's mixed cross-entropy and the annealed mask loss), the classifier's mixed
    and one-hot losses (through the trainer's own loss functions), the classifier's
    batch (m_bb from phi before its step; plain Mixup at lam_bb <= 0.08 or >= 0.92),
    phi after its SGD step (momentum 0.9, weight decay 5e-4, the epoch's cosine rate),
    and the teacher after the EMA at the step's momentum."""
    import copy
    import math

    from dali_snapmix.mix.automix import momentum_at
    from dali_snapmix.trainer import clean_loss, logits_and_loss

    rng = np.random.default_rng(SEED)
    student, mix, x, y, params = automix_case(rng, n, lam_bb if lam_bb is not None else float(rng.uniform(0.2, 0.8)))
    lam_mb, lam_bb, pm, pb = params.lam_mb, params.lam_bb, params.perm_mb, params.perm_bb
    t64, s64 = copy.deepcopy(mix.teacher).double(), copy.deepcopy(student).double()
    phi0 = [mix.block.query.weight[:, :, 0, 0], mix.block.query.bias, mix.block.value.weight[:, :, 0, 0], mix.block.value.bias]
    phi = [p.detach().double().clone().requires_grad_(True) for p in phi0]
    x64 = x.double()
    z = t64.features[:3](x64)  # the Mix Block's stage (stride 8)
    m_mb = block64(z, lam_mb, pm, *phi, 8)
    logits_k = t64(x64 * (1 - m_mb) + x64[pm] * m_mb)
    mix_k = lam_mb * ce64(logits_k, y) + (1 - lam_mb) * ce64(logits_k, y[pm])
    weight = 0.1 * (math.cos(math.pi * 5 / 12) + 1) / 2
    mask = weight * torch.clamp((1 - m_mb.mean() - lam_mb).abs() - 0.1, min=0)
    assert float(mask.detach()) > 0
    (mix_k + mask).backward()
    with torch.no_grad():
        m_bb = block64(z, lam_bb, pb, *phi, 8)
        if lam_bb <= 0.08 or lam_bb >= 0.92:
            m_bb = torch.full_like(m_bb, 1 - lam_bb)
        x_bb = x64 * (1 - m_bb) + x64[pb] * m_bb
        logits_q = s64(x_bb)
        mix_q = lam_bb * ce64(logits_q, y) + (1 - lam_bb) * ce64(logits_q, y[pb])
        one_q = ce64(s64(x64), y)
    t_before = {k: v.detach().double().clone() for k, v in mix.teacher.named_parameters()}

    cpu = torch.device("cpu")
    clean = clean_loss(student, x.clone(), y, weight=mix.clean_loss_weight, loss="ce", amp="off", tdev=cpu)
    target = mix.apply(x, y, params)
    _, loss_q = logits_and_loss(student, target.images, target, amp="off", tdev=cpu)
    for got, want in ((mix.last_losses["mix_k"], mix_k), (mix.last_losses["mask"], mask), (loss_q, mix_q),
                      (clean, one_q)):
        assert abs(float(got.detach()) - float(want.detach())) <= 1e-5, (SEED, float(got.detach()), float(want.detach()))
    assert_close(target.images, x_bb, 1e-5)
    assert torch.equal(target.labels, torch.stack([y, y[pb]], 1))
    assert torch.allclose(target.weights, torch.tensor([[lam_bb, 1 - lam_bb]] * n, dtype=torch.float32), atol=1e-7)
    lr = 5e-4 + (0.5 - 5e-4) * (math.cos(math.pi / 3) + 1) / 2  # epoch 1 of 3, block_lr 0.5 (a step that shows)
    for p, p0 in zip([mix.block.query.weight[:, :, 0, 0], mix.block.query.bias, mix.block.value.weight[:, :, 0, 0],
                      mix.block.value.bias], phi):
        want = p0.detach() - lr * (p0.grad + 5e-4 * p0.detach())  # SGD's first step: the momentum buffer is the gradient
        assert_close(p.detach(), want, 2e-6)
    assert max(float(p.grad.abs().max()) for p in phi) * lr > 1e-4  # the step moved phi by far more than the tolerance
    mix.after_step(student)
    m = momentum_at(5, 12)
    for k, v in mix.teacher.named_parameters():
        assert_close(v, m * t_before[k] + (1 - m) * dict(student.named_parameters())[k].double(), 1e-6)
    assert mix.step == 6 and not any(p.requires_grad for p in mix.teacher.parameters())


class Draws:
    """A generator stand-in whose permutations are the identity (every draw has self-pairs)."""

    def __init__(self, shift):
        self.shift, self.asked = shift, []

    def permutation(self, n):
        return np.arange(n)

    def integers(self, lo, hi):
        self.asked.append((lo, hi))
        return self.shift


def test_partners_as_the_releases_no_repeat_shuffle():
    """perm_bb: up to 11 draws, then whatever came (self-pairs possible); perm_mb: then a
    shift drawn from [1, n - 2]. Real draws: never a self-pair in perm_mb; and the params
    come in the release's order (lam_mb, lam_bb from one Beta(2, 2) draw, perm_bb, perm_mb)."""
    from dali_snapmix.mix.automix import AutoMix, no_repeat_permutation
    from dali_snapmix.models import SmallCNN

    d = Draws(3)
    assert no_repeat_permutation(d, 6, shift_on_failure=False).tolist() == list(range(6)) and d.asked == []
    assert no_repeat_permutation(d, 6, shift_on_failure=True).tolist() == [3, 4, 5, 0, 1, 2] and d.asked == [(1, 5)]
    assert no_repeat_permutation(Draws(9), 2, shift_on_failure=True).tolist() == [1, 0]  # the release's randint(1, 1) fails
    assert no_repeat_permutation(Draws(9), 1, shift_on_failure=True).tolist() == [0]
    rng = np.random.default_rng(SEED)
    for n in (2, 3, 7):
        assert all(bool((no_repeat_permutation(rng, n, shift_on_failure=True) != torch.arange(n)).all()) for _ in range(200))
    mix = AutoMix.following(SmallCNN(3, width=4), epochs=1, steps_per_epoch=1)
    x = torch.zeros(7, 3, 32, 32)
    p = mix.sample(x, torch.zeros(7, dtype=torch.int64), rng=np.random.default_rng(SEED))
    r = np.random.default_rng(SEED)
    assert r.random() < 1.0  # the coin (prob 1)
    lam = r.beta(2.0, 2.0, size=2)
    assert (p.lam_mb, p.lam_bb) == (float(lam[0]), float(lam[1]))
    assert torch.equal(p.perm_bb, no_repeat_permutation(r, 7, shift_on_failure=False))
    assert torch.equal(p.perm_mb, no_repeat_permutation(r, 7, shift_on_failure=True))


def test_not_training_it_mixes_without_changing_its_state():
    """eval(): the same mask as training computes, and no step of phi, no move of the
    teacher's BatchNorm statistics, no tick of the clock; train(): phi steps."""
    rng = np.random.default_rng(SEED)
    student, mix, x, y, params = automix_case(rng, 4, 0.5)
    state = {k: v.clone() for k, v in mix.teacher.state_dict().items()} | {
        "q": mix.block.query.weight.clone()}
    got = mix.eval().resolve(x, y, params)
    assert all(torch.equal(v, state[k]) for k, v in mix.teacher.state_dict().items())
    assert torch.equal(mix.block.query.weight, state["q"]) and mix.step == 5
    trained = mix.train().resolve(x, y, params)
    assert torch.equal(got.masks, trained.masks)  # the classifier's mask comes before phi's step
    assert not torch.equal(mix.block.query.weight, state["q"])
    assert not torch.equal(mix.teacher.state_dict()["features.0.1.running_mean"], state["features.0.1.running_mean"])


def test_state_round_trip_and_refusals():
    from dali_snapmix.mix.automix import AutoMix, AutoMixParams
    from dali_snapmix.models import SmallCNN

    rng = np.random.default_rng(SEED)
    student, mix, x, y, params = automix_case(rng, 4, 0.5)
    mix.apply(x.clone(), y, params)
    other = automix_on(student, epochs=3, steps_per_epoch=4)
    other.load_state_dict(mix.state_dict())
    assert other.step == 5 and torch.equal(other.block.value.weight, mix.block.value.weight)
    assert other.optimizer.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(other.teacher.state_dict().values(), mix.teacher.state_dict().values()))
    with pytest.raises(ValueError, match=r"AutoMix's state has keys .*got \['block'\]"):
        other.load_state_dict({"block": {}})
    net = SmallCNN(3, width=4)
    with pytest.raises(ValueError, match="layer must be a module of the teacher"):
        AutoMix(teacher=net, layer=SmallCNN(3, width=4).features[2], channels=16, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="lam_margin must be in .* 0.5"):
        AutoMix.following(net, epochs=1, steps_per_epoch=1, lam_margin=0.5)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int, got 0"):
        AutoMix.following(net, epochs=1, steps_per_epoch=0)
    with pytest.raises(ValueError, match="lam_bb must be in .* 1.2"):
        mix.apply(x, y, AutoMixParams(mix=True, perm_mb=params.perm_mb, lam_mb=0.5, perm_bb=params.perm_bb, lam_bb=1.2))
    with pytest.raises(ValueError, match="one integer factor, which 28 x 28 images do not allow"):
        mix.apply(torch.zeros(4, 3, 28, 28), y, params)
