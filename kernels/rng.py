"""Counter-based random numbers for the jet energy resolution (JER) variation.

The seed draws its JER factors with unseeded ``np.random``; we draw every jet's factor from a
hash of (seed, sample id, file id, entry index in the file, jet index in the event), so results
do not depend on chunking, worker count, executor or completion order, and the awkward
reference can use exactly the same draws.

Hash: SplitMix64 finalizer chained over the key words. Normal deviates: Box-Muller on two
53-bit uniforms taken from two hashes of the same counter.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 mixing of one 64-bit word (a bijection with good avalanche)."""
    z = np.uint64(x) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def stream_key(seed: int, sample_id: int, file_id: int) -> np.uint64:
    """Key of one file's random stream from (seed, sample id, file id)."""
    k = splitmix64(np.uint64(seed))
    k = splitmix64(k ^ np.uint64(sample_id))
    return splitmix64(k ^ np.uint64(file_id))


@njit(cache=True)
def standard_normal(key: np.uint64, entry: int, jet: int) -> float:
    """Standard normal deviate for (stream key, entry index in file, jet index in event)."""
    h = splitmix64(key ^ np.uint64(entry))
    h = splitmix64(h ^ (np.uint64(jet) << np.uint64(32)))
    h2 = splitmix64(h ^ _GOLDEN)
    u1 = (float(h >> np.uint64(11)) + 1.0) * _TWO_POW_M53  # (0, 1]
    u2 = float(h2 >> np.uint64(11)) * _TWO_POW_M53  # [0, 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def jer_factors(
    offsets: np.ndarray,
    entry_start: int,
    seed: int,
    sample_id: int,
    file_id: int,
    width: float,
) -> np.ndarray:
    """Per-jet JER factors ``1 + width * N(0, 1)`` for a chunk of events.

    Args:
        offsets: int64 jet offsets of the chunk, length n_events + 1, starting at 0.
        entry_start: index in the file of the chunk's first event.
        seed: user seed of the run.
        sample_id: index of the (process, variation) sample.
        file_id: index of the file within its sample.
        width: relative resolution (0.05 in the seed).

    Returns:
        float64 array of length offsets[-1] (one factor per jet, flat).
    """
    key = stream_key(seed, sample_id, file_id)
    n_events = offsets.shape[0] - 1
    out = np.empty(offsets[n_events] - offsets[0], dtype=np.float64)
    base = offsets[0]
    for i in range(n_events):
        entry = entry_start + i
        for j in range(offsets[i + 1] - offsets[i]):
            out[offsets[i] - base + j] = 1.0 + width * standard_normal(key, entry, j)
    return out


def jer_factors_numpy(
    offsets: np.ndarray,
    entry_start: int,
    seed: int,
    sample_id: int,
    file_id: int,
    width: float,
) -> np.ndarray:
    """Pure-numpy implementation of :func:`jer_factors` (same hash), for cross-checks."""
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n = int(counts.sum())
    entry = np.repeat(np.arange(len(counts), dtype=np.uint64) + np.uint64(entry_start), counts)
    starts = np.repeat(offsets[:-1] - offsets[0], counts)
    jet = (np.arange(n, dtype=np.int64) - starts).astype(np.uint64)

    def mix(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            z = x + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))

    key = np.uint64(stream_key(seed, sample_id, file_id))
    h = mix(key ^ entry)
    h = mix(h ^ (jet << np.uint64(32)))
    h2 = mix(h ^ _GOLDEN)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_POW_M53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * _TWO_POW_M53
    return 1.0 + width * (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))
