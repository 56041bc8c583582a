"""A batched solver for the small grid MRFs of PuzzleMix's masks, on the batch's device.

The energy of a labelling l of an (h, w) grid with L ordered labels, per sample:

    E(l) = sum_p U[p, l_p] + sum_(p above q) wv[p] V[l_p, l_q] + sum_(p left of q) wh[p] V[l_p, l_q]

PuzzleMix's release solves it per sample on the host with gco's alpha-beta swap (a
graph cut per pair of labels, to a local minimum under swap moves; costs rounded to
int32). Here every sample and every start at once, on the batch's device: block
coordinate descent where a move re-labels a whole row (then a whole column) to its exact
best given its neighbours (min-sum dynamic programming along the chain, L x L per step).
Even rows, odd rows, even columns, odd columns make a sweep; sweeps run until no label
changes (at most ``max_sweeps``). The energy never rises, so each start ends at a local
minimum under row and column moves, which is neither stronger nor weaker in general than
a swap move's; several starts (the unaries' own best labels and each constant labelling)
run side by side and the lowest energy wins. The sweeps are a kernel
(:func:`dali_snapmix.kernels.grid_mrf_sweeps`: a labelling per work item, CPU and CUDA
from one source, the same moves in torch beside it as the reference). The tests compare
the result with every labelling of 2 x 2 and 3 x 3 grids and with gco on PuzzleMix's own
grids.
"""

from __future__ import annotations

import torch

from .. import kernels

__all__ = ["grid_energy", "solve_grid_mrf"]


def _check(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, pairwise: torch.Tensor) -> None:
    if unary.dim() != 4:
        raise ValueError(f"unary must be (N, h, w, L), got shape {tuple(unary.shape)}")
    n, h, w, labels = unary.shape
    for name, t, shape in (("wv", wv, (n, h - 1, w)), ("wh", wh, (n, h, w - 1)), ("pairwise", pairwise, (labels, labels))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for unary of shape {tuple(unary.shape)}, got {tuple(t.shape)}")
    for name, t in (("unary", unary), ("wv", wv), ("wh", wh), ("pairwise", pairwise)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has a non-finite entry at {tuple(int(v) for v in (~torch.isfinite(t)).nonzero()[0])}")


def grid_energy(labels: torch.Tensor, unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor,
                pairwise: torch.Tensor) -> torch.Tensor:
    """E of int64 labels (N, h, w), float64 (N,)."""
    u, v, hz, pw = unary.double(), wv.double(), wh.double(), pairwise.double()
    e = u.gather(-1, labels[..., None]).squeeze(-1).sum((1, 2))
    e = e + (v * pw[labels[:, :-1], labels[:, 1:]]).sum((1, 2))
    return e + (hz * pw[labels[:, :, :-1], labels[:, :, 1:]]).sum((1, 2))


def solve_grid_mrf(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, pairwise: torch.Tensor, *,
                   init: torch.Tensor | None = None, max_sweeps: int = 20, backend: str = "auto") -> torch.Tensor:
    """int64 labels (N, h, w) of low energy (see the module docstring) for unary (N, h, w, L),
    vertical edge weights wv (N, h - 1, w), horizontal wh (N, h, w - 1) and the label cost
    ``pairwise`` (L, L), on their device. Deterministic. The starts: the unaries' best,
    each constant labelling and ``init`` (int64 (N, h, w)) where given (the result's energy
    is then at most init's). The sweeps are a kernel
    (``kernels.grid_mrf_sweeps``; ``backend="reference"``: the same moves in torch)."""
    _check(unary, wv, wh, pairwise)
    if not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise ValueError(f"max_sweeps must be an int >= 1, got {max_sweeps!r}")
    n, h, w, nl = unary.shape
    u, v, hz, pw = (t.double().contiguous() for t in (unary, wv, wh, pairwise))
    starts = [u.argmin(-1)] + [torch.full((n, h, w), k, dtype=torch.int64, device=u.device) for k in range(nl)]
    if init is not None:
        if tuple(init.shape) != (n, h, w) or init.dtype != torch.int64:
            raise ValueError(f"init must be int64 of shape {(n, h, w)}, got {init.dtype} of shape {tuple(init.shape)}")
        if init.numel() and (int(init.min()) < 0 or int(init.max()) >= nl):
            raise ValueError(f"init's labels must be in [0, {nl}), got {int(init.min())} .. {int(init.max())}")
        starts.append(init.to(u.device))
    labels = torch.cat(starts)  # start-major: items k n .. (k + 1) n - 1 are start k, item t is sample t % n
    kernels.grid_mrf_sweeps(u, v, hz, pw, labels, max_sweeps=max_sweeps, backend=backend)
    energy = grid_energy(labels, u.repeat(len(starts), 1, 1, 1), v.repeat(len(starts), 1, 1),
                         hz.repeat(len(starts), 1, 1), pw).view(len(starts), n)
    best = energy.argmin(0)  # the first start of the lowest energy
    return labels.view(len(starts), n, h, w)[best, torch.arange(n, device=labels.device)]
