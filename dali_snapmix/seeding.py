"""Every random stream of a run, derived from one seed.

A stream is ``SeedSequence(seed, spawn_key=(purpose tag, epoch, rank))``: NumPy pads the
seed to a fixed width before it appends the spawn key, and the key has a fixed length,
so two different (purpose, epoch, rank) (epoch and rank one 32-bit word each) never feed the same words into the hash (the old
ad-hoc lists [seed, epoch, 1, rank] and [seed, epoch, rank, 1] were the same stream on
rank 1). Tags are fixed numbers: adding a purpose never moves an existing stream.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PURPOSES", "generator", "seed_sequence", "torch_seed"]

PURPOSES = {
    "plan": 0,  # the epoch's sample order (the same on every rank)
    "crops": 1,  # crop offsets and flips
    "mixer": 2,  # the mixing method's coins, partners, boxes, ratios
    "model_init": 3,  # initial weights (the same on every rank: rank 0's stream)
    "globals": 4,  # python / numpy / torch global generators (dropout, DataLoader workers)
    "samples": 5,  # --save-samples' batch, after training
    "fidelity": 6,  # label-fidelity measurement, after training
    "mix_block": 7,  # AutoMix's Mix Block's initial weights
}


def seed_sequence(seed: int, purpose: str, *, epoch: int = 0, rank: int = 0) -> np.random.SeedSequence:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown stream purpose {purpose!r}; choose one of {list(PURPOSES)}")
    for name, v in (("seed", seed), ("epoch", epoch), ("rank", rank)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0 or (name != "seed" and v >= 2**32):
            raise ValueError(f"{name} must be an int >= 0" + ("" if name == "seed" else " and < 2**32") + f", got {v!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(PURPOSES[purpose], int(epoch), int(rank)))


def generator(seed: int, purpose: str, *, epoch: int = 0, rank: int = 0) -> np.random.Generator:
    """A NumPy Generator on the stream of (purpose, epoch, rank)."""
    return np.random.default_rng(seed_sequence(seed, purpose, epoch=epoch, rank=rank))


def torch_seed(seed: int, purpose: str, *, epoch: int = 0, rank: int = 0) -> int:
    """A 63-bit seed for ``torch.manual_seed`` / ``random.seed`` from the same stream."""
    words = seed_sequence(seed, purpose, epoch=epoch, rank=rank).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))
