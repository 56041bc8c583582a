"""grid_mrf_sweeps (PuzzleMix's labelling moves): the CPU kernel against the torch
reference beside it, label for label, on random energies of many shapes; its bad inputs.
(The solver's energies against every labelling and against gco: tests/mix/test_puzzlemix.py.)"""

import pytest
import torch
from dali_snapmix.kernels import grid_mrf_sweeps
from dali_snapmix.kernels.grid_mrf import grid_mrf_sweeps_reference

from dali_snapmix.mix.grid_mrf import grid_energy, solve_grid_mrf


def energy(g, n, h, w, labels, scale):
    u = torch.rand(n, h, w, labels, generator=g, dtype=torch.float64)
    wv = torch.rand(n, h - 1, w, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, h, w - 1, generator=g, dtype=torch.float64) * scale
    lv = torch.arange(labels, dtype=torch.float64)
    return u, wv, wh, (lv[:, None] - lv[None]) ** 2 / max(labels - 1, 1) ** 2


@pytest.mark.parametrize("n,h,w,labels", [(1, 1, 1, 3), (3, 1, 7, 3), (2, 6, 1, 2), (5, 4, 4, 3), (1, 16, 16, 3),
                                          (4, 8, 8, 4), (3, 5, 9, 3)])
@pytest.mark.parametrize("sweeps", [1, 3, 20])
def test_kernel_equals_the_reference(g, n, h, w, labels, sweeps):
    u, wv, wh, pw = energy(g, n, h, w, labels, scale=float(torch.rand(1, generator=g)) * 3)
    start = torch.randint(0, labels, (2 * n, h, w), generator=g)  # two starts per sample
    got = grid_mrf_sweeps(u, wv, wh, pw, start.clone(), max_sweeps=sweeps, backend="cpu")
    want = grid_mrf_sweeps_reference(u, wv, wh, pw, start.clone(), max_sweeps=sweeps)
    assert torch.equal(got, want), (n, h, w, labels, sweeps)
    reps = (2, 1, 1, 1)
    before = grid_energy(start, u.repeat(*reps), wv.repeat(2, 1, 1), wh.repeat(2, 1, 1), pw)
    after = grid_energy(got, u.repeat(*reps), wv.repeat(2, 1, 1), wh.repeat(2, 1, 1), pw)
    assert bool((after <= before + 1e-12).all())  # a descent
    assert torch.equal(solve_grid_mrf(u, wv, wh, pw, max_sweeps=sweeps, backend="cpu"),
                       solve_grid_mrf(u, wv, wh, pw, max_sweeps=sweeps, backend="reference"))


def test_ties_go_to_the_lowest_label_and_items_are_independent(g):
    u = torch.zeros(2, 3, 3, 3, dtype=torch.float64)  # every labelling of a constant one costs the same
    u[1] = torch.rand(3, 3, 3, generator=g, dtype=torch.float64)
    wv, wh = torch.zeros(2, 2, 3, dtype=torch.float64), torch.zeros(2, 3, 2, dtype=torch.float64)
    pw = torch.zeros(3, 3, dtype=torch.float64)
    start = torch.full((2, 3, 3), 2)
    got = grid_mrf_sweeps(u, wv, wh, pw, start.clone(), max_sweeps=5, backend="cpu")
    assert int(got[0].max()) == 0  # flat: label 0 everywhere
    assert torch.equal(got[1], u[1].argmin(-1))  # no edges: each node its own best
    alone = grid_mrf_sweeps(u[1:].contiguous(), wv[1:].contiguous(), wh[1:].contiguous(), pw, start[1:].clone(),
                            max_sweeps=5, backend="cpu")
    assert torch.equal(alone[0], got[1])


def test_bad_inputs_name_the_value(g):
    u, wv, wh, pw = energy(g, 2, 3, 3, 3, scale=1.0)
    lab = torch.zeros(2, 3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="unary must be a contiguous torch.float64"):
        grid_mrf_sweeps(u.float(), wv, wh, pw, lab, max_sweeps=2)
    with pytest.raises(ValueError, match=r"labels must be \(k \* 2, 3, 3\), got \(3, 3, 3\)"):
        grid_mrf_sweeps(u, wv, wh, pw, torch.zeros(3, 3, 3, dtype=torch.int64), max_sweeps=2)
    with pytest.raises(ValueError, match="max_sweeps must be an int >= 1, got 0"):
        solve_grid_mrf(u, wv, wh, pw, max_sweeps=0)
