"""Block coordinate descent on small grid MRFs, in place, a labelling per work item
(PuzzleMix's masks: ``dali_snapmix.mix.grid_mrf`` says what is solved and why this way).

Each work item (a sample and a start) sweeps its own labels (h, w): every other row from
the first, then the others, then the same for the columns; a move re-labels the whole row
(column) to its exact best given its neighbours by min-sum dynamic programming along it,
ties to the lowest label. Sweeps stop when one changes nothing (a fixed point: further
sweeps would change nothing either) or after ``max_sweeps``.

The reference beside the kernels moves all rows of one parity of every item at once in
torch, stopping when no item changed; as its moves are the same, its labels are the
kernels' exactly: the same float64 operations in the same order (the node's cost: the
unary, plus the term of the neighbour above, plus that of the one below; a candidate:
the message plus the edge weight times the label cost; the lowest label on ties).

CUDA: a thread per work item, the dynamic program's messages and back pointers in
scratch arrays of its own (the grids are at most 16 x 16 with 3 labels: a batch's
items are a few dozen threads, each a few tens of thousands of operations). CPU: the
items in a prange.
"""

from __future__ import annotations

import functools

import torch

from . import _dispatch as D
from ._target import Target, build, nvtx_range

__all__ = ["grid_mrf_sweeps", "grid_mrf_sweeps_reference"]


# ---------------------------------------------------------------- the math, once


def chain_with():
    def chain(t, i, line, across, unary, w_along, w_side, pw, labels, node, back, msg, nxt, H, W, L, S):
        """Re-label row ``line`` (``across`` 0) or column ``line`` (1) of item ``t`` (sample
        ``i``) to its best given the lines beside it; True if a label changed. ``S`` is
        max(H, W): the stride of the item's scratch rows."""
        n_nodes = W if across == 0 else H
        n_lines = H if across == 0 else W
        for c in range(n_nodes):
            r = line if across == 0 else c
            col = c if across == 0 else line
            for lab in range(L):
                v = unary[((i * H + r) * W + col) * L + lab]
                if line > 0:  # the neighbour above (left): V[its label, lab]
                    if across == 0:
                        e = w_side[(i * (H - 1) + r - 1) * W + col]
                        other = labels[(t * H + r - 1) * W + col]
                    else:
                        e = w_side[(i * H + r) * (W - 1) + col - 1]
                        other = labels[(t * H + r) * W + col - 1]
                    v = v + e * pw[other * L + lab]
                if line < n_lines - 1:  # below (right): V[lab, its label]
                    if across == 0:
                        e = w_side[(i * (H - 1) + r) * W + col]
                        other = labels[(t * H + r + 1) * W + col]
                    else:
                        e = w_side[(i * H + r) * (W - 1) + col]
                        other = labels[(t * H + r) * W + col + 1]
                    v = v + e * pw[lab * L + other]
                node[(t * S + c) * L + lab] = v
        for lab in range(L):
            msg[t * L + lab] = node[(t * S) * L + lab]
        for c in range(1, n_nodes):
            if across == 0:
                e = w_along[(i * H + line) * (W - 1) + c - 1]
            else:
                e = w_along[(i * (H - 1) + c - 1) * W + line]
            for to in range(L):
                best = msg[t * L] + e * pw[to]
                arg = 0
                for fr in range(1, L):
                    cand = msg[t * L + fr] + e * pw[fr * L + to]
                    if cand < best:
                        best = cand
                        arg = fr
                nxt[t * L + to] = best + node[(t * S + c) * L + to]
                back[(t * S + c) * L + to] = arg
            for lab in range(L):
                msg[t * L + lab] = nxt[t * L + lab]
        cur = 0
        for lab in range(1, L):
            if msg[t * L + lab] < msg[t * L + cur]:
                cur = lab
        changed = False
        for c in range(n_nodes - 1, -1, -1):
            k = (t * H + line) * W + c if across == 0 else (t * H + c) * W + line
            if labels[k] != cur:
                changed = True
                labels[k] = cur
            if c > 0:
                cur = back[(t * S + c) * L + cur]
        return changed

    return chain


def descend_with(*, chain):
    def descend(t, unary, wv, wh, pw, labels, node, back, msg, nxt, N, H, W, L, max_sweeps):
        """Item ``t``'s sweeps (its sample t % N)."""
        i = t % N
        S = max(H, W)
        for _ in range(max_sweeps):
            changed = False
            for parity in range(2):
                for line in range(parity, H, 2):
                    if chain(t, i, line, 0, unary, wh, wv, pw, labels, node, back, msg, nxt, H, W, L, S):
                        changed = True
            for parity in range(2):
                for line in range(parity, W, 2):
                    if chain(t, i, line, 1, unary, wv, wh, pw, labels, node, back, msg, nxt, H, W, L, S):
                        changed = True
            if not changed:
                return

    return descend


# ---------------------------------------------------------------- kernels


def cpu_kernel_with(*, prange, descend):
    def cpu_sweeps(unary, wv, wh, pw, labels, node, back, msg, nxt, T, N, H, W, L, max_sweeps):
        for t in prange(T):
            descend(t, unary, wv, wh, pw, labels, node, back, msg, nxt, N, H, W, L, max_sweeps)

    return cpu_sweeps


