"""Tests of kernels.checks: the input scan against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from agc_core.kernels.checks import clean, scan_values


def numpy_scan(values: np.ndarray, nonnegative: bool) -> tuple[int, int, int]:
    bad = ~np.isfinite(values)
    negative = np.isfinite(values) & (values < 0) if nonnegative else np.zeros_like(bad)
    either = np.flatnonzero(bad | negative)
    return int(bad.sum()), int(negative.sum()), int(either[0]) if either.size else -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(5))
def test_scan_equals_numpy(dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(40, 30, 1000).astype(dtype)
    for special in (np.nan, np.inf, -np.inf, -0.0, -1e-30):
        values[rng.integers(0, values.size, rng.integers(0, 4))] = special
    for nonnegative in (True, False):
        expected = numpy_scan(values, nonnegative)
        assert scan_values(values, nonnegative) == expected
        assert clean(values, nonnegative) == (expected[2] < 0)


def test_clean_and_empty_columns():
    assert scan_values(np.array([0.0, 25.0, 1e30], np.float32), True) == (0, 0, -1)
    assert scan_values(np.array([], np.float32), True) == (0, 0, -1)
    assert scan_values(np.array([-1.0, np.nan], np.float32), False) == (1, 0, 1)
