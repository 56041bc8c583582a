"""Co-Mixup (Kim, Choo, Jeong and Song, "Co-Mixup: Saliency Guided Joint Mixup with
Supermodular Diversity", ICLR 2021): the outputs of a group of inputs built jointly, each
assembled block by block from the group's inputs, so that together they keep the inputs'
salient blocks and differ from each other.

For a group (partition) of P inputs and P outputs on an n x n grid, output i's labelling
z_i gives each block one input (or, from the second round, half of each of two):

    minimise  sum_i sum_p c(z_i(p), p)                     saliency lost: c_j = -s_j / sum s_j
              - eta' sum_i sum_p log pi(z_i(p))           pi ~ Dirichlet(alpha), one draw per group
              + beta' sum_i sum_(p~q) [z_i(p) != z_i(q)]  label smoothness
              + gamma' sum_(i != i') o_i^T A o_i'         diversity: o_i output i's block counts
                                                          per input, A = (1 - omega) I + omega D
    (beta', gamma', eta' = beta, gamma, eta / n^2; D the L1 distances between the inputs'
    saliency peaks scaled to mean 1)

solved as the release solves it: from a random labelling, each output in turn is
re-labelled with the others fixed, the diversity term made modular around them
(2 gamma' [A p > tau n^2] A p per block of input j, p the others' counts: the hard
threshold), for ``niter`` rounds, stopping early when the objective stops changing. From
the second round an output that uses two inputs may also give a block half of each (three
or more: half of each of two of its three most used), at the mean cost less 5e-4 and a
quarter of the smoothness cost to its parts. After the last round but one
(``set_resolve``) outputs that use the same set of inputs get a cost on one of them each.
Each output's labels are its group's P inputs' labels, weighted by the share of its blocks
each gives (K = P on the label contract; inputs it does not use weigh 0).

Release facts (snu-mllab/Co-Mixup, ``main.py``, ``mixup.py``, ``match.py``): groups of 20
consecutive images (``m_part``), n = 4 (``m_block_num``; -1 draws it from {2, 4, 8, 16}),
beta 0.32, gamma 1.0, tau 0.83 (hard), eta 0.05, Dirichlet alpha 2.0, omega 0.001,
``niter`` 4, ``set_resolve`` on; saliency the channel RMS of the clean batch's input
gradient, in train mode with its default ``clean_lam`` 1 (eval mode with 0: here
``saliency_bn``, which the trainer sets from ``--clean-lam``), average-pooled to the grid;
the peaks from an 8 x 8 stride-1 average's argmax. It trains with BCE on softmax
(``--loss bce``) and ``clean_lam`` 1 (``--clean-lam 1``).

What differs from the release, on purpose:
* Each output's re-labelling is solved on the batch's device by
  :func:`~dali_snapmix.mix.grid_mrf.solve_grid_mrf` (exact row and column moves) from two
  starts, the output's current labelling and the costs' own best labels, instead of gco's
  alpha-beta swap on the host from a constant labelling (costs rounded to integers); both
  find local minima of the same per-output energy, and starting from the current labelling
  an output's step never raises its energy. Outputs are re-labelled one after another in
  the release's order: what couples them is the point of the method.
* A last group smaller than ``part`` is mixed within itself (the release reshapes by the
  full batch size and needs full batches); images need sides n divides (square or not:
  blocks of H/n x W/n; the release pools square blocks of W/n).
* Where the release would divide by zero it does not: a zero saliency map (a saturated
  loss) costs nothing anywhere; a group whose peaks all coincide (or of one image) has
  A = (1 - omega) I.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .base import MixedBatch, MixMethod, check_prob
from .grid_mrf import solve_grid_mrf
from .params import _check_tensor, check_grid, coin
from .saliency import input_gradient

__all__ = ["CoMixMaskParams", "CoMixParams", "CoMixup", "comix_cost", "comix_masks", "comix_objective",
           "comix_relabel", "compatibility"]

HALF_PAIRS = ((0, 1), (0, 2), (1, 2))  # the half labels of an output's three most used inputs (in input order)
HALF_BONUS = 5e-4  # a half label's cost is its parts' mean less this (the release's)


@dataclass(frozen=True)
class CoMixParams:
    """Co-Mixup before its saliency pass: ``mix`` (the coin), ``block_num`` (the grid's
    side n), ``part`` (the group size), ``prior`` float64 (N,), each input's share in its
    group's Dirichlet draw, and ``init`` int64 (N, n, n), each output's first labelling
    (indices into its group)."""

    mix: bool
    block_num: int
    part: int
    prior: torch.Tensor
    init: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        check_grid(self.block_num, height, width, method="Co-Mixup")
        if not isinstance(self.part, int) or self.part < 1:
            raise ValueError(f"part must be a positive int, got {self.part!r}")
        _check_tensor("prior", self.prior, shape=(n,), dtypes=(torch.float64,))
        if n and not bool(((self.prior >= 0) & (self.prior <= 1)).all()):
            raise ValueError(f"prior must hold shares in [0, 1], got {float(self.prior.min())} .. {float(self.prior.max())}")
        b = self.block_num
        _check_tensor("init", self.init, shape=(n, b, b), dtypes=(torch.int64,))
        for g0 in range(0, n, self.part):
            size = min(self.part, n - g0)
            got = self.init[g0:g0 + size]
            if int(got.min()) < 0 or int(got.max()) >= size:
                raise ValueError(f"init of the group starting at image {g0} must index its {size} inputs, got "
                                 f"{int(got.min())} .. {int(got.max())}")


@dataclass(frozen=True)
class CoMixMaskParams:
    """Co-Mixup's resolved params: ``weights`` float32 (N, n, n, P), each output block's
    weight of each input of its group (P = min(part, N) columns, input g0 + k of the group
    starting at g0 in column k; each block one-hot or 0.5 / 0.5), ``part`` and ``mix``."""

    mix: bool
    part: int
    weights: torch.Tensor

    def check(self, *, n: int, height: int, width: int) -> None:
        w = self.weights
        if not isinstance(w, torch.Tensor) or w.dim() != 4:
            raise ValueError(f"weights must be (N, n, n, P), got shape {tuple(getattr(w, 'shape', ()))}")
        b, cols = w.shape[1], min(self.part, n)
        _check_tensor("weights", w, shape=(n, b, b, cols), dtypes=(torch.float32,))
        check_grid(b, height, width, method="Co-Mixup")
        bad = ~((w >= 0) & (w <= 1)) | ((w.sum(-1, keepdim=True) - 1).abs() > 1e-5)
        if bool(bad.any()):
            i = tuple(int(v) for v in bad.nonzero()[0][:3])
            raise ValueError(f"each block's weights must be in [0, 1] and sum to 1, got {w[i].tolist()} at block {list(i)}")
        for g0 in range(0, n, self.part):  # a short last group has no inputs past the batch's end
            size = min(self.part, n - g0)
            if size < cols and bool((w[g0:g0 + size, ..., size:] != 0).any()):
                raise ValueError(f"the group starting at image {g0} has {size} inputs, but its weights use columns "
                                 f"{size} .. {cols - 1}")

    @property
    def block_num(self) -> int:
        return self.weights.shape[1]

    def sources(self, device=None) -> torch.Tensor:
        """int64 (N, P): the batch index of each weight column's input (a short last group's
        missing inputs point at the batch's last image; their weights are 0)."""
        n, cols = self.weights.shape[0], self.weights.shape[3]
        first = torch.arange(n, device=device) // self.part * self.part
        return (first[:, None] + torch.arange(cols, device=device)).clamp_max(n - 1)

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs (N, C, H, W) float32 from the inputs x (N, C, H, W): each output block
        its group's inputs' same block, weighted (group by group, block by block: no
        (N, P, C, H, W) intermediate)."""
        N, c, h, w = x.shape
        wts = self.weights.to(x.device)
        n = wts.shape[1]
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for g0 in range(0, N, self.part):
            g = slice(g0, min(g0 + self.part, N))
            blocks = x[g].float().reshape(-1, c, n, h // n, n, w // n)
            out[g] = torch.einsum("oijp,pciyjx->ociyjx", wts[g, ..., :len(blocks)], blocks).reshape(-1, c, h, w)
        return out


def compatibility(saliency: torch.Tensor) -> torch.Tensor:
    """The release's distances (N, N) float64: L1 between the images' saliency peaks (the
    argmax of an 8 x 8 average with stride 1, in row-major order: the first on ties)."""
    z = F.avg_pool2d(saliency[:, None].float(), kernel_size=8, stride=1)[:, 0]
    idx = z.flatten(1).argmax(1)
    yx = torch.stack([idx // z.shape[-1], idx % z.shape[-1]], 1).double()
    return (yx[:, None] - yx[None]).abs().sum(-1)


def comix_cost(saliency: torch.Tensor, block_num: int) -> torch.Tensor:
    """Each input's cost per block, float64 (P, n, n): minus its saliency pooled to the
    grid, normalised to sum 1 over the grid (0 for a zero map)."""
    h, w = saliency.shape[1:]
    sc = F.avg_pool2d(saliency.double()[:, None], (h // block_num, w // block_num))[:, 0]
    total = sc.flatten(1).sum(1).view(-1, 1, 1)
    return -torch.where(total > 0, sc / total.clamp_min(1e-300), torch.zeros_like(sc))


def comix_objective(cost: torch.Tensor, onehot: torch.Tensor, *, beta: float, gamma: float) -> torch.Tensor:
    """The objective without its threshold (the release's ``obj_fn``, by which it stops):
    cost (P, n, n), onehot (P_out, n, n, P) of one group, beta and gamma already divided by
    n^2. float64 scalar."""
    c, m = cost.double(), onehot.double()
    counts = m.flatten(1, 2).sum(1)  # (P_out, P)
    loss = (c.permute(1, 2, 0)[None] * m).sum()
    loss = loss + beta / 2 * (((m[:, :-1] - m[:, 1:]) ** 2).sum() + ((m[:, :, :-1] - m[:, :, 1:]) ** 2).sum())
    return loss + gamma * ((counts.sum(0) ** 2).sum() - (counts ** 2).sum())


def comix_relabel(cost: torch.Tensor, current: torch.Tensor, *, beta: float, soft: bool) -> torch.Tensor:
    """One output's new labelling, float64 (n, n, P) one-hot or half / half, for its costs
    (n, n, P) (modular diversity term included) and its current labelling ``current``
    (n, n, P): Potts smoothness ``beta`` per edge of different labels; with ``soft``, the
    half labels of the inputs ``current`` uses (two of them: one half label; three or more:
    the three half pairs of its three most used, each a quarter of the smoothness cost to
    its two parts)."""
    n, _, P = cost.shape
    dev = cost.device
    count = current.flatten(0, 1).sum(0)
    used = torch.nonzero(count > 0).flatten()
    pairs: list[tuple[int, int]] = []
    if soft and len(used) >= 2:
        if len(used) >= 3:  # the three most used, in input order, as the release's boolean mask
            used = torch.sort(torch.topk(count, k=3).indices).values
            pairs = [(int(used[a]), int(used[b])) for a, b in HALF_PAIRS]
        else:
            pairs = [(int(used[0]), int(used[1]))]
    L = P + len(pairs)
    pw = 1.0 - torch.eye(L, dtype=torch.float64, device=dev)
    unary = cost.double()
    if pairs:
        a, b = (torch.tensor(v, device=dev) for v in zip(*pairs))
        unary = torch.cat([unary, (unary[..., a] + unary[..., b]) / 2 - HALF_BONUS], -1)
        k = torch.arange(P, L, device=dev)
        pw[k, a] = pw[a, k] = pw[k, b] = pw[b, k] = 0.25
    init = current.argmax(-1)
    for k, (a, b) in enumerate(pairs):  # a half block of the same pair starts as that pair's label
        init[(current[..., a] == 0.5) & (current[..., b] == 0.5)] = P + k
    wv = torch.full((1, n - 1, n), beta, dtype=torch.float64, device=dev)
    wh = torch.full((1, n, n - 1), beta, dtype=torch.float64, device=dev)
    lab = solve_grid_mrf(unary[None], wv, wh, pw, init=init[None])[0]
    out = F.one_hot(lab.clamp_max(P - 1), P).double() * (lab < P)[..., None]
    for k, (a, b) in enumerate(pairs):
        half = (lab == P + k).double() * 0.5
        out[..., a] += half
        out[..., b] += half
    return out


def _resolve_label(used: torch.Tensor) -> torch.Tensor:
    """The release's post-processing (P_out, P) for the outputs' used-input indicators:
    of each pair of outputs using the same set of two or more inputs, the first's first
    input and the second's second cost 1 more (times gamma')."""
    add = torch.zeros_like(used)
    same = torch.triu((used[:, None] == used[None]).all(-1), diagonal=1)
    for i1, i2 in same.nonzero().tolist():
        nz = used[i1].nonzero().flatten()
        if len(nz) > 1:
            add[i1, nz[0]] = 1.0
            add[i2, nz[1]] = 1.0
    return add


def comix_masks(saliency: torch.Tensor, a_dist: torch.Tensor, prior: torch.Tensor, init: torch.Tensor, *,
                beta: float = 0.32, gamma: float = 1.0, eta: float = 0.05, thres: float = 0.83, omega: float = 0.001,
                niter: int = 4, set_resolve: bool = True) -> torch.Tensor:
    """One group's labelling, float64 (P, n, n, P) on the saliency's device: saliency
    (P, H, W) raw, a_dist (P, P) the peaks' distances, prior (P,) the Dirichlet draw,
    init int64 (P, n, n)."""
    P, n = init.shape[0], init.shape[1]
    dev = saliency.device
    a_dist = a_dist.double().to(dev)
    total = a_dist.sum()
    a_part = a_dist / total * P if float(total) > 0 else torch.zeros_like(a_dist)
    A = (1 - omega) * torch.eye(P, dtype=torch.float64, device=dev) + omega * a_part
    thres, beta, gamma, eta = thres * n * n, beta / (n * n), gamma / (n * n), eta / (n * n)
    cost = comix_cost(saliency, n) - eta * torch.log(prior.double().to(dev) + 1e-8).view(P, 1, 1)
    onehot = F.one_hot(init.to(dev), P).double()
    loss_prev = comix_objective(cost, onehot, beta=beta, gamma=gamma)
    others = onehot.flatten(0, 2).sum(0)  # (P,) every output's counts, less the one re-labelled below
    add_cost = None
    unary = cost.permute(1, 2, 0)
    for it in range(niter):
        for i in range(P):
            others = others - onehot[i].flatten(0, 1).sum(0)
            ap = A @ others
            c = unary + 2 * gamma * (ap > thres).double() * ap
            if add_cost is not None:
                c = c + gamma * add_cost[i]
            onehot[i] = comix_relabel(c, onehot[i], beta=beta, soft=it > 0)
            others = others + onehot[i].flatten(0, 1).sum(0)
        if it == niter - 2 and set_resolve:
            add_cost = _resolve_label((onehot.flatten(1, 2).sum(1) > 0).double())
        loss = comix_objective(cost, onehot, beta=beta, gamma=gamma)
        if float((loss_prev - loss).abs() / loss.abs()) < 1e-6:
            break
        loss_prev = loss
    return onehot


class CoMixup(MixMethod):
    name = "comixup"
    params_type = CoMixParams

    def __init__(self, *, prob: float = 1.0, part: int = 20, block_num: int = 4, beta: float = 0.32, gamma: float = 1.0,
                 eta: float = 0.05, thres: float = 0.83, alpha: float = 2.0, omega: float = 0.001, niter: int = 4,
                 set_resolve: bool = True, saliency_bn: str = "eval", num_classes: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob = check_prob(prob)
        if not isinstance(part, int) or isinstance(part, bool) or part < 1:
            raise ValueError(f"part (the group size) must be a positive int, got {part!r}")
        if not isinstance(block_num, int) or isinstance(block_num, bool) or (block_num < 1 and block_num != -1):
            raise ValueError(f"block_num must be a grid side >= 1 (-1: drawn from 2, 4, 8, 16), got {block_num!r}")
        for name, v in (("beta", beta), ("gamma", gamma), ("eta", eta), ("thres", thres)):
            if not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not isinstance(omega, (int, float)) or not 0 <= omega <= 1:
            raise ValueError(f"omega must be in [0, 1], got {omega!r}")
        if not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha (the Dirichlet prior's) must be > 0, got {alpha!r}")
        if not isinstance(niter, int) or niter < 1:
            raise ValueError(f"niter must be an int >= 1, got {niter!r}")
        if saliency_bn not in ("train", "eval"):
            raise ValueError(f"saliency_bn must be 'train' or 'eval', got {saliency_bn!r}")
        self.part, self.block_num, self.alpha, self.niter = part, block_num, float(alpha), niter
        self.beta, self.gamma, self.eta, self.thres, self.omega = float(beta), float(gamma), float(eta), float(thres), float(omega)
        self.set_resolve, self.saliency_bn = bool(set_resolve), saliency_bn

    @property
    def resolved_type(self) -> type:
        return CoMixMaskParams

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> CoMixParams:
        """Draw, in this order: the coin, the grid (``block_num`` -1), then for each group
        its Dirichlet prior and its outputs' first labellings."""
        N = len(images)
        mix = coin(rng, self.prob)
        n = int(2 ** rng.integers(1, 5)) if self.block_num == -1 else self.block_num
        prior, init = [np.zeros(0)], [np.zeros((0, n, n), dtype=np.int64)]
        for g0 in range(0, N, self.part):
            size = min(self.part, N - g0)
            prior.append(rng.dirichlet(np.full(size, self.alpha)))
            init.append(rng.integers(0, size, (size, n, n)))
        return CoMixParams(mix=mix, block_num=n, part=self.part, prior=torch.from_numpy(np.concatenate(prior)),
                           init=torch.from_numpy(np.concatenate(init)).long())

    def masks_from(self, saliency: torch.Tensor, params: CoMixParams) -> CoMixMaskParams:
        """The resolved params from the raw saliency (N, H, W), each group solved on the
        saliency's device."""
        N = len(saliency)
        n, P = params.block_num, min(params.part, N)
        weights = torch.zeros(N, n, n, P, dtype=torch.float32, device=saliency.device)
        a_dist = compatibility(saliency)
        with torch.no_grad():
            for g0 in range(0, N, params.part):
                g = slice(g0, min(g0 + params.part, N))
                m = comix_masks(saliency[g], a_dist[g, g], params.prior[g], params.init[g], beta=self.beta,
                                gamma=self.gamma, eta=self.eta, thres=self.thres, omega=self.omega, niter=self.niter,
                                set_resolve=self.set_resolve)
                weights[g, ..., :m.shape[-1]] = m.float()
        return CoMixMaskParams(mix=True, part=params.part, weights=weights.cpu())

    def saliency(self, images: torch.Tensor, labels: torch.Tensor, *, model) -> torch.Tensor:
        """The raw saliency (N, H, W): the input gradient's channel RMS (one forward and
        backward of the clean batch, BatchNorm as ``saliency_bn``)."""
        return input_gradient(model, images, labels, bn=self.saliency_bn)

    def resolve(self, images: torch.Tensor, labels: torch.Tensor, params, *, model=None) -> CoMixMaskParams:
        """CoMixParams' labellings from the model's saliency; resolved params as given."""
        if isinstance(params, CoMixMaskParams):
            return params
        N = len(images)
        if not params.mix:  # each output its own input, whole
            w = torch.zeros(N, 1, 1, min(params.part, N))
            w[torch.arange(N), 0, 0, torch.arange(N) % params.part] = 1.0
            return CoMixMaskParams(mix=False, part=params.part, weights=w)
        if model is None:
            raise ValueError("Co-Mixup's saliency is the model's input gradient: apply it with model=")
        return self.masks_from(self.saliency(images, labels, model=model), params)

    def _apply(self, images, labels, params, *, model=None, backend: str = "auto", geometry=None) -> MixedBatch:
        params = self.resolve(images, labels, params, model=model)
        dev = images.device
        if params.mix:
            images.copy_(params.combine(images).to(images.dtype))
        share = params.weights.to(dev).sum((1, 2))
        return MixedBatch(images, labels=labels.to(dev, torch.int64)[params.sources(dev)],
                          weights=(share / share.sum(1, keepdim=True)).float())
