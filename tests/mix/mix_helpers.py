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


def assert_close(got, want, tol=1e-5):
    assert (got.double() - want.double()).abs().max() <= tol, (SEED, got, want)
