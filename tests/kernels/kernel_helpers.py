"""Shared by the kernel tests: the seed of the run's random inputs (DALI_SNAPMIX_TEST_SEED
replays a failure), the tolerances, random boxes."""

import os

import torch

SEED = int(os.environ.get("DALI_SNAPMIX_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))  # replay a failure
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def rand_boxes(g, n, H, W, *, allow_empty=True):
    y0 = torch.randint(0, H + (1 if allow_empty else 0), (n,), generator=g)
    x0 = torch.randint(0, W + (1 if allow_empty else 0), (n,), generator=g)
    lo = 0 if allow_empty else 1
    y1 = y0 + (torch.randint(0, 1 << 30, (n,), generator=g) % (H - y0 + 1 - lo) + lo)
    x1 = x0 + (torch.randint(0, 1 << 30, (n,), generator=g) % (W - x0 + 1 - lo) + lo)
    return torch.stack([y0, y1.clamp(max=H), x0, x1.clamp(max=W)], 1)


