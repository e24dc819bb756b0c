"""Tests of kernels.fastmath: fast sin/cos/sinh and the guard that keeps float32 results exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from agc_core.kernels.fastmath import GUARD, same_float32, sincos_fast, sinh_fast
from agc_core.kernels.kinematics import momentum_xy, momentum_z

F32 = np.float32


@njit(cache=False)  # a cached copy would not see edits of the kernels it calls
def _compare(pt, eta, phi, out):
    """Count mismatches of the fast components against the plain C-library formula."""
    bad = 0
    for i in range(pt.shape[0]):
        p = np.float64(pt[i])
        x, y = momentum_xy(pt[i], phi[i])
        z = momentum_z(pt[i], eta[i])
        ex = np.float32(p * math.cos(np.float64(phi[i])))
        ey = np.float32(p * math.sin(np.float64(phi[i])))
        ez = np.float32(p * math.sinh(np.float64(eta[i])))
        for got, exp in ((x, ex), (y, ey), (z, ez)):
            if not (got == exp or (np.isnan(got) and np.isnan(exp))):
                bad += 1
            elif got == 0 and np.signbit(got) != np.signbit(exp):
                bad += 1
        out[i] = x
    return bad


def test_components_equal_the_c_library_formula():
    rng = np.random.default_rng(0)
    n = 3_000_000
    pt = (15 + rng.exponential(40, n)).astype(F32)
    eta = rng.normal(0, 2, n).astype(F32)
    phi = rng.uniform(-np.pi, np.pi, n).astype(F32)
    special_phi = np.array([np.pi, -np.pi, np.pi / 2, -np.pi / 2, 0.0, -0.0, np.pi / 4,
                            3 * np.pi / 4, 1e-30, 7.0, -100.0, 2e4, np.inf, np.nan], F32)
    special_eta = np.array([0.0, -0.0, 0.5, -0.5, np.nextafter(F32(0.5), F32(0)), 1e-8, 19.9,
                            20.0, 25.0, -30.0, 100.0, np.inf, np.nan, 4.7], F32)
    k = len(special_phi)
    phi[:k] = special_phi
    eta[:k] = special_eta
    pt[k:2 * k] = np.array([1e-30, 1e30, 0.0, 25.0, 3e38, np.inf, np.nan, 1, 2, 3, 4, 5, 6, 7],
                           F32)
    assert _compare(pt, eta, phi, np.empty(n, F32)) == 0


def test_fast_functions_are_accurate():
    rng = np.random.default_rng(1)
    for x in np.concatenate([rng.uniform(-np.pi, np.pi, 20000), rng.uniform(-8, 8, 2000),
                             [0.0, np.pi / 2, np.pi, 1e-300]]):
        s, c, ok = sincos_fast(float(x))
        assert ok
        assert s == pytest.approx(math.sin(x), rel=2e-15, abs=1e-300)
        assert c == pytest.approx(math.cos(x), rel=2e-15, abs=1e-300)
    for x in np.concatenate([rng.normal(0, 3, 20000), [0.0, 0.5, -0.5, 20.0, 1e-300]]):
        sh, ok = sinh_fast(float(x))
        assert ok
        assert sh == pytest.approx(math.sinh(x), rel=2e-15, abs=1e-300)
    assert not sincos_fast(8.5)[2] and not sincos_fast(np.nan)[2]
    assert not sinh_fast(21.0)[1] and not sinh_fast(np.nan)[1]


def test_guard_detects_float32_rounding_boundaries():
    a = F32(123.456)
    b = np.nextafter(a, F32(np.inf))
    mid = (np.float64(a) + np.float64(b)) / 2  # exactly between two float32
    assert not same_float32(mid, GUARD)
    assert not same_float32(np.nextafter(mid, 0.0), GUARD)
    assert same_float32(np.float64(a), GUARD) and same_float32(0.0, GUARD)
    assert same_float32(np.float64(a) + 0.25 * (np.float64(b) - np.float64(a)), GUARD)


def test_sincos_near_multiples_of_half_pi():
    """Relative accuracy holds where sin or cos is tiny (float32 and float64 arguments)."""
    for k in range(-5, 6):
        centre = F32(k * np.pi / 2)
        xs = [centre]
        for _ in range(300):
            xs.append(np.nextafter(xs[-1], F32(np.inf)))
        xs += [np.nextafter(centre, F32(-np.inf)), k * np.pi / 2]
        for x in xs:
            s, c, ok = sincos_fast(float(x))
            assert ok
            assert s == pytest.approx(math.sin(float(x)), rel=1e-15, abs=1e-300)
            assert c == pytest.approx(math.cos(float(x)), rel=1e-15, abs=1e-300)
