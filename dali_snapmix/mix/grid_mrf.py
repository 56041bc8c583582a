"""A batched solver for the small grid MRFs of PuzzleMix's masks, on the batch's device.

The energy of a labelling l of an (h, w) grid with L ordered labels, per sample:

    E(l) = sum_p U[p, l_p] + sum_(p above q) wv[p] V[l_p, l_q] + sum_(p left of q) wh[p] V[l_p, l_q]

PuzzleMix's release solves it per sample on the host with gco's alpha-beta swap (a
graph cut per pair of labels, to a local minimum under swap moves; costs rounded to
int32). Here every sample, every start, and every other row of the grid at once: block
coordinate descent where a move re-labels a whole row (then a whole column) to its exact
best given its neighbours (min-sum dynamic programming along the chain, L x L per step).
Even rows, odd rows, even columns, odd columns make a sweep; sweeps run until no label
changes (at most ``max_sweeps``). The energy never rises, so each start ends at a local
minimum under row and column moves, which is neither stronger nor weaker in general than
a swap move's; several starts (the unaries' own best labels and each constant labelling)
run side by side and the lowest energy wins. The tests compare the result with every
labelling of 2 x 2 and 3 x 3 grids and with gco on PuzzleMix's own grids.
"""

from __future__ import annotations

import torch

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


def _chains(node: torch.Tensor, edge: torch.Tensor, pairwise: torch.Tensor) -> torch.Tensor:
    """Exact min-sum labels of independent chains: node costs (..., w, L), edge weights
    (..., w - 1) times ``pairwise`` between neighbours; ties to the lowest label."""
    w = node.shape[-2]
    msg = node[..., 0, :]
    back = []
    for c in range(1, w):
        cand = msg[..., :, None] + edge[..., c - 1, None, None] * pairwise  # (..., from, to)
        msg, arg = cand.min(-2)
        msg = msg + node[..., c, :]
        back.append(arg)
    out = torch.empty(node.shape[:-1], dtype=torch.int64, device=node.device)
    out[..., w - 1] = msg.argmin(-1)
    for c in range(w - 1, 0, -1):
        out[..., c - 1] = back[c - 1].gather(-1, out[..., c, None]).squeeze(-1)
    return out


def _rows(labels: torch.Tensor, unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, pairwise: torch.Tensor,
          parity: int) -> None:
    """In place: rows parity, parity + 2, ... each re-labelled to its best given the rows
    above and below (which this move leaves alone)."""
    h = unary.shape[1]
    rows = torch.arange(parity, h, 2, device=unary.device)
    node = unary[:, rows].clone()  # (N, R, w, L)
    up = rows > 0
    if bool(up.any()):
        r = rows[up]
        node[:, up] += wv[:, r - 1, :, None] * pairwise[labels[:, r - 1]]  # V[label above, l]
    down = rows < h - 1
    if bool(down.any()):
        r = rows[down]
        node[:, down] += wv[:, r, :, None] * pairwise[:, labels[:, r + 1]].permute(1, 2, 3, 0)  # V[l, label below]
    labels[:, rows] = _chains(node, wh[:, rows], pairwise)


def solve_grid_mrf(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, pairwise: torch.Tensor, *,
                   max_sweeps: int = 20) -> torch.Tensor:
    """int64 labels (N, h, w) of low energy (see the module docstring) for unary (N, h, w, L),
    vertical edge weights wv (N, h - 1, w), horizontal wh (N, h, w - 1) and the label cost
    ``pairwise`` (L, L), on their device. Deterministic."""
    _check(unary, wv, wh, pairwise)
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be >= 1, got {max_sweeps}")
    n, h, w, nl = unary.shape
    starts = [unary.argmin(-1)] + [torch.full((n, h, w), k, dtype=torch.int64, device=unary.device) for k in range(nl)]
    s = len(starts)
    labels = torch.cat(starts)  # start-major: rows k n .. (k + 1) n - 1 are start k
    u, v, hz = (t.repeat(s, *[1] * (t.dim() - 1)) for t in (unary, wv, wh))
    # columns as rows: a column's chain runs downwards (its first node the upper one, as a
    # row's the left one), its neighbouring "rows" the columns beside it: V keeps its sense
    ut, vt, ht = u.transpose(1, 2), hz.transpose(1, 2), v.transpose(1, 2)
    for _ in range(max_sweeps):
        before = labels.clone()
        _rows(labels, u, v, hz, pairwise, 0)
        _rows(labels, u, v, hz, pairwise, 1)
        cols = labels.transpose(1, 2)  # a view: the column moves write into labels
        _rows(cols, ut, vt, ht, pairwise, 0)
        _rows(cols, ut, vt, ht, pairwise, 1)
        if bool((labels == before).all()):
            break
    energy = grid_energy(labels, u, v, hz, pairwise).view(s, n)
    best = energy.argmin(0)  # the first start of the lowest energy
    return labels.view(s, n, h, w)[best, torch.arange(n, device=labels.device)]
