"""Co-Mixup's joint optimisation against the exact optimum on the largest groups whose
every labelling can be tried: two inputs, two outputs, a 2 x 2 grid, each block input 0,
input 1 or half of each (3^8 joint labellings), the threshold at 0 and A = I, so that
each output's step minimises the objective itself (the release's ``obj_fn``) over that
output. Random peaked saliency, Dirichlet priors and first labellings per group.

    python benchmarks/comix_exact.py --groups 3000

Prints how many groups reached the global minimum and the largest gap (objective units).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from dali_snapmix.mix.comixup import comix_cost, comix_masks, comix_objective

BETA, GAMMA, ETA = 0.32, 1.0, 0.05  # the release's defaults; a 2 x 2 grid divides them by 4


def every_joint_labelling() -> np.ndarray:
    """(3^8, 2 outputs, 2, 2, 2 inputs): every labelling of two outputs' 2 x 2 grids."""
    vals = np.array([[1, 0], [0, 1], [0.5, 0.5]])
    return vals[np.array(list(itertools.product(range(3), repeat=8)))].reshape(-1, 2, 2, 2, 2)


def exact_gaps(rng: np.random.Generator, groups: int) -> np.ndarray:
    """Co-Mixup's objective minus the global minimum, one per random group (>= 0)."""
    joint = every_joint_labelling()
    counts = joint.sum((2, 3))
    b, g = BETA / 4, GAMMA / 4
    smooth = b / 2 * (((joint[:, :, :-1] - joint[:, :, 1:]) ** 2).sum((1, 2, 3, 4))
                      + ((joint[:, :, :, :-1] - joint[:, :, :, 1:]) ** 2).sum((1, 2, 3, 4)))
    diversity = g * 2 * (counts[:, 0] * counts[:, 1]).sum(-1)
    gaps = np.empty(groups)
    for k in range(groups):
        sal = torch.from_numpy(rng.random((2, 16, 16)) ** 3)
        prior = torch.from_numpy(rng.dirichlet([2.0, 2.0]))
        init = torch.from_numpy(rng.integers(0, 2, (2, 2, 2)))
        got = comix_masks(sal, torch.zeros(2, 2), prior, init, beta=BETA, gamma=GAMMA, eta=ETA, thres=0.0, omega=0.0,
                          set_resolve=False)
        cost = comix_cost(sal, 2) - ETA / 4 * torch.log(prior + 1e-8).view(2, 1, 1)
        every = (joint * cost.numpy().transpose(1, 2, 0)[None, None]).sum((1, 2, 3, 4)) + smooth + diversity
        gaps[k] = float(comix_objective(cost, got, beta=b, gamma=g)) - every.min()
    return gaps


def main(argv=None) -> np.ndarray:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    gaps = exact_gaps(np.random.default_rng(a.seed), a.groups)
    hit = gaps <= 1e-12
    print(f"{int(hit.sum())} of {a.groups} groups at the global minimum; largest gap {gaps.max():.3g}, "
          f"mean gap {gaps.mean():.3g} (seed {a.seed})")
    return gaps


if __name__ == "__main__":
    main()
