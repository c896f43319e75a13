"""numpy's ``SeedSequence`` hash, vectorised over the last entropy word.

``sample_generators`` seeds one generator per image with
``SeedSequence([seed, crc32(name), severity, i]).generate_state(1, np.uint64)[0]``. Building one
``SeedSequence`` per image costs ~9 us in Python, more than several corruptions take per 32 px
image; this module computes the same 64-bit states for all ``i`` at once with numpy uint32
arithmetic (O'Neill's ``seed_seq_fe`` hash as numpy implements it: ``mix_entropy`` into a pool
of 4 words, then ``generate_state``). ``tests/test_corruptions_seeding.py`` holds it equal to
``np.random.SeedSequence`` on random entropy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_POOL_SIZE = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = np.uint32(16)
_WORD = 0xFFFFFFFF


def _words(value: int) -> list[int]:
    """An entropy int as numpy coerces it: little-endian 32-bit words, ``0`` -> ``[0]``."""
    if value < 0:
        raise ValueError(f"entropy must be non-negative, got {value}")
    out = [value & _WORD]
    value >>= 32
    while value:
        out.append(value & _WORD)
        value >>= 32
    return out


class _Hasher:
    """``hashmix`` with its running multiplier (shared by every call of one phase)."""

    def __init__(self, init: int, mult: int) -> None:
        self.const, self.mult = init, mult

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = value ^ np.uint32(self.const)
        self.const = (self.const * self.mult) & _WORD
        value = value * np.uint32(self.const)
        return value ^ (value >> _XSHIFT)


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = np.uint32(_MIX_MULT_L) * x - np.uint32(_MIX_MULT_R) * y
    return result ^ (result >> _XSHIFT)


def seed_states(prefix: Sequence[int], last: Iterable[int]) -> np.ndarray:
    """``[SeedSequence([*prefix, i]).generate_state(1, np.uint64)[0] for i in last]`` as uint64.

    Every value of ``last`` must be in ``[0, 2**32)`` (one entropy word); ``prefix`` may hold
    any non-negative ints.
    """
    last = np.asarray(list(last), dtype=np.int64)
    if last.size and (last.min() < 0 or last.max() > _WORD):
        raise ValueError("seed_states needs every last entropy value in [0, 2**32)")
    n = len(last)
    column = last.astype(np.uint32)
    entropy = [np.full(n, w, np.uint32) for v in prefix for w in _words(int(v))] + [column]
    entropy += [np.zeros(n, np.uint32)] * max(0, _POOL_SIZE - len(entropy))
    hash_a = _Hasher(_INIT_A, _MULT_A)
    pool = [hash_a(entropy[i]) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = _mix(pool[dst], hash_a(pool[src]))
    for word in entropy[_POOL_SIZE:]:
        for dst in range(_POOL_SIZE):
            pool[dst] = _mix(pool[dst], hash_a(word))
    hash_b = _Hasher(_INIT_B, _MULT_B)
    low, high = hash_b(pool[0]), hash_b(pool[1])
    return low.astype(np.uint64) | (high.astype(np.uint64) << np.uint64(32))
