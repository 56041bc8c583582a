"""Co-Mixup: the objective against plain loops, each output's step against every labelling
of small grids (the release's label set built here from its own rules), the whole solution
against every joint labelling of the smallest groups, the mix against a transcription given
the labelling, and the refusals. (The whole pipeline against the release's loop with an
exact solver in place of gco: tests/bench/test_benchmarks.py.)"""

import itertools

import numpy as np
import pytest
import torch
from mix_helpers import SEED, batch, model, peaked_saliency

from dali_snapmix.mix import build_mix
from dali_snapmix.mix.comixup import (
    CoMixMaskParams,
    CoMixParams,
    CoMixup,
    comix_masks,
    comix_objective,
    comix_relabel,
    compatibility,
)


def objective_loops(cost, m, beta, gamma):
    """The release's obj_fn with loops: cost (P, n, n), m (outputs, n, n, P) numpy float64."""
    outs, n, _, P = m.shape
    loss = sum(cost[j, r, c] * m[o, r, c, j] for o in range(outs) for r in range(n) for c in range(n) for j in range(P))
    for o in range(outs):
        for r in range(n):
            for c in range(n):
                if r + 1 < n:
                    loss += beta / 2 * ((m[o, r, c] - m[o, r + 1, c]) ** 2).sum()
                if c + 1 < n:
                    loss += beta / 2 * ((m[o, r, c] - m[o, r, c + 1]) ** 2).sum()
    counts = m.sum((1, 2))
    return loss + gamma * sum(counts[o] @ counts[q] for o in range(outs) for q in range(outs) if o != q)


def random_labelling(rng, outs, n, P, halves=True):
    m = np.zeros((outs, n, n, P))
    for o, r, c in itertools.product(range(outs), range(n), range(n)):
        a, b = rng.integers(0, P, 2)
        if halves and a != b and rng.random() < 0.3:
            m[o, r, c, a] = m[o, r, c, b] = 0.5
        else:
            m[o, r, c, a] = 1.0
    return m


@pytest.mark.parametrize("outs,n,P", [(1, 1, 1), (3, 2, 3), (4, 3, 5), (2, 4, 2)])
def test_objective_matches_plain_loops(outs, n, P):
    rng = np.random.default_rng(SEED)
    cost, m = -rng.random((P, n, n)), random_labelling(rng, outs, n, P)
    got = comix_objective(torch.from_numpy(cost), torch.from_numpy(m), beta=0.3, gamma=0.7)
    assert abs(float(got) - objective_loops(cost, m, 0.3, 0.7)) < 1e-12, SEED


