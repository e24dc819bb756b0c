"""Tests of kernels.sphericity: symmetric 3x3 eigenvalues vs numpy, pair tensor, A vs reference."""

from __future__ import annotations

import itertools

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import selected_jets

from agc_core import reference
from agc_core.kernels.kinematics import delta_r, momentum_xy, momentum_xyz, momentum_z
from agc_core.kernels.sphericity import (
    min_abs_eigenvalue,
    pair_tensor,
    sphericity_a_events,
    sym3_eigenvalues,
    sym3_eigenvalues_jacobi,
)


def eig(m: np.ndarray) -> np.ndarray:
    return np.array(sym3_eigenvalues(m[0, 0], m[1, 1], m[2, 2], m[0, 1], m[0, 2], m[1, 2]))


def random_symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(size=(n, 3, 3)) * rng.choice([1e-6, 1.0, 1e4], size=(n, 1, 1))
    return (a + np.transpose(a, (0, 2, 1))) / 2


def test_eigenvalues_equal_numpy_on_random_matrices():
    rng = np.random.default_rng(0)
    for m in random_symmetric(rng, 3000):
        ours = eig(m)
        ref = np.sort(np.linalg.eigvals(m).real)[::-1]
        scale = np.abs(ref).max()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13 * scale)
        assert ours[0] >= ours[1] >= ours[2]
        # well-conditioned: the smallest |eigenvalue| to 1e-9 relative
        small = np.abs(ref).min()
        if small > 1e-3 * scale:
            assert min_abs_eigenvalue(m[0, 0], m[1, 1], m[2, 2], m[0, 1], m[0, 2], m[1, 2]) \
                == pytest.approx(small, rel=1e-9)


@pytest.mark.parametrize("m", [
    np.zeros((3, 3)),
    np.diag([3.0, -1.0, 2.0]),
    np.eye(3) * 7.5,
    np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]),       # degenerate pair
    np.array([[1.0, 1e-9, 0.0], [1e-9, 1.0, 1e-9], [0.0, 1e-9, 1.0]]),   # nearly triple
    np.ones((3, 3)),                                                     # rank one
    np.array([[4.0, -2.0, 0.0], [-2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),     # singular
])
def test_eigenvalues_special_matrices(m):
    ref = np.sort(np.linalg.eigvals(m).real)[::-1]
    np.testing.assert_allclose(eig(m), ref, rtol=0, atol=1e-12 * max(1.0, np.abs(m).max()))


@given(st.lists(st.floats(-1e3, 1e3), min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_eigenvalues_hypothesis(v):
    m = np.array([[v[0], v[3], v[4]], [v[3], v[1], v[5]], [v[4], v[5], v[2]]])
    ref = np.sort(np.linalg.eigvals(m).real)[::-1]
    np.testing.assert_allclose(eig(m), ref, rtol=0, atol=1e-11 * max(1.0, np.abs(m).max()))


def test_pair_tensor_equals_itertools_combinations():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 4, 7, 20):
        p = rng.normal(0, 50, (3, 20)).astype(np.float32)
        index = rng.permutation(20)[:n].astype(np.int64)
        out = pair_tensor(p[0], p[1], p[2], index, n)
        den = np.float32(0)
        for k in index:
            den += (p[0, k] * p[0, k] + p[1, k] * p[1, k]) + p[2, k] * p[2, k]
        for (a, b), got in zip([(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)], out,
                               strict=True):
            s = np.float32(0)
            for i, j in itertools.combinations(index, 2):
                s += p[a, i] * p[b, j]
            with np.errstate(invalid="ignore"):
                expected = s / den
            assert got.dtype == np.float32 if hasattr(got, "dtype") else True
            np.testing.assert_array_equal(np.float32(got), expected)


def test_momentum_components_equal_reference_formula():
    rng = np.random.default_rng(2)
    pt = (15 + rng.exponential(40, 2000)).astype(np.float32)
    eta = rng.normal(0, 2, 2000).astype(np.float32)
    phi = rng.uniform(-np.pi, np.pi, 2000).astype(np.float32)
    jets = reference.four_momentum(ak.zip({"pt": pt, "eta": eta, "phi": phi}))
    for k in range(2000):
        px, py, pz = momentum_xyz(pt[k], eta[k], phi[k])
        assert (px, py) == momentum_xy(pt[k], phi[k]) and pz == momentum_z(pt[k], eta[k])
        assert px == jets.px[k] and py == jets.py[k] and pz == jets.pz[k]
        d = delta_r(eta[k], phi[k], eta[k - 1], phi[k - 1])
        de, dp = eta[k] - eta[k - 1], phi[k] - phi[k - 1]
        assert d == np.sqrt(de * de + dp * dp)


def test_sphericity_a_equals_reference(cfg):
    from agc_core.fixtures import random_chunk

    jets, off, flat = selected_jets(random_chunk(3000, 4), cfg)
    ours = sphericity_a_events(off, flat["pt"], flat["eta"], flat["phi"])
    ref = reference.sphericity_a(jets)
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    single = np.diff(off) == 1  # one jet: A = 1.5 * min|eig| of the zero tensor
    np.testing.assert_allclose(ours[~single], ref[~single], rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(ours.astype(np.float32)[~single],
                                  ref.astype(np.float32)[~single])
    np.testing.assert_array_equal(ours[single], 0.0)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("spectrum", [
    (1.0, 1.0, 2.0), (1.0, 1.0 + 1e-9, 2.0), (-0.3, 0.5, 0.5), (0.2, 0.2, 0.2),
    (1e-12, 0.4, 0.4), (0.0, 0.0, 1.0), (-1.0, 1e-7, 1.0), (3.0, 3.0 - 1e-5, -2.0),
])
def test_eigenvalues_of_rotated_degenerate_spectra(spectrum):
    rng = np.random.default_rng(7)
    lam = np.sort(np.array(spectrum))[::-1]
    for _ in range(200):
        q = random_rotation(rng)
        m = q @ np.diag(lam) @ q.T
        m = (m + m.T) / 2
        np.testing.assert_allclose(eig(m), lam, rtol=0, atol=1e-14 * np.abs(lam).max())
        ref = np.sort(np.linalg.eigvals(m).real)[::-1]
        np.testing.assert_allclose(eig(m), ref, rtol=0, atol=1e-14 * np.abs(lam).max())


def test_jacobi_equals_numpy():
    rng = np.random.default_rng(8)
    for m in random_symmetric(rng, 1000):
        got = np.sort(sym3_eigenvalues_jacobi(m[0, 0], m[1, 1], m[2, 2], m[0, 1], m[0, 2],
                                              m[1, 2]))
        ref = np.sort(np.linalg.eigvalsh(m))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14 * np.abs(ref).max())