def cuda_kernel_with(*, first, stride, descend):
    def cuda_sweeps(unary, wv, wh, pw, labels, node, back, msg, nxt, T, N, H, W, L, max_sweeps):
        for t in range(first(), T, stride()):
            descend(t, unary, wv, wh, pw, labels, node, back, msg, nxt, N, H, W, L, max_sweeps)

    return cuda_sweeps


def python_kernels(target: str):
    """The kernel body for ``target``, its helpers compiled for it."""
    tg = Target(target)
    chain = tg.device(chain_with())
    descend = tg.device(descend_with(chain=chain))
    if target == "cpu":
        from numba import prange

        return (cpu_kernel_with(prange=prange, descend=descend),)
    first, stride = tg.grid()
    return (cuda_kernel_with(first=first, stride=stride, descend=descend),)


@functools.cache
def _compiled(target: str):
    return build(target, python_kernels(target)[0])


# ---------------------------------------------------------------- backends


def _numba(backend: str):
    def run(unary, wv, wh, pairwise, labels, *, max_sweeps):
        N, H, W, L = unary.shape
        T = labels.shape[0]
        dev = unary.device
        S = max(H, W)
        node = torch.empty(T * S * L, dtype=torch.float64, device=dev)
        back = torch.empty(T * S * L, dtype=torch.int64, device=dev)
        msg = torch.empty(T * L, dtype=torch.float64, device=dev)
        nxt = torch.empty_like(msg)
        args = tuple(D.flat(x, backend) for x in (unary, wv, wh, pairwise, labels, node, back, msg, nxt))
        D.launch(backend, _compiled(backend), T, *args, T, N, H, W, L, max_sweeps)
        return labels

    return run


D.register("grid_mrf_sweeps", "cpu")(_numba("cpu"))
D.register("grid_mrf_sweeps", "cuda")(_numba("cuda"))


def _rows(labels, unary, wv, wh, pairwise, parity: int) -> None:
    """In place: rows parity, parity + 2, ... of every item re-labelled to their best
    given the rows above and below."""
    h = unary.shape[1]
    rows = torch.arange(parity, h, 2, device=unary.device)
    node = unary[:, rows].clone()  # (T, R, w, L)
    up = rows > 0
    if bool(up.any()):
        r = rows[up]
        node[:, up] += wv[:, r - 1, :, None] * pairwise[labels[:, r - 1]]  # V[label above, l]
    down = rows < h - 1
    if bool(down.any()):
        r = rows[down]
        node[:, down] += wv[:, r, :, None] * pairwise[:, labels[:, r + 1]].permute(1, 2, 3, 0)  # V[l, label below]
    edge = wh[:, rows]
    msg = node[..., 0, :]
    back = []
    for c in range(1, node.shape[-2]):
        msg, arg = (msg[..., :, None] + edge[..., c - 1, None, None] * pairwise).min(-2)  # (..., from, to)
        msg = msg + node[..., c, :]
        back.append(arg)
    out = torch.empty(node.shape[:-1], dtype=torch.int64, device=node.device)
    out[..., -1] = msg.argmin(-1)
    for c in range(node.shape[-2] - 1, 0, -1):
        out[..., c - 1] = back[c - 1].gather(-1, out[..., c, None]).squeeze(-1)
    labels[:, rows] = out


@D.register("grid_mrf_sweeps", "reference")
def grid_mrf_sweeps_reference(unary, wv, wh, pairwise, labels, *, max_sweeps):
    """Whole-batch torch moves: each item's unary and weights repeated, all rows of one
    parity of every item at once; the columns as the rows of the transposed problem (its
    chains run downwards, its neighbouring lines are the columns beside: V keeps its sense)."""
    reps = labels.shape[0] // unary.shape[0]
    u, v, hz = (x.repeat(reps, *[1] * (x.dim() - 1)) for x in (unary, wv, wh))
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
    return labels


# ---------------------------------------------------------------- public


def grid_mrf_sweeps(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, pairwise: torch.Tensor,
                    labels: torch.Tensor, *, max_sweeps: int, backend: str = "auto", tag: str = "mix") -> torch.Tensor:
    """Descend each of the T = k N labellings in ``labels`` (int64 (T, h, w), contiguous,
    item t of sample t % N), in place, and return it. unary float64 (N, h, w, L), wv
    (N, h - 1, w), wh (N, h, w - 1), pairwise (L, L), contiguous, on the labels' device;
    every entry finite (``mix.grid_mrf.solve_grid_mrf`` checks)."""
    for name, x, dt in (("unary", unary, torch.float64), ("wv", wv, torch.float64), ("wh", wh, torch.float64),
                        ("pairwise", pairwise, torch.float64), ("labels", labels, torch.int64)):
        if not isinstance(x, torch.Tensor) or x.dtype != dt or not x.is_contiguous() or x.device != labels.device:
            raise ValueError(f"{name} must be a contiguous {dt} tensor on {labels.device}, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} on {getattr(x, 'device', '?')}")
    n, h, w, nl = unary.shape
    if labels.dim() != 3 or tuple(labels.shape[1:]) != (h, w) or labels.shape[0] % max(n, 1):
        raise ValueError(f"labels must be (k * {n}, {h}, {w}), got {tuple(labels.shape)}")
    fn = D.pick("grid_mrf_sweeps", backend, labels.device)
    with nvtx_range(f"{tag}/grid_mrf"):
        return fn(unary, wv, wh, pairwise, labels, max_sweeps=int(max_sweeps))