def release_labels(cost, current, soft):
    """The release's per-output label set (graphcut_wrapper and graphcut_multi, numpy):
    unary (n, n, L), pairwise (L, L) and each label's input weights (L, P)."""
    n, _, P = cost.shape
    count = current.reshape(-1, P).sum(0)
    used = count > 0
    weights = np.eye(P)
    pairwise = np.ones((P, P)) - np.eye(P)
    if soft and used.sum() == 2:
        extra = cost[:, :, used].mean(-1, keepdims=True) - 5e-4
        pairwise = np.ones((P + 1, P + 1)) - np.eye(P + 1)
        pairwise[-1, :-1][used] = 0.25
        pairwise[:-1, -1][used] = 0.25
        half = np.zeros((1, P))
        half[0, used] = 0.5
        return np.concatenate([cost, extra], -1), pairwise, np.concatenate([weights, half])
    if soft and used.sum() >= 3:
        soft_label = np.array([[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
        top = np.zeros(P, bool)
        top[torch.topk(torch.from_numpy(count), k=3).indices.numpy()] = True
        extra = cost[:, :, top] @ soft_label - 5e-4
        pairwise = np.ones((P + 3, P + 3)) - np.eye(P + 3)
        pairwise[-3:, :-3][:, top] = [[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]]
        pairwise[:-3, -3:][top, :] = [[0.25, 0.25, 1], [0.25, 1, 0.25], [1, 0.25, 0.25]]
        halves = np.zeros((3, P))
        halves[:, top] = soft_label
        return np.concatenate([cost, extra], -1), pairwise, np.concatenate([weights, halves])
    return cost, pairwise, weights


def every_labelling_energy(unary, pairwise, beta):
    """Energy of every labelling of an n x n grid, (L^(n n),), and the labellings."""
    n, _, L = unary.shape
    labs = np.array(list(itertools.product(range(L), repeat=n * n))).reshape(-1, n, n)
    rows, cols = np.arange(n)[:, None], np.arange(n)[None]
    e = unary[rows, cols, labs].sum((1, 2))
    e = e + beta * pairwise[labs[:, :-1], labs[:, 1:]].sum((1, 2)) + beta * pairwise[labs[:, :, :-1], labs[:, :, 1:]].sum((1, 2))
    return e, labs


@pytest.mark.parametrize("P,used", [(2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 1)])
def test_each_outputs_step_is_the_best_labelling_of_small_grids(P, used):
    """An output's step minimises the release's per-output energy (unary with the half labels'
    mean costs less 5e-4, Potts with quarter costs between a half label and its parts) over
    every labelling of a 2 x 2 grid, in round one (hard labels) and later (half labels)."""
    rng = np.random.default_rng(SEED)
    worst = 0.0
    for trial in range(40):
        cost = -rng.random((2, 2, P)) * 0.3 + rng.random(P) * 0.1  # block costs, an input's modular term
        inputs = rng.permutation(P)[:used]
        cur = np.zeros((2, 2, P))
        flat = cur.reshape(4, P)
        for k in range(4):
            flat[k, inputs[k % used] if k < used else inputs[rng.integers(used)]] = 1.0
        beta = float(rng.choice([0.02, 0.1, 0.4]))
        for soft in (False, True):
            got = comix_relabel(torch.from_numpy(cost), torch.from_numpy(cur), beta=beta, soft=soft).numpy()
            unary, pairwise, weights = release_labels(cost, cur, soft)
            e, labs = every_labelling_energy(unary, pairwise, beta)
            # the labelling whose input weights are ours (unique: the label sets' weights differ)
            match = np.all(np.isclose(weights[labs], got[None]), axis=(1, 2, 3))
            assert match.sum() == 1, (SEED, trial, soft)
            worst = max(worst, float(e[match][0] - e.min()))
    assert worst < 1e-12, (SEED, worst)


def label_energy(m, unary, pairwise, weights, beta):
    """The per-output energy of a labelling given as input weights (n, n, P)."""
    n = m.shape[0]
    lab = np.argmax(np.all(np.isclose(m[..., None, :], weights), -1), -1)
    return (unary[np.arange(n)[:, None], np.arange(n)[None], lab].sum()
            + beta * (pairwise[lab[:-1], lab[1:]].sum() + pairwise[lab[:, :-1], lab[:, 1:]].sum()))


def test_a_step_never_raises_its_energy_on_larger_grids():
    """From the output's current labelling (one of the solver's starts) the step's energy is at
    most the current one's: 8 x 8 grids, 6 inputs, half labels on."""
    rng = np.random.default_rng(SEED)
    for trial in range(10):
        cost = -rng.random((8, 8, 6)) * 0.05
        cur = np.eye(6)[rng.integers(0, 6, (8, 8))]
        got = comix_relabel(torch.from_numpy(cost), torch.from_numpy(cur), beta=0.005, soft=True).numpy()
        terms = release_labels(cost, cur, True)
        assert label_energy(got, *terms, 0.005) <= label_energy(cur, *terms, 0.005) + 1e-12, (SEED, trial)


def test_the_group_solution_against_every_joint_labelling():
    """Two inputs, two outputs, a 2 x 2 grid, the threshold 0 and A = I (so each step minimises
    the objective itself over its output): every joint labelling of blocks in {input 0, input 1,
    half of each} (3^8) against Co-Mixup's (benchmarks/comix_exact.py). A local method, but
    on these it reached the global minimum in 3000 of 3000 random groups: all 30 here."""
    from benchmarks.comix_exact import exact_gaps

    gaps = exact_gaps(np.random.default_rng(SEED), 30)
    assert gaps.min() >= -1e-12 and gaps.max() <= 1e-12, (SEED, gaps)


def mix_transcription(x, y, weights, part, classes):
    """The release's mix_input per group (numpy float64): each output the nearest-upsampled
    labelling times its group's inputs, its target the blocks' input weights times the
    inputs' one-hot labels, normalised to sum 1."""
    N, C, H, W = x.shape
    n = weights.shape[1]
    out, target = np.zeros((N, C, H, W)), np.zeros((N, classes))
    for g0 in range(0, N, part):
        size = min(part, N - g0)
        for o in range(g0, g0 + size):
            for j in range(size):
                up = np.kron(weights[o, :, :, j], np.ones((H // n, W // n)))
                out[o] += up * x[g0 + j]
                target[o, y[g0 + j]] += weights[o, :, :, j].sum()
    return out, target / target.sum(1, keepdims=True)


@pytest.mark.parametrize("N,part,n,size", [(7, 3, 2, 12), (6, 6, 4, 16), (1, 20, 4, 8), (5, 2, 1, 6), (4, 20, 3, 12)])
def test_mix_matches_the_transcription_given_the_labelling(N, part, n, size):
    rng = np.random.default_rng(SEED)
    x, y = batch(rng, n=N, size=size, classes=5)
    P = min(part, N)
    w = np.zeros((N, n, n, P))
    for g0 in range(0, N, part):
        g = min(part, N - g0)
        w[g0:g0 + g] = random_labelling(rng, g, n, g)[..., :P] if g == P else np.pad(
            random_labelling(rng, g, n, g), ((0, 0), (0, 0), (0, 0), (0, P - g)))
    params = CoMixMaskParams(mix=True, part=part, weights=torch.from_numpy(w).float())
    want_x, want_t = mix_transcription(x.double().numpy(), y.numpy(), w, part, 5)
    mixed = x.clone()
    out = CoMixup(num_classes=5, part=part).apply(mixed, y, params)
    from dali_snapmix.mix import soft_targets

    assert out.images is mixed and out.labels.shape == (N, P)
    assert np.abs(mixed.double().numpy() - want_x).max() <= 1e-5, SEED
    assert np.abs(soft_targets(out, num_classes=5).double().numpy() - want_t).max() <= 1e-6, SEED
    # every output pixel from its own group's inputs: one of them, or the mean of two
    for o in range(N):
        g0 = o // part * part
        srcs = x[g0:g0 + min(part, N - g0)]
        cands = torch.cat([srcs, (srcs[:, None] + srcs[None]).flatten(0, 1) / 2])
        assert bool(((cands - mixed[o]).abs() <= 1e-5).any(0).all()), (SEED, o)


def test_a_whole_pass_mixes_salient_blocks_of_several_inputs():
    """The defaults on a batch of 20 with one peaked saliency map each: outputs of several
    inputs (the diversity term), half blocks from round two, labels the blocks' shares."""
    rng = np.random.default_rng(SEED)
    x, y = batch(rng, n=20, size=32, classes=7)
    mix = CoMixup(num_classes=7, seed=SEED)
    params = mix.sample(x, y)
    resolved = mix.masks_from(peaked_saliency(rng, 20, 32, 32), params)
    w = resolved.weights
    used = (w.sum((1, 2)) > 0).sum(1)
    assert w.shape == (20, 4, 4, 20) and float(used.float().mean()) >= 1.5, (SEED, used)
    assert bool(((w == 0) | (w == 0.5) | (w == 1)).all())
    out = mix.apply(x.clone(), y, resolved)
    assert torch.allclose(out.weights, w.sum((1, 2)) / 16) and torch.equal(out.labels, y.expand(20, 20))
    # the model's own saliency, end to end, and the grid drawn with block_num -1
    out = build_mix("comixup", num_classes=7, seed=SEED, block_num=-1)(x.clone(), y, model=model(7))
    assert bool(torch.isfinite(out.images).all()) and torch.allclose(out.weights.sum(1), torch.ones(20))
    assert {CoMixup(block_num=-1).sample(x, y, rng=np.random.default_rng(s)).block_num for s in range(40)} == {2, 4, 8, 16}


def test_groups_batch_of_one_and_no_coin():
    rng = np.random.default_rng(SEED)
    x, y = batch(rng, n=5, size=16)
    mix = CoMixup(num_classes=4, part=2, seed=SEED)
    p = mix.sample(x, y)
    assert p.init.shape == (5, 4, 4) and int(p.init[4].max()) == 0  # the last group: one input
    assert all(abs(float(p.prior[g:g + 2].sum()) - 1) < 1e-12 for g in (0, 2, 4))
    out = mix.apply(x.clone(), y, mix.masks_from(peaked_saliency(rng, 5, 16, 16), p))
    assert torch.equal(out.images[4], x[4]) and float(out.weights[4, 0]) == 1.0
    one = mix(x[:1].clone(), y[:1], model=model())
    assert torch.equal(one.images, x[:1]) and one.labels.shape == (1, 1)
    same = x.clone()
    out = CoMixup(prob=0.0, num_classes=4)(same, y, model=None)  # no coin: no saliency pass, no model needed
    assert torch.equal(same, x) and torch.equal(out.labels, y.expand(5, 5)) and torch.equal(out.weights, torch.eye(5))


def test_zero_saliency_and_coinciding_peaks_stay_finite():
    """Where the release divides by zero: a saturated loss's zero map, a group whose peaks
    coincide (its distances sum to 0)."""
    rng = np.random.default_rng(SEED)
    sal = peaked_saliency(rng, 4, 16, 16).double()
    sal[2] = 0
    same = sal[0].expand(4, 16, 16)
    for s in (sal, same):
        m = comix_masks(s, compatibility(s), torch.full((4,), 0.25, dtype=torch.float64),
                        torch.from_numpy(rng.integers(0, 4, (4, 4, 4))))
        assert bool(torch.isfinite(m).all()) and torch.allclose(m.sum(-1), torch.ones(4, 4, 4, dtype=torch.float64))


def test_compatibility_is_the_l1_distance_of_the_saliency_peaks():
    sal = torch.zeros(3, 20, 20)
    sal[0, 2:6, 3:7] = 1  # the 8 x 8 window's argmax: the first covering it, (0, 0)
    sal[1, 15:20, 15:20] = 1  # (12, 12)
    sal[2, 10, 4] = 1  # first window holding it: (3, 0)
    want = torch.tensor([[0, 24, 3], [24, 0, 21], [3, 21, 0]], dtype=torch.float64)
    assert torch.equal(compatibility(sal), want)


def test_bad_input_is_refused_with_the_value():
    rng = np.random.default_rng(SEED)
    x, y = batch(rng, n=3, size=40)
    for kw, text in (({"part": 0}, "part .* 0"), ({"block_num": 0}, "block_num .* 0"), ({"beta": -1.0}, "beta .* -1.0"),
                     ({"omega": 2}, "omega .* 2"), ({"alpha": 0}, "alpha .* 0"), ({"niter": 0}, "niter .* 0"),
                     ({"saliency_bn": "both"}, "'both'"), ({"prob": 2}, "prob .* 2")):
        with pytest.raises(ValueError, match=text):
            CoMixup(**kw)
    mix = CoMixup(num_classes=4)
    good = CoMixParams(mix=True, block_num=4, part=20, prior=torch.full((3,), 1 / 3, dtype=torch.float64),
                       init=torch.zeros(3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="model="):
        mix.apply(x, y, good)
    with pytest.raises(ValueError, match="3 x 3 grid .* 40 x 40"):
        mix.apply(x, y, CoMixParams(mix=True, block_num=3, part=20, prior=good.prior, init=torch.zeros(3, 3, 3, dtype=torch.int64)))
    with pytest.raises(ValueError, match="index its 3 inputs, got 0 .. 3"):
        mix.apply(x, y, CoMixParams(mix=True, block_num=4, part=20, prior=good.prior, init=good.init + torch.eye(4, dtype=torch.int64) * 3),
                  model=model())
    w = torch.zeros(3, 4, 4, 3)
    w[..., 0] = 1
    w[1, 2, 3] = torch.tensor([0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match=r"sum to 1, got \[0.5, 0.25, 0.0\] at block \[1, 2, 3\]"):
        mix.apply(x, y, CoMixMaskParams(mix=True, part=20, weights=w))
    with pytest.raises(ValueError, match="CoMixup takes CoMixParams or CoMixMaskParams, got object"):
        mix.apply(x, y, object())
    before = x.clone()
    with pytest.raises(ValueError):
        mix.apply(x, y, CoMixMaskParams(mix=True, part=20, weights=w))
    assert torch.equal(x, before)  # a refusal loses nothing
    from dali_snapmix.mix.grid_mrf import solve_grid_mrf

    u, wv, wh, pw = torch.rand(2, 2, 2, 3), torch.rand(2, 1, 2), torch.rand(2, 2, 1), torch.rand(3, 3)
    with pytest.raises(ValueError, match=r"init's labels must be in \[0, 3\), got 0 .. 3"):
        solve_grid_mrf(u, wv, wh, pw, init=torch.tensor([[[0, 3], [1, 1]], [[0, 0], [0, 0]]]))
    with pytest.raises(ValueError, match=r"init must be int64 of shape \(2, 2, 2\)"):
        solve_grid_mrf(u, wv, wh, pw, init=torch.zeros(1, 2, 2, dtype=torch.int64))


def test_label_fidelity_truth_is_the_part_mass_each_output_shows():
    """fidelity.group_label_errors against the mix itself: every input's part map in a
    channel of its own, mixed by Co-Mixup's apply, so that channel k of output i holds what
    it shows of input k's parts. Scored: outputs of two or more inputs; a class of several
    used inputs as one "same" weight (weights and truths summed); inputs whose crops hold
    too little of their parts left out."""
    from dali_snapmix.fidelity import group_label_errors

    rng = np.random.default_rng(SEED)
    N, part, n, side = 9, 4, 4, 16
    yy, xx = np.mgrid[:side, :side]
    cov = np.zeros((N, side, side))
    for i in range(N):
        for _ in range(2):
            cy, cx, s = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(1, 4)
            cov[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    held = torch.from_numpy(rng.uniform(0.1, 1.0, N))
    held[[1, 2]], held[3] = 0.9, 0.2  # a class of two inputs held, an input left out
    y = torch.tensor([0, 1, 1, 2, 3, 0, 3, 4, 2])
    w = np.zeros((N, n, n, part))
    for g0 in (0, 4, 8):
        g = min(part, N - g0)
        w[g0:g0 + g, ..., :g] = random_labelling(rng, g, n, g)
    w[2] = 0
    w[2, ..., 1] = 1  # an output of one input: an unmixed copy, not scored
    params = CoMixMaskParams(mix=True, part=part, weights=torch.from_numpy(w).float())
    x = torch.zeros(N, N, side, side)
    x[torch.arange(N), torch.arange(N)] = torch.from_numpy(cov).float()
    out = CoMixup(num_classes=5, part=part).apply(x, y, params)
    rows, mixed, least = group_label_errors(out, torch.from_numpy(cov), held, params, min_share=0.4)
    want = []
    for i in range(N):
        g0 = i // part * part
        used = [g0 + k for k in range(min(part, N - g0)) if w[i, ..., k].sum() > 0]
        if len(used) < 2:
            continue
        for c in sorted({int(y[j]) for j in used}):
            js = [j for j in used if int(y[j]) == c]
            if min(float(held[j]) for j in js) < 0.4:
                continue
            t = sum(float(x[i, j].double().sum()) / cov[j].sum() for j in js)
            want.append((sum(w[i, ..., j - g0].sum() / n ** 2 for j in js), t, "k" if len(js) == 1 else "same", i))
    assert mixed == sum(1 for i in range(N) if (w[i].sum((0, 1)) > 0).sum() >= 2) == len(least)
    assert [(k, s) for _, _, k, s in want] == list(zip(rows["kind"].tolist(), rows["sample"].tolist()))
    every, _, _ = group_label_errors(out, torch.from_numpy(cov), held, params, min_share=0.0)
    assert "same" in rows["kind"] and 2 not in rows["sample"] and len(every["kind"]) > len(want), SEED
    np.testing.assert_allclose(rows["weight"], [v for v, _, _, _ in want], rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows["truth"], [t for _, t, _, _ in want], rtol=0, atol=1e-6)
