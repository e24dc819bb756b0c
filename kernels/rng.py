"""Counter-based random numbers for the jet energy resolution (JER) variation.

The seed draws its JER factors with unseeded ``np.random``; we draw every jet's factor from a
hash of (seed, sample id, file id, entry index in the file, jet index in the event), so results
do not depend on chunking, worker count, executor or completion order, and the awkward
reference can use exactly the same draws.

Hash: SplitMix64 finalizer chained over the key words. Normal deviates: the ziggurat method
(Marsaglia & Tsang 2000, 256 layers, in Doornik's ZIGNOR formulation) driven by the hash of the
counter; ~99 % of draws cost one hash, a table lookup and a multiplication (a Box-Muller draw
costs a log and a cos). Further uniforms, for the rare wedge and tail cases, come from hashes of
the same counter with an attempt index. Draws are truncated at |z| < MAX_STANDARD_NORMAL (a
probability of ~1e-17 is moved), which lets the kernels bound every factor.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2**-53
_LOW8 = np.uint64(0xFF)

#: every |standard_normal| is below this (the tail is truncated here)
MAX_STANDARD_NORMAL = 8.6
#: attempts of the ziggurat before the (never seen) Box-Muller fallback
_MAX_ATTEMPTS = 64

# ziggurat tables (256 layers): right edge of the base layer and the common layer area
_ZIG_R = 3.6541528853610088
_ZIG_V = 0.00492867323399


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray]:
    """Layer edges X (257) and ratios X[i+1] / X[i] (256) of the 256-layer ziggurat."""
    x = np.zeros(257)
    f = math.exp(-0.5 * _ZIG_R * _ZIG_R)
    x[0] = _ZIG_V / f  # the base layer (rectangle + tail) as a virtual rectangle
    x[1] = _ZIG_R
    for i in range(2, 256):
        x[i] = math.sqrt(-2.0 * math.log(_ZIG_V / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    return x, x[1:] / x[:-1]


_ZIG_X, _ZIG_RATIO = _ziggurat_tables()


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
def uniform(h: np.uint64) -> float:
    """The top 53 bits of a hash as a float in [0, 1)."""
    return float(h >> np.uint64(11)) * _TWO_POW_M53


@njit(cache=True)
def counter_hash(key: np.uint64, entry: int, jet: int) -> np.uint64:
    """Hash of (stream key, entry index in file, jet index in event)."""
    h = splitmix64(key ^ np.uint64(entry))
    return splitmix64(h ^ (np.uint64(jet) << np.uint64(32)))


@njit(cache=True)
def ziggurat_slow(h: np.uint64, attempt: int) -> tuple[bool, float]:
    """Wedge or tail step of the ziggurat for the hash ``h`` of one attempt.

    Returns:
        (accepted, value); rejected attempts are retried with the next attempt's hash.
    """
    i = int(h & _LOW8)
    u = 2.0 * uniform(h) - 1.0
    u1 = uniform(splitmix64(h ^ _GOLDEN))
    if i == 0:  # base layer: sample the tail beyond R (Marsaglia's method)
        u2 = uniform(splitmix64(h ^ _M1))
        x = math.log(1.0 - u1) / _ZIG_R  # 1 - u1 in (0, 1]
        y = math.log(1.0 - u2)
        z = _ZIG_R - x
        if -2.0 * y < x * x or z >= MAX_STANDARD_NORMAL:
            return False, 0.0
        return True, -z if u < 0.0 else z
    x = u * _ZIG_X[i]
    f0 = math.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
    f1 = math.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
    return f1 + u1 * (f0 - f1) < 1.0, x


@njit(cache=True)
def standard_normal(key: np.uint64, entry: int, jet: int) -> float:
    """Standard normal deviate for (stream key, entry index in file, jet index in event)."""
    h0 = counter_hash(key, entry, jet)
    h = h0
    for attempt in range(_MAX_ATTEMPTS):
        if attempt > 0:
            h = splitmix64(h0 ^ (np.uint64(attempt) * _M2))
        i = int(h & _LOW8)
        u = 2.0 * uniform(h) - 1.0
        if abs(u) < _ZIG_RATIO[i]:  # inside the layer's rectangle: ~99 % of the draws
            return u * _ZIG_X[i]
        accepted, z = ziggurat_slow(h, attempt)
        if accepted:
            return z
    # Box-Muller fallback, for termination only (probability ~1e-130)
    u1 = uniform(h0) + _TWO_POW_M53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * uniform(h))


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
    """Numpy implementation of :func:`jer_factors` (same hash and ziggurat), for cross-checks.

    The common case (inside a layer's rectangle) is vectorized; the rare wedge and tail cases
    are redone per jet in plain Python with ``math`` (the same libm functions numba calls).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n = int(counts.sum())
    entry = np.repeat(np.arange(len(counts), dtype=np.uint64) + np.uint64(entry_start), counts)
    starts = np.repeat(offsets[:-1] - offsets[0], counts)
    jet = (np.arange(n, dtype=np.int64) - starts).astype(np.uint64)

    def mix(x):
        with np.errstate(over="ignore"):
            z = x + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))

    def unif(h):
        return (h >> np.uint64(11)).astype(np.float64) * _TWO_POW_M53

    key = np.uint64(stream_key(seed, sample_id, file_id))
    h0 = mix(mix(key ^ entry) ^ (jet << np.uint64(32)))
    layer = (h0 & _LOW8).astype(np.int64)
    u = 2.0 * unif(h0) - 1.0
    z = u * _ZIG_X[layer]
    for k in np.flatnonzero(~(np.abs(u) < _ZIG_RATIO[layer])):
        z[k] = _standard_normal_python(int(h0[k]))
    return 1.0 + width * z


def _standard_normal_python(h0: int) -> float:
    """The ziggurat of :func:`standard_normal` for one counter hash, in plain Python."""
    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        z = (x + int(_GOLDEN)) & mask
        z = ((z ^ (z >> 30)) * int(_M1)) & mask
        z = ((z ^ (z >> 27)) * int(_M2)) & mask
        return z ^ (z >> 31)

    def unif(h: int) -> float:
        return float(h >> 11) * _TWO_POW_M53

    h = h0
    for attempt in range(_MAX_ATTEMPTS):
        if attempt > 0:
            h = mix(h0 ^ ((attempt * int(_M2)) & mask))
        i = h & 0xFF
        u = 2.0 * unif(h) - 1.0
        if abs(u) < _ZIG_RATIO[i]:
            return u * _ZIG_X[i]
        u1 = unif(mix(h ^ int(_GOLDEN)))
        if i == 0:
            x = math.log(1.0 - u1) / _ZIG_R
            y = math.log(1.0 - unif(mix(h ^ int(_M1))))
            z = _ZIG_R - x
            if -2.0 * y >= x * x and z < MAX_STANDARD_NORMAL:
                return -z if u < 0.0 else z
            continue
        x = u * _ZIG_X[i]
        f0 = math.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
        f1 = math.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
        if f1 + u1 * (f0 - f1) < 1.0:
            return x
    u1 = unif(h0) + _TWO_POW_M53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * unif(h))
