"""Tests of kernels.trijet: best b-tagged trijet vs itertools and vs the awkward reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import selected_jets

from agc_core import reference
from agc_core.kernels.kinematics import momentum_xyz
from agc_core.kernels.trijet import (
    best_trijet,
    best_trijet_events,
    invariant_mass,
    transverse_momentum,
    trijet_avg_dr,
    trijet_mass,
)

F32 = np.float32


def brute_force(px, py, tag, n):
    best, best_pt = (-1, -1, -1), None
    for a, b, c in itertools.combinations(range(n), 3):
        if not (tag[a] or tag[b] or tag[c]):
            continue
        x = (px[a] + px[b]) + px[c]
        y = (py[a] + py[b]) + py[c]
        pt = np.sqrt(x * x + y * y)
        if best_pt is None or pt > best_pt:
            best, best_pt = (a, b, c), pt
    return best


@given(st.integers(0, 12), st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=200, deadline=None)
def test_best_trijet_equals_brute_force(n, seed, ties):
    rng = np.random.default_rng(seed)
    px = rng.normal(0, 40, n).astype(F32)
    py = rng.normal(0, 40, n).astype(F32)
    if ties and n:  # identical jets make equal trijet pts: the first one wins
        px[:] = px[0]
        py[:] = py[0]
    tag = rng.random(n) < 0.3
    assert best_trijet(px, py, tag, n) == brute_force(px, py, tag, n)


def test_best_trijet_nan_and_ties_like_ak_argmax():
    """The first qualifying trijet is kept when later ones are NaN or equal (ak.argmax)."""
    px = np.array([10, 20, 30, np.nan, 5], F32)
    py = np.array([1, 2, 3, 4, 5], F32)
    tag = np.ones(5, dtype=np.bool_)
    assert best_trijet(px, py, tag, 5) == brute_force(px, py, tag, 5) == (0, 1, 2)
    px[0] = np.nan  # the first trijet is NaN: it stays the answer, like ak.argmax
    assert best_trijet(px, py, tag, 5) == brute_force(px, py, tag, 5) == (0, 1, 2)
    assert best_trijet(px, py, np.zeros(5, dtype=np.bool_), 5) == (-1, -1, -1)


def test_invariant_mass_exact_cases():
    """Four-vectors with integer components and an integer mass (no rounding anywhere)."""
    # (e, px, py, pz, m) with e^2 = m^2 + |p|^2
    for e, x, y, z, m in [(5, 2, 2, 4, 1), (50, 20, 20, 40, 10), (13, 3, 4, 12, 0),
                          (9, -1, 4, -8, 0), (15, 0, 0, 9, 12), (7, 2, 3, 6, 0)]:
        assert invariant_mass(F32(e), F32(x), F32(y), F32(z)) == F32(m)
        assert transverse_momentum(F32(x), F32(y)) == F32(math.hypot(x, y))
    assert np.isnan(invariant_mass(F32(1), F32(3), F32(4), F32(5)))  # spacelike: overflow bin


@given(st.lists(st.tuples(st.floats(20, 400, width=32), st.floats(-2.5, 2.5, width=32),
                          st.floats(-3.25, 3.25, width=32), st.floats(1.0, 1.5, width=32)),
                min_size=3, max_size=3))
@settings(max_examples=200, deadline=None)
def test_trijet_mass_and_dr_close_to_float64(jets):
    """float32 kernels vs an independent float64 numpy computation of the same physics.

    The float32 mass loses precision in ``e^2 - |p|^2``: the bound is float32 rounding of the
    squares (relative 2^-23 of e^2, several roundings) propagated through the square root.
    """
    pt, eta, phi, scale = (np.array(c, F32) for c in zip(*jets, strict=True))
    e = (pt * np.cosh(eta.astype(np.float64)) * scale).astype(F32)  # energy >= |p|
    p = [momentum_xyz(pt[k], eta[k], phi[k]) for k in range(3)]
    px, py, pz = (np.array([q[c] for q in p], F32) for c in range(3))
    m = trijet_mass(px, py, pz, e, 0, 1, 2)
    p64 = np.stack([pt * np.cos(phi.astype(np.float64)), pt * np.sin(phi.astype(np.float64)),
                    pt * np.sinh(eta.astype(np.float64))], axis=1).sum(axis=0)
    e64 = e.astype(np.float64).sum()
    m2_64 = e64 * e64 - p64 @ p64
    bound = 8 * 2.0**-23 * e64 * e64  # absolute error of the float32 m^2
    if np.isnan(m):  # float32 m^2 < 0: only possible for a (nearly) massless system
        assert m2_64 < bound
    else:
        assert abs(float(m) ** 2 - m2_64) <= bound
    d = [math.hypot(float(eta[a]) - float(eta[b]), float(phi[a]) - float(phi[b]))
         for a, b in [(0, 1), (2, 1), (2, 0)]]  # dphi not wrapped, as in the seed
    assert trijet_avg_dr(eta, phi, 0, 1, 2) == pytest.approx(sum(d) / 3, rel=4 * 2.0**-23)


def test_best_trijet_events_equals_reference(cfg):
    from agc_core.fixtures import random_chunk

    jets, off, flat = selected_jets(random_chunk(3000, 5), cfg)
    # the reference needs a qualifying trijet in every event: >= 3 jets, one tag > 0.5
    thr = cfg.selection.btag_threshold
    keep = (np.diff(off) >= 3) & np.array(
        [bool(np.any(flat["btag"][off[i]:off[i + 1]] > thr)) for i in range(len(off) - 1)])
    mass, dr = best_trijet_events(off, flat["pt"], flat["eta"], flat["phi"], flat["e"],
                                  flat["btag"], F32(thr))
    assert np.isnan(mass[~keep]).all() and np.isnan(dr[~keep]).all()
    ref_mass, ref_dr = reference.best_trijet(jets[keep], thr)
    assert mass.dtype == np.float32 and dr.dtype == np.float32
    np.testing.assert_array_equal(mass[keep], ref_mass)
    np.testing.assert_array_equal(dr[keep], ref_dr)
