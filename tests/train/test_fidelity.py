"""Label fidelity: the part truth of a mixed batch, and how weights are scored against it."""

import os

import numpy as np
import pytest
import torch

from dali_snapmix.data import DALILoader, ImageSource, TransformSpec
from dali_snapmix.fidelity import PartMasks, label_errors, left_out, measure, part_truth, summarise
from dali_snapmix.mix import BoxParams, CutMix, CutOutParams, MixedBatch, SnapMix, build_mix
from dali_snapmix.models import SmallCNN


def _truth_loop(cov: np.ndarray, params: BoxParams):
    """float64 reference with explicit 0/1 box masks, one sample at a time."""
    n, h, w = cov.shape
    t_a, t_b = np.empty(n), np.empty(n)
    for i in range(n):
        j = int(params.perm[i])
        inside_dst = np.zeros((h, w))
        y0, y1, x0, x1 = params.dst_box[i].tolist()
        inside_dst[y0:y1, x0:x1] = 1
        inside_src = np.zeros((h, w))
        y0, y1, x0, x1 = params.src_box[i].tolist()
        inside_src[y0:y1, x0:x1] = 1
        t_a[i] = (cov[i] * (1 - inside_dst)).sum() / cov[i].sum()
        t_b[i] = (cov[j] * inside_src).sum() / cov[j].sum()
    return t_a, t_b


@pytest.mark.parametrize("n", [1, 5, 16])
def test_part_truth_against_a_plain_loop(n):
    rng = np.random.default_rng(n)
    h = w = 24
    cov = torch.from_numpy(rng.random((n, h, w)) * (rng.random((n, h, w)) < 0.2))
    cov[:, 3, 3] += 0.5  # no empty map
    # random boxes, plus the edge cases: 1 pixel, the full image, border boxes, an empty box
    def boxes():
        b = []
        for _ in range(n):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            b.append([y0, rng.integers(y0 + 1, h + 1), x0, rng.integers(x0 + 1, w + 1)])
        b = np.array(b)
        specials = [[4, 5, 7, 8], [0, h, 0, w], [0, 6, w - 5, w], [h - 1, h, 0, w]]
        b[: min(n, 4)] = specials[: min(n, 4)]
        return torch.from_numpy(b.astype(np.int64))
    perm = torch.from_numpy(rng.permutation(n).astype(np.int64))
    perm[0] = 0  # a self-pair
    p = BoxParams(mix=True, perm=perm, src_box=boxes(), dst_box=boxes())
    labels = torch.from_numpy(rng.integers(0, 3, n).astype(np.int64))
    held = torch.ones(n, dtype=torch.float64)
    t = part_truth(cov, held, labels, p)
    ref_a, ref_b = _truth_loop(cov.numpy(), p)
    np.testing.assert_allclose(t.t_a.numpy(), ref_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.t_b.numpy(), ref_b, rtol=0, atol=1e-12)
    assert torch.equal(t.same, labels == labels[perm]) and bool(t.same[0])
    assert bool(t.keep.all())  # every box non-empty here, every crop holds its parts
    if n >= 2:  # the full-image target box leaves nothing of sample 1 visible
        assert t.t_a[1] == 0.0


def test_part_truth_keeps_only_mixed_samples_whose_crops_hold_their_parts():
    cov = torch.zeros(4, 8, 8, dtype=torch.float64)
    cov[:, 2:4, 2:4] = 1.0
    box = torch.tensor([[0, 4, 0, 4], [0, 0, 0, 4], [0, 4, 0, 4], [0, 4, 0, 4]])  # sample 1: empty target box
    p = BoxParams(mix=True, perm=torch.tensor([1, 0, 3, 2]), src_box=box, dst_box=box)
    held = torch.tensor([1.0, 1.0, 0.1, 0.9], dtype=torch.float64)  # sample 2's crop lost most of its parts
    t = part_truth(cov, held, torch.tensor([0, 1, 2, 3]), p, min_share=0.25)
    # 0: fine; 1: not mixed; 2: its own parts mostly cut away; 3: its partner's are
    assert t.keep.tolist() == [True, False, False, False]
    assert part_truth(cov, held, torch.arange(4), BoxParams(mix=False, perm=p.perm, src_box=box, dst_box=box)).keep.sum() == 0
    with pytest.raises(ValueError, match="box, mask and blend params, got CutOutParams"):
        part_truth(cov, held, torch.arange(4), CutOutParams(apply=True, box=box))


