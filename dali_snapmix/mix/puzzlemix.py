"""PuzzleMix (Kim, Choo and Song, "Puzzle Mix: Exploiting Saliency and Local Statistics
for Optimal Mixup", ICML 2020): a mask on a coarse grid that keeps each image's salient
blocks, found by a labelling energy, and the salient blocks moved to where they show.

    s = channel-RMS of the input gradient of the clean batch's loss, pooled to an n x n
        grid and normalised to sum 1 (u_a; the partner's u_b = u_a[perm])
    z = argmin over masks in {1, 1/2, 0}^(n x n) (n_labels 3) of
        sum_p [z_p u_b(p) + (1 - z_p) u_a(p)]               the saliency each image loses
        + eta / n^2 sum_p -log Binomial(z_p | lam)          the mask's mean near lam
        + sum_(p, q neighbours) (beta' + gamma' d_pq) (z_p - z_q)^2 / (L - 1)^2 ...
          (label smoothness, beta' = beta / (16 n); image smoothness across the block
          boundary, as the release rewrites it into unaries and one edge weight)
    Pi_a, Pi_b = the release's greedy transport of each image's salient blocks onto the
        blocks its mask shows (t_eps x squared grid distance against saliency)
    x~ = z (.) Pi_a x_a + (1 - z) (.) Pi_b x_b;   labels (y_a, y_b) weighted (mean z, 1 - mean z)

Facts from the official release (snu-mllab/PuzzleMix, ``mixup.py``, ``imagenet/train.py``):
one coin (``mixup_prob`` 1.0), lam ~ Beta(1, 1), a random permutation and the grid side n
drawn from {2, 4, 8, 16} per batch, in that order; beta 1.2, gamma 0.5, eta 0.2, n_labels 3,
transport on the mask's grid with t_eps 0.8; ``neigh_size`` 2 (the ImageNet code's, for
224-pixel images; the CIFAR code's 4 is for 32 pixels); the saliency pass in eval mode
(its ``clean_lam`` 0: the trainer's ``--clean-lam`` keeps a clean loss instead).

What differs from the release, on purpose:
* The labelling. The release solves each sample's energy on the host with gco's
  alpha-beta swap, after rounding its costs to integers; here every sample at once on the
  batch's device (:func:`~dali_snapmix.mix.grid_mrf.solve_grid_mrf`: exact row and
  column moves from several starts) on the float energy. Both find local minima; the
  tests compare with every labelling of small grids and with gco on PuzzleMix's grids.
* The transport is the release's algorithm (``n`` rounds of each block's cheapest target,
  the cheapest claimant of a target winning, losers' claims penalised by 1), batched as
  the release's; its plan is kept as, for each target block, the index of the block moved
  there, and applied by a gather instead of a 0/1 matrix product (equal values). As in the
  release a target no block won after the last round is left empty (zero: the normalised
  mean colour); ``empty`` counts them.
* Images whose side n does not divide are refused (the release assumes it); where
  ``neigh_size`` does not divide a block's side (3-pixel blocks, say), the image smoothness
  pools by its largest divisor below it (the release fails there).
* A sample whose saliency is zero everywhere (its loss saturated: the input gradient
  underflows) keeps a zero map, where the release divides by its zero sum (NaN costs).
* Not implemented: the adversarial variant (``adv_p``, 0 by default) and ``t_size`` other
  than the mask's grid (the default, -1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import torch
import torch.nn.functional as F

from ..data.spec import IMAGENET_MEAN, IMAGENET_STD, check_normalisation, unnormalise
from .base import MixedBatch, MixMethod, check_prob
from .grid_mrf import solve_grid_mrf
from .params import MaskParams, _check_perm, _check_tensor, check_grid, coin, permutation
from .saliency import input_gradient

__all__ = ["PuzzleMaskParams", "PuzzleMix", "PuzzleParams", "move_blocks", "puzzle_energy", "puzzle_transport"]

BLOCK_NUMS = (2, 4, 8, 16)


@dataclass(frozen=True)
class PuzzleParams:
    """PuzzleMix before its saliency pass: ``mix`` (the coin), ``perm`` int64 (N,), ``lam``
    (the prior's mean of the mask) and ``block_num`` (the grid's side n)."""

    mix: bool
    perm: torch.Tensor
    lam: float
    block_num: int

    def check(self, *, n: int, height: int, width: int) -> None:
        _check_perm(self.perm, n)
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam!r}")
        check_grid(self.block_num, height, width, method="PuzzleMix")


@dataclass(frozen=True)
class PuzzleMaskParams(MaskParams):
    """PuzzleMix's resolved params: MaskParams' ``masks`` (the grid's labels as pixels) and
    ``w_a``, and the transport: ``src_a``, ``src_b`` int64 (N, n * n), for each block of the
    grid in row-major order the block of the sample's own image (of its partner) moved
    there, -1 where none is (the block stays zero)."""

    src_a: torch.Tensor | None = None
    src_b: torch.Tensor | None = None
    block_num: int = 1

    def check(self, *, n: int, height: int, width: int) -> None:
        super().check(n=n, height=height, width=width)
        check_grid(self.block_num, height, width, method="PuzzleMix")
        cells = self.block_num ** 2
        for name, src in (("src_a", self.src_a), ("src_b", self.src_b)):
            _check_tensor(name, src, shape=(n, cells), dtypes=(torch.int64,))
            if n and (int(src.min()) < -1 or int(src.max()) >= cells):
                raise ValueError(f"{name} must hold block indices in [-1, {cells}), got {int(src.min())} .. {int(src.max())}")

    @property
    def empty(self) -> int:
        """Blocks left empty by the transport where their image shows (mask above 0 for the
        own image, below 1 for the partner)."""
        n = self.block_num
        z = self.masks[:, :: self.masks.shape[1] // n, :: self.masks.shape[2] // n].reshape(len(self.masks), -1).cpu()
        return int(((self.src_a.cpu() < 0) & (z > 0)).sum() + ((self.src_b.cpu() < 0) & (z < 1)).sum())

    def move(self, maps: torch.Tensor, side: str) -> torch.Tensor:
        """(N, ..., H, W) maps of the own images (``side`` "a") or of the partners ("b",
        already indexed by perm) moved as the transport moves their blocks."""
        return move_blocks(maps, self.src_a if side == "a" else self.src_b, self.block_num)


def move_blocks(x: torch.Tensor, src: torch.Tensor, block_num: int) -> torch.Tensor:
    """A new (N, ..., H, W) tensor whose block j (row-major, of an n x n grid) is x's block
    src[:, j], zero where src is -1."""
    n = block_num
    *lead, h, w = x.shape
    bh, bw = h // n, w // n
    blocks = x.reshape(*lead, n, bh, n, bw).movedim(-3, -2).reshape(*lead, n * n, bh, bw)  # (N, ..., n*n, bh, bw)
    idx = src.to(x.device).clamp_min(0).view(len(x), *[1] * (len(lead) - 1), n * n, 1, 1)
    out = blocks.gather(-3, idx.expand(*lead, n * n, bh, bw))
    out = out * (src.to(x.device) >= 0).view(len(x), *[1] * (len(lead) - 1), n * n, 1, 1).to(x.dtype)
    return out.reshape(*lead, n, n, bh, bw).movedim(-2, -3).reshape(*lead, h, w)


def _neighbour_penalty(top: torch.Tensor, bottom: torch.Tensor, kh: int, kw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's image smoothness across block boundaries, on pooled images (N, C, h, w):
    the mean absolute difference between the last pooled row of each block of ``top`` and
    the first of the next block down of ``bottom``, averaged along the boundary (and the same
    for columns). (N, n - 1, n) and (N, n, n - 1)."""
    dx = (top[:, :, :-1, :] - bottom[:, :, 1:, :])[:, :, kh - 1 :: kh, :]
    dy = (top[:, :, :, :-1] - bottom[:, :, :, 1:])[:, :, :, kw - 1 :: kw]
    return F.avg_pool2d(dx.abs().mean(1), kernel_size=(1, kw)), F.avg_pool2d(dy.abs().mean(1), kernel_size=(kh, 1))


def puzzle_energy(saliency: torch.Tensor, pixels: torch.Tensor, perm: torch.Tensor, *, block_num: int, lam: float,
                  beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 2, n_labels: int = 3,
                  eps: float = 1e-8) -> tuple[torch.Tensor, ...]:
    """The release's labelling energy of each pair (sample i, partner perm[i]) on an n x n grid
    (the module docstring), float64 on the inputs' device: ``(unary (N, n, n, L), wv (N, n - 1, n),
    wh (N, n, n - 1), pairwise (L, L), u_a (N, n, n))``; label l is the mask 1 - l / (L - 1).
    ``saliency`` (N, H, W) the raw input-gradient maps, ``pixels`` (N, C, H, W) the images
    un-normalised (0..1)."""
    n = block_num
    nb, h, w = saliency.shape
    check_grid(n, h, w, method="PuzzleMix")
    bh, bw = h // n, w // n
    if not isinstance(neigh_size, int) or neigh_size < 1:
        raise ValueError(f"neigh_size must be a positive int, got {neigh_size!r}")
    # the release takes min(neigh_size, block) and fails unless it divides the block; here the
    # largest divisor of the block's side up to neigh_size (the same wherever the release runs)
    nh, nw = (max(d for d in range(1, min(neigh_size, b) + 1) if b % d == 0) for b in (bh, bw))
    beta = beta / n / 16
    perm = perm.to(saliency.device)
    pooled = F.avg_pool2d(saliency.double(), (bh, bw))
    u_a = pooled / pooled.flatten(1).sum(1).clamp_min(1e-300).view(nb, 1, 1)  # an all-zero map stays zero
    u_b = u_a[perm]
    px_a = F.avg_pool2d(pixels.double(), (nh, nw))
    px_b = px_a[perm]
    kh, kw = bh // nh, bw // nw
    pen = {(i, j): _neighbour_penalty(top, bottom, kh, kw)  # (upper / left source, lower / right source), 1 = own
           for i, top in ((0, px_b), (1, px_a)) for j, bottom in ((0, px_b), (1, px_a))}
    px = {k: beta * gamma * v[0] for k, v in pen.items()}
    py = {k: beta * gamma * v[1] for k, v in pen.items()}
    own, other = u_a.clone(), u_b.clone()
    # the release's rewriting of the two-source boundary costs into unaries and one edge weight
    other[:, :-1, :] += (px[1, 0] + px[1, 1]) / 2
    own[:, :-1, :] += (px[0, 1] + px[0, 0]) / 2
    other[:, 1:, :] += (px[0, 1] + px[1, 1]) / 2
    own[:, 1:, :] += (px[1, 0] + px[0, 0]) / 2
    other[:, :, :-1] += (py[1, 0] + py[1, 1]) / 2
    own[:, :, :-1] += (py[0, 1] + py[0, 0]) / 2
    other[:, :, 1:] += (py[0, 1] + py[1, 1]) / 2
    own[:, :, 1:] += (py[1, 0] + py[0, 0]) / 2
    wv = (px[1, 0] + px[0, 1] - px[1, 1] - px[0, 0]) / 2 + beta
    wh = (py[1, 0] + py[0, 1] - py[1, 1] - py[0, 0]) / 2 + beta
    k = n_labels - 1
    prior = torch.tensor([-np.log(comb(k, i) * lam ** (k - i) * (1 - lam) ** i + eps) for i in range(n_labels)],
                         dtype=torch.float64, device=saliency.device) * (eta / n**2)
    share = torch.linspace(0, 1, n_labels, dtype=torch.float64, device=saliency.device)  # 1 - mask
    unary = (1 - share) * other[..., None] + share * own[..., None] + prior
    levels = torch.arange(n_labels, dtype=torch.float64, device=saliency.device)
    pairwise = (levels[:, None] - levels[None, :]) ** 2 / k**2
    return unary, wv, wh, pairwise, u_a


def _grid_cost(n: int, device) -> torch.Tensor:
    """(n^2, n^2) squared distance between blocks over (n - 1)^2, the release's transport cost."""
    r = torch.arange(n * n, device=device)
    i, j = r // n, r % n
    return (((i[:, None] - i[None, :]) ** 2 + (j[:, None] - j[None, :]) ** 2) / max(n - 1, 1) ** 2).float()


def puzzle_transport(mask: torch.Tensor, saliency: torch.Tensor, *, eps: float = 0.8) -> torch.Tensor:
    """The release's transport plan, int64 (N, n * n): for each block the block moved there
    (-1: none). ``mask`` (N, n, n) the image's weights on the grid, ``saliency`` (N, n, n) its
    pooled saliency. n rounds: each block claims its cheapest target (cost t_eps x distance,
    less its saliency where the mask shows the image), each target goes to its cheapest
    claimant, a loser's claim costs 1 more the next round; the last round's winners move."""
    nb, n, _ = mask.shape
    cells = n * n
    z = (mask > 0).float().reshape(nb, 1, cells)
    cost = eps * _grid_cost(n, mask.device) - saliency.float().reshape(nb, cells, 1) * z  # (N, from, to)
    for _ in range(n):
        target = cost.argmin(-1)  # (N, from)
        claim = torch.zeros_like(cost).scatter_(-1, target[..., None], 1.0)
        winner = (claim * cost).argmin(-2)  # (N, to): the claimant of least cost (an unclaimed 0 beats a positive claim)
        won = claim.gather(-2, winner[:, None, :]).squeeze(-2) > 0  # (N, to): that row really claimed it
        lose = claim.clone()
        lose.scatter_(-2, winner[:, None, :], 0.0)
        cost += lose
    return torch.where(won, winner, torch.full_like(winner, -1))


class PuzzleMix(MixMethod):
    name = "puzzlemix"
    params_type = PuzzleParams

    def __init__(self, *, prob: float = 1.0, alpha: float = 1.0, block_nums: tuple[int, ...] = BLOCK_NUMS,
                 beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 2, n_labels: int = 3,
                 transport: bool = True, t_eps: float = 0.8, saliency_bn: str = "eval", mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, max_sweeps: int = 20, num_classes: int | None = None, seed: int | None = None) -> None:
        super().__init__(num_classes=num_classes, seed=seed)
        self.prob = check_prob(prob)
        if not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha (lam ~ Beta(alpha, alpha)) must be > 0, got {alpha!r}")
        self.alpha = float(alpha)
        block_nums = tuple(block_nums) if isinstance(block_nums, (tuple, list)) else (block_nums,)
        if not block_nums or any(not isinstance(b, int) or b < 2 for b in block_nums):
            raise ValueError(f"block_nums must be grid sides >= 2, got {block_nums!r}")
        for name, v in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps)):
            if not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not isinstance(neigh_size, int) or neigh_size < 1:
            raise ValueError(f"neigh_size must be a positive int, got {neigh_size!r}")
        if n_labels not in (2, 3, 4):
            raise ValueError(f"n_labels must be 2, 3 or 4 (the release's), got {n_labels!r}")
        if saliency_bn not in ("train", "eval"):
            raise ValueError(f"saliency_bn must be 'train' or 'eval', got {saliency_bn!r}")
        self.block_nums, self.beta, self.gamma, self.eta, self.t_eps = block_nums, float(beta), float(gamma), float(eta), float(t_eps)
        self.neigh_size, self.n_labels, self.transport, self.saliency_bn = neigh_size, n_labels, bool(transport), saliency_bn
        self.mean, self.std = check_normalisation(mean, std)
        self.max_sweeps = int(max_sweeps)

    @property
    def resolved_type(self) -> type:
        return PuzzleMaskParams

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> PuzzleParams:
        """Draw, in the release's order: the coin, lam ~ Beta(alpha, alpha), the partners, the grid."""
        mix = coin(rng, self.prob)
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = permutation(rng, len(images))
        block_num = int(self.block_nums[rng.integers(len(self.block_nums))])
        return PuzzleParams(mix=mix, perm=perm, lam=lam, block_num=block_num)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        return unnormalise(images, self.mean, self.std)

    def masks_from(self, saliency: torch.Tensor, images: torch.Tensor, params: PuzzleParams) -> PuzzleMaskParams:
        """The mixed batch's params from the raw saliency (N, H, W): the labelling, the
        transport, the masks as pixels and their means."""
        n, h, w = params.block_num, images.shape[2], images.shape[3]
        with torch.no_grad():
            unary, wv, wh, pw, u_a = puzzle_energy(
                saliency, self.pixels(images), params.perm, block_num=n, lam=params.lam, beta=self.beta,
                gamma=self.gamma, eta=self.eta, neigh_size=self.neigh_size, n_labels=self.n_labels)
            grid = 1.0 - solve_grid_mrf(unary, wv, wh, pw, max_sweeps=self.max_sweeps).double() / (self.n_labels - 1)
            grid = grid.float()
            if self.transport:
                src_a = puzzle_transport(grid, u_a, eps=self.t_eps)
                src_b = puzzle_transport(1 - grid, u_a[params.perm.to(u_a.device)], eps=self.t_eps)
            else:
                src_a = src_b = torch.arange(n * n, device=grid.device).expand(len(grid), n * n)
            masks = grid.repeat_interleave(h // n, 1).repeat_interleave(w // n, 2)
        return PuzzleMaskParams(mix=True, perm=params.perm, masks=masks, w_a=grid.mean((1, 2)).cpu(),
                                src_a=src_a.cpu(), src_b=src_b.cpu(), block_num=n)

    def resolve(self, images: torch.Tensor, labels: torch.Tensor, params, *, model=None) -> PuzzleMaskParams:
        """PuzzleParams' masks and transport from the model's saliency (one forward and
        backward of the clean batch); resolved params as given."""
        if isinstance(params, PuzzleMaskParams):
            return params
        nb, _, h, w = images.shape
        if not params.mix:
            ident = torch.arange(params.block_num ** 2).expand(nb, -1)
            return PuzzleMaskParams(mix=False, perm=torch.arange(nb), masks=torch.ones(nb, h, w), w_a=torch.ones(nb),
                                    src_a=ident, src_b=ident, block_num=params.block_num)
        if model is None:
            raise ValueError("PuzzleMix's saliency is the model's input gradient: apply it with model=")
        return self.masks_from(self.saliency(images, labels, model=model), images, params)

    def saliency(self, images: torch.Tensor, labels: torch.Tensor, *, model) -> torch.Tensor:
        """The raw saliency (N, H, W): the input gradient's channel RMS (one forward and
        backward of the clean batch, BatchNorm as ``saliency_bn``)."""
        return input_gradient(model, images, labels, bn=self.saliency_bn)

    def _apply(self, images, labels, params, *, model=None, backend: str = "auto", geometry=None) -> MixedBatch:
        params = self.resolve(images, labels, params, model=model)
        if not params.mix:
            return self.unmixed(images, labels)
        dev = images.device
        perm = params.perm.to(dev)
        m = params.masks.to(dev)[:, None]
        own = params.move(images.float(), "a")
        other = params.move(images[perm].float(), "b")
        images.copy_((m * own + (1 - m) * other).to(images.dtype))
        return MixedBatch.with_partner(images, labels, params.perm, w_a=params.w_a)
