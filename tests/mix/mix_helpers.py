"""Shared by the mixing tests: the run's seed (fresh every run, printed on failure),
random batches, a small model, the tolerance check."""

import os

import numpy as np
import torch

from dali_snapmix.models import SmallCNN

SEED = int.from_bytes(os.urandom(4), "little")


def batch(rng, n=6, size=40, classes=4):
    x = torch.from_numpy(rng.standard_normal((n, 3, size, size)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, classes, n).astype(np.int64))
    return x, y


def model(classes=4, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(classes, width=8).train()


def peaked_saliency(rng, n, h, w):
    """Saliency like a network's: a few bright blobs on a faint floor, float32 (n, h, w)."""
    yy, xx = np.mgrid[:h, :w]
    out = 0.05 * rng.random((n, h, w))
    for _ in range(3):
        cy, cx, s = rng.random((n, 1, 1)) * h, rng.random((n, 1, 1)) * w, 3 + rng.random((n, 1, 1)) * h / 5
        out = out + np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))
    return torch.from_numpy(out.astype(np.float32))


def assert_close(got, want, tol=1e-5):
    assert (got.double() - want.double()).abs().max() <= tol, (SEED, got, want)
