"""The vectorised SeedSequence hash must give numpy's states, so cached domains keep their bytes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ttabench.data.corruptions import sample_generators
from ttabench.data.corruptions.seeding import seed_states


def numpy_states(prefix, last):
    return [
        int(np.random.SeedSequence([*prefix, int(i)]).generate_state(1, np.uint64)[0]) for i in last
    ]


@pytest.mark.parametrize(
    "prefix",
    [
        (0, 123, 3),  # the shape sample_generators uses
        (2020, 0xDEADBEEF, 5),
        (2**40 + 7, 1, 1),  # a seed of two words: entropy longer than the pool
        (2**70, 0, 0, 9, 2**33),  # several words and several extra pool rounds
        (0,),  # shorter than the pool: padded with hashed zeros
        (),
    ],
)
def test_seed_states_equal_numpy_seed_sequence(prefix):
    rng = np.random.default_rng(len(prefix))
    last = np.concatenate([np.arange(64), rng.integers(0, 2**32, 64), [2**32 - 1]])
    assert seed_states(prefix, last).tolist() == numpy_states(prefix, last)


def test_seed_states_reject_what_numpy_would_hash_differently():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        seed_states((0, 1, 2), [2**32])
    with pytest.raises(ValueError, match="non-negative"):
        seed_states((-1, 1, 2), [0])


def test_sample_generators_keep_their_seeds():
    # Generators seeded from numpy's SeedSequence, whichever path hashes them (indices of one
    # word go through seed_states, larger ones through numpy itself).
    indices = [0, 5, 2**32 - 1, 2**32, 2**40 + 3]
    gens = sample_generators(7, "fog", 4, indices)
    expected = numpy_states((7, zlib.crc32(b"fog"), 4), indices)
    assert [g.initial_seed() for g in gens] == [s >> 1 for s in expected]
    assert (
        torch.rand(3, generator=gens[1]).tolist()
        == torch.rand(3, generator=torch.Generator().manual_seed(expected[1] >> 1)).tolist()
    )
