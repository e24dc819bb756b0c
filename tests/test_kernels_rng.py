"""Tests of kernels.rng: keyed JER draws are deterministic, chunk-independent and normal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agc_core.kernels.rng import (
    _ZIG_RATIO,
    MAX_STANDARD_NORMAL,
    counter_hash,
    jer_factors,
    jer_factors_numpy,
    stream_key,
)


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


@pytest.fixture(scope="module")
def offsets() -> np.ndarray:
    return offsets_from_counts(np.random.default_rng(3).poisson(6, 50_000))


def test_numba_equals_numpy(offsets):
    a = jer_factors(offsets, 1234, 42, 3, 1, 0.05)
    b = jer_factors_numpy(offsets, 1234, 42, 3, 1, 0.05)
    assert a.dtype == np.float64 and a.shape == (offsets[-1],)
    np.testing.assert_array_equal(a, b, strict=True)


def test_independent_of_chunking(offsets):
    full = jer_factors(offsets, 0, 7, 0, 0, 0.05)
    parts = []
    for lo, hi in [(0, 1), (1, 1), (1, 17_000), (17_000, 50_000)]:
        sub = offsets[lo : hi + 1] - offsets[lo]
        parts.append(jer_factors(sub, lo, 7, 0, 0, 0.05))
    assert np.array_equal(np.concatenate(parts), full)


def test_keys_change_the_stream(offsets):
    base = jer_factors(offsets, 0, 1, 2, 3, 0.05)
    for args in [(0, 2, 2, 3), (0, 1, 3, 3), (0, 1, 2, 4), (1, 1, 2, 3)]:
        other = jer_factors(offsets, args[0], *args[1:], 0.05)
        assert np.mean(other == base) < 1e-3


def test_distribution_is_normal(offsets):
    x = (jer_factors(offsets, 0, 11, 0, 0, 0.05) - 1.0) / 0.05
    n = len(x)
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.std() - 1) < 5 / np.sqrt(2 * n)
    # tail fractions of a standard normal
    assert abs(np.mean(np.abs(x) > 1) - 0.3173) < 0.01
    assert abs(np.mean(np.abs(x) > 2) - 0.0455) < 0.005


def test_empty_inputs():
    assert jer_factors(np.zeros(1, np.int64), 0, 1, 0, 0, 0.05).shape == (0,)
    assert jer_factors(np.zeros(4, np.int64), 5, 1, 0, 0, 0.05).shape == (0,)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_ziggurat_matches_normal_cdf():
    """Kolmogorov-Smirnov distance of 2M draws to the normal CDF, and the tails."""
    off = np.arange(0, 2_000_001, 4, dtype=np.int64)
    z = np.sort(jer_factors(off, 0, 99, 1, 2, 1.0) - 1.0)
    n = len(z)
    grid = np.linspace(-4, 4, 801)
    empirical = np.searchsorted(z, grid, side="right") / n
    assert np.max(np.abs(empirical - normal_cdf(grid))) < 1.63 / np.sqrt(n) * 1.5
    assert abs(np.mean(np.abs(z) > 3) - 0.0026998) < 0.0002
    assert abs(np.mean(np.abs(z) > 3.6541528853610088) - 0.000258) < 0.00006  # the tail layer
    assert np.abs(z).max() < MAX_STANDARD_NORMAL


def test_slow_paths_match_python():
    """Draws that leave the layer rectangles (wedges, tail, retries) agree numba vs Python."""
    key = stream_key(3, 1, 4)
    hashes = [counter_hash(key, e, j) for e in range(3000) for j in range(4)]
    slow = [h for h in hashes
            if not abs(2.0 * (int(h) >> 11) * 2.0**-53 - 1.0) < _ZIG_RATIO[int(h) & 0xFF]]
    assert len(slow) > 20
    off = np.arange(0, 12_001, 4, dtype=np.int64)
    np.testing.assert_array_equal(jer_factors(off, 0, 3, 1, 4, 1.0),
                                  jer_factors_numpy(off, 0, 3, 1, 4, 1.0))