@pytest.mark.parametrize("method,options", [("fmix", {"per_sample": True}), ("smoothmix", {"per_sample": True}),
                                            ("samplepairing", {}), ("mixed-example", {"variant": "vh-mixup"}),
                                            ("mixed-example", {"variant": "random-pixels"})])
def test_mask_and_blend_truth_is_the_part_mass_the_mixed_image_shows(method, options):
    """As the box test below: each sample's part map in a channel of its own, mixed by the
    method itself on its own params; channel i of row i is what is left of i's parts,
    channel perm[i] what the partner brought (a self-pair's both at once: its truth sums to 1)."""
    rng = np.random.default_rng()
    n, h = 6, 24
    cov = torch.from_numpy(rng.random((n, h, h)) ** 4)  # uneven part maps
    x = torch.zeros(n, n, h, h)
    for i in range(n):
        x[i, i] = cov[i].float()
    y = torch.zeros(n, dtype=torch.int64)
    mix = build_mix(method, **options)
    p = mix.sample(x, y, rng=rng)
    mixed = mix.apply(x.clone(), y, p).images.double()
    total = cov.float().double().sum((1, 2))
    t = part_truth(cov, torch.ones(n, dtype=torch.float64), torch.arange(n), p)
    i, j = torch.arange(n), p.perm
    self_pair = i == j
    shown_a = mixed[i, i].sum((1, 2)) / total
    shown_b = mixed[i, j].sum((1, 2)) / total[j]
    torch.testing.assert_close(torch.where(self_pair, t.t_a + t.t_b, t.t_a), shown_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(t.t_b[~self_pair], shown_b[~self_pair], rtol=0, atol=1e-5)
    assert bool(t.mixed.all())


def test_label_errors_score_what_the_loss_applies_and_keep_the_claim():
    """A different-label pair: (w_a, w_b) against (t_a, t_b). A same-label pair's class
    gets w_a + w_b from the loss, scored against t_a + t_b; SnapMix's released rule puts
    rho_a + rho_b in both weights, so it applies twice its claim, kept beside it."""
    from dali_snapmix.fidelity import PartTruth

    t = PartTruth(t_a=torch.tensor([0.6, 0.7, 0.2], dtype=torch.float64), t_b=torch.tensor([0.3, 0.1, 0.5], dtype=torch.float64),
                  same=torch.tensor([False, True, False]), mixed=torch.ones(3, dtype=torch.bool),
                  keep=torch.tensor([True, True, False]), share=torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64))
    y = torch.tensor([0, 1, 2])
    area = MixedBatch(torch.zeros(3, 1, 1, 1), y, y, torch.tensor([0.5, 0.4, 0.9]), torch.tensor([0.5, 0.6, 0.1]))
    r = label_errors(area, t, merges_same_label=False)
    # pair 0: (w_a, w_b) against (t_a, t_b); pair 1: its class weight w_a + w_b = 1.0 against 0.8; pair 2 left out
    assert r["kind"].tolist() == ["a", "b", "same"] and r["sample"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(r["weight"], [0.5, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(r["claim"], r["weight"], atol=0)
    np.testing.assert_allclose(r["truth"], [0.6, 0.3, 0.8], atol=1e-12)
    np.testing.assert_allclose(r["share"], [0.9, 0.9, 0.5], atol=0)
    snap = MixedBatch(torch.zeros(3, 1, 1, 1), y, y, torch.tensor([0.5, 0.75, 0.9]), torch.tensor([0.5, 0.75, 0.1]))
    r = label_errors(snap, t, merges_same_label=True)
    np.testing.assert_allclose(r["weight"], [0.5, 0.5, 1.5], atol=1e-7)
    np.testing.assert_allclose(r["claim"], [0.5, 0.5, 0.75], atol=1e-7)
    s = summarise([r])
    assert s["mae_a"] == pytest.approx(0.1) and s["mae_b"] == pytest.approx(0.2)
    assert s["mae_diff"] == pytest.approx(0.15)
    assert s["mae_same"] == pytest.approx(0.7) and s["mae_same_claim"] == pytest.approx(0.05)
    assert s["mae"] == pytest.approx((0.1 + 0.2 + 0.7) / 3) and s["lies"] == pytest.approx(1 / 3)
    assert s["lies_diff"] == 0.0 and s["weights"] == 3
    # a stricter threshold drops the same-label pair (its crops hold 0.5 of their parts)
    s = summarise([r], min_share=0.6)
    assert s["weights"] == 2 and s["pairs_same"] == 0 and s["mae"] == pytest.approx(0.15)
    assert left_out({"mixed_share": np.array([0.9, 0.5, 0.1])}, 0.6) == 2


def test_useless_label_error_averages_every_permutation_of_the_truths():
    """useless_diff: the different-label weights against the row's truths in every order,
    by brute force over all 5! orders; the same-label weight takes no part; skill is the ratio."""
    import itertools

    g = np.random.default_rng()
    w, t = g.random(5), g.random(5)
    rows = [{"weight": np.r_[w, 0.9], "claim": np.r_[w, 0.9], "truth": np.r_[t, 0.1],
             "kind": np.array(["a", "b", "a", "b", "a", "same"]), "sample": np.array([0, 0, 1, 1, 2, 3]),
             "share": np.ones(6)}]
    want = np.mean([np.abs(w - t[list(p)]).mean() for p in itertools.permutations(range(5))])
    s = summarise(rows)
    assert s["useless_diff"] == pytest.approx(want, rel=1e-12)
    assert s["skill_diff"] == pytest.approx(np.abs(w - t).mean() / want, rel=1e-12)


def _rows(errors_a, errors_b, *, truth=0.5, share=1.0):
    """label_errors-like rows: one batch, sample k's two weights off by errors_a[k], errors_b[k]."""
    n = len(errors_a)
    w = np.r_[truth + np.asarray(errors_a, float), truth + np.asarray(errors_b, float)]
    return [{"weight": w, "claim": w, "truth": np.full(2 * n, truth), "kind": np.array(["a"] * n + ["b"] * n),
             "sample": np.r_[np.arange(n), np.arange(n)], "share": np.full(2 * n, share)}]


def test_paired_difference_and_its_bootstrap_interval_over_samples():
    """The paired statistic against plain arithmetic; its interval resamples samples,
    not weights: when each sample's two weights differ by +1 and -1 the per-sample
    difference is 0 and so is the whole interval (a per-weight bootstrap would not
    collapse); on many i.i.d. samples the interval is the normal one, mean +- 1.96
    sd / sqrt(m), within the bootstrap's noise; rows of other samples are refused."""
    from dali_snapmix.fidelity import paired

    seed = int.from_bytes(os.urandom(4), "little")
    g = np.random.default_rng(seed)
    m = 400
    ex, ey = g.uniform(0, 0.3, (2, m)), g.uniform(0, 0.3, (2, m))
    d = paired(_rows(ex[0], ex[1]), _rows(ey[0], ey[1]), seed=1)
    want = float(np.r_[ex[0] - ey[0], ex[1] - ey[1]].mean())
    assert d["diff"] == pytest.approx(want, abs=1e-12) and d["samples"] == m and d["weights"] == 2 * m
    assert d["ratio"] == pytest.approx(ex.mean() / ey.mean(), rel=1e-12)
    per_sample = (ex - ey).mean(0)
    half = 1.96 * per_sample.std(ddof=1) / np.sqrt(m)
    assert d["lo"] == pytest.approx(want - half, abs=0.2 * half), seed
    assert d["hi"] == pytest.approx(want + half, abs=0.2 * half), seed

    zero = np.zeros(m)
    d = paired(_rows(zero + 0.2, zero), _rows(zero, zero + 0.2), seed=1)  # x: a off by 0.2; y: b off by 0.2
    assert d["diff"] == pytest.approx(0.0, abs=1e-12) and d["lo"] == pytest.approx(0.0, abs=1e-12)
    assert d["hi"] == pytest.approx(0.0, abs=1e-12)

    with pytest.raises(ValueError, match="did not score the same samples"):
        paired(_rows(ex[0], ex[1]), _rows(ey[0][:-1], ey[1][:-1]))
    # a threshold both rows apply alike keeps them paired
    assert paired(_rows(ex[0], ex[1], share=0.3), _rows(ey[0], ey[1], share=0.3), min_share=0.5)["samples"] == 0


def test_measure_scores_a_loader_and_leaves_the_model_as_it_was(birds):
    """SnapMix's released CAM pass runs in train mode and moves BatchNorm statistics:
    measure() must hand the model back unchanged. Area labels on symmetric CutMix boxes
    are scored too, and every kept weight has its truth."""
    src = ImageSource.from_folder(birds.test_dir)
    loader = DALILoader(src, batch_size=8, train=True, spec=TransformSpec(resize=40, crop=32), device="cpu", seed=1)
    masks = PartMasks(src.paths, root=birds.root)
    model = SmallCNN(12)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for mix in (SnapMix(num_classes=12), CutMix(num_classes=12)):
        r = measure(mix, model=model, loader=loader, masks=masks, epochs=(0, 1))
        assert 0 < r["mixed"] <= 2 * len(loader) * 8 and 0 <= r["excluded"] < r["mixed"]
        assert r["weights"] == 2 * r["pairs_diff"] + r["pairs_same"] > 0 and np.isfinite(r["mae_diff"])
        assert len(r["mixed_share"]) == r["mixed"] and left_out(r, 0.25) == r["excluded"]
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_part_truth_is_the_part_mass_the_mixed_image_shows():
    """Independent of part_truth's formula: each sample's part map goes in a channel of its
    own and through paste_resized with the params themselves. In row i of the mixed batch,
    channel i holds what is left of i's parts (t_a) and channel perm[i] what its partner
    brought (t_b). Equal-sized boxes at other places (a move, no resize): exact to
    float32; a swap of the source and target boxes in the truth fails by far. Boxes of
    other sizes with a constant part map: the pasted mass is the source box's share
    scaled by the areas, since a bilinear resize keeps a constant constant."""
    from dali_snapmix.kernels import paste_resized

    rng = np.random.default_rng()
    n, h, w, side = 7, 40, 40, 14
    yy, xx = np.mgrid[0:h, 0:w]
    cov = np.zeros((n, h, w))
    for i in range(n):  # a few blobs anywhere: parts inside, across and outside the boxes
        for _ in range(3):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6)
            cov[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    order = torch.from_numpy(rng.permutation(n))
    perm = torch.empty_like(order)
    perm[order] = order.roll(1)  # one random n-cycle: no self-pairs

    def at(y, x, sy=side, sx=side):
        return [y, y + sy, x, x + sx]

    src = torch.tensor([at(*rng.integers(0, h - side + 1, 2)) for _ in range(n)])
    dst = torch.tensor([at(*rng.integers(0, h - side + 1, 2)) for _ in range(n)])
    src[0], dst[0] = torch.tensor(at(0, 0)), torch.tensor(at(h - side, w - side))  # opposite corners
    x = torch.zeros(n, n, h, w)
    for i in range(n):
        x[i, i] = torch.from_numpy(cov[i]).float()
    mixed = paste_resized(x, perm=perm, src_box=src, dst_box=dst).double()
    c = torch.from_numpy(cov)
    total = c.float().double().sum((1, 2))
    i = torch.arange(n)
    shown_a = mixed[i, i].sum((1, 2)) / total
    shown_b = mixed[i, perm].sum((1, 2)) / total[perm]
    held = torch.ones(n, dtype=torch.float64)
    t = part_truth(c, held, torch.arange(n), BoxParams(mix=True, perm=perm, src_box=src, dst_box=dst))
    torch.testing.assert_close(t.t_a, shown_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(t.t_b, shown_b, rtol=0, atol=1e-5)
    swapped = part_truth(c, held, torch.arange(n), BoxParams(mix=True, perm=perm, src_box=dst, dst_box=src))
    assert (swapped.t_b - shown_b).abs().max() > 0.05 or (swapped.t_a - shown_a).abs().max() > 0.05

    # boxes of other sizes: a constant part map makes the resized mass exact
    ones = torch.ones(n, h, w, dtype=torch.float64)
    src = torch.tensor([at(2, 3, 10, 20), at(0, 0, h, w), at(5, 5, 1, 1), at(30, 0, 10, w), *[at(4, 4, 8, 8)] * (n - 4)])
    dst = torch.tensor([at(0, 0, 25, 7), at(10, 10, 3, 4), at(0, 0, h, w), at(39, 0, 1, w), *[at(20, 20, 16, 12)] * (n - 4)])
    mixed = paste_resized(ones.float().clone()[:, None].repeat(1, n, 1, 1) * torch.eye(n)[:, :, None, None],
                          perm=perm, src_box=src, dst_box=dst).double()
    area = lambda b: ((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2])).double()  # noqa: E731
    shown_b = mixed[i, perm].sum((1, 2)) * area(src) / area(dst) / (h * w)
    t = part_truth(ones, held, torch.arange(n), BoxParams(mix=True, perm=perm, src_box=src, dst_box=dst))
    torch.testing.assert_close(t.t_b, shown_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(t.t_a, mixed[i, i].sum((1, 2)) / (h * w), rtol=0, atol=1e-6)
