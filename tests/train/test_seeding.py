"""Every random stream comes from one seed, a purpose tag, the epoch and the rank: no two
share a stream (the old [seed, epoch, 1, rank] crops and [seed, epoch, rank, 1] mixer
lists were one stream on rank 1)."""


import numpy as np
import pytest

from dali_snapmix.data import TransformSpec
from dali_snapmix.data.spec import plan_epoch
from dali_snapmix.seeding import PURPOSES, generator, seed_sequence, torch_seed


@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3])
def test_no_two_purposes_epochs_or_ranks_share_a_stream(seed):
    states = {}
    for purpose in PURPOSES:
        for epoch in (0, 1, 2, 199):
            for rank in range(64):
                s = tuple(seed_sequence(seed, purpose, epoch=epoch, rank=rank).generate_state(4))
                assert s not in states, ((purpose, epoch, rank), states.get(s))
                states[s] = (purpose, epoch, rank)
    assert len(states) == len(PURPOSES) * 4 * 64


def test_seeds_differ_and_tags_are_fixed():
    a = [generator(s, "mixer", epoch=3, rank=1).random(4) for s in (0, 1)]
    assert not np.array_equal(a[0], a[1])
    # a stream depends on its own tag only: it is the same whatever purposes exist beside it
    want = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(PURPOSES["crops"], 2, 5))).random(3)
    assert np.array_equal(generator(7, "crops", epoch=2, rank=5).random(3), want)
    assert len(set(PURPOSES.values())) == len(PURPOSES)
    assert 0 <= torch_seed(0, "globals") < 2**63 and torch_seed(0, "globals") != torch_seed(0, "globals", rank=1)


def test_loader_crops_and_the_mixer_are_different_streams_on_every_rank():
    """The fault itself: on rank 1 the mix coin was the first crop draw. The crop offsets
    are floor(u * range) of the crops stream's uniforms; the mixer's uniforms are another
    stream on every rank."""
    from dali_snapmix.trainer import Config, seed_epoch

    spec = TransformSpec(resize=1000, crop=1)  # offsets floor(u * 1000): the stream's first digits
    sizes = np.full((64, 2), 1000)
    for rank in range(4):
        plan = plan_epoch(sizes, spec=spec, train=True, batch_size=1, seed=0, epoch=0, rank=rank, world_size=4)
        rng = seed_epoch(Config(seed=0), 0, rank)  # what the trainer does at the start of each epoch
        u = rng.random(len(plan.indices))
        assert not np.array_equal(plan.offset[:, 0], np.floor(u * 1000).astype(np.int64)), rank
        crops = generator(0, "crops", epoch=0, rank=rank).random(len(plan.indices))
        assert np.array_equal(plan.offset[:, 0], np.floor(crops * 1000).astype(np.int64)), rank


def test_bad_stream_arguments_are_named():
    with pytest.raises(ValueError, match="unknown stream purpose 'crop'"):
        generator(0, "crop")
    with pytest.raises(ValueError, match="rank must be an int >= 0 and < 2\\*\\*32, got -1"):
        generator(0, "mixer", rank=-1)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got 1.5"):
        generator(1.5, "mixer")
