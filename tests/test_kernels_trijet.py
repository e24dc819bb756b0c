"""Tests of kernels.trijet: best b-tagged trijet vs itertools and vs the awkward reference."""

from __future__ import annotations

import itertools

import numpy as np
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


def test_scalar_helpers_float32():
    e, x, y, z = F32(100), F32(30), F32(40), F32(50)
    assert transverse_momentum(x, y) == F32(50)
    assert invariant_mass(e, x, y, z) == np.sqrt(e * e - ((x * x + y * y) + z * z))
    assert np.isnan(invariant_mass(F32(1), x, y, z))  # spacelike: NaN -> overflow bin
    eta = np.array([0.1, -1.2, 2.0], F32)
    phi = np.array([3.0, -3.0, 0.5], F32)  # dphi not wrapped
    d = [np.sqrt((eta[a] - eta[b]) ** 2 + (phi[a] - phi[b]) ** 2) for a, b in
         [(0, 1), (2, 1), (2, 0)]]
    assert trijet_avg_dr(eta, phi, 0, 1, 2) == F32(np.float64((d[0] + d[1]) + d[2]) / 3.0)
    p = [momentum_xyz(F32(50), eta[k], phi[k]) for k in range(3)]
    px, py, pz = (np.array([q[c] for q in p], F32) for c in range(3))
    en = np.array([80, 90, 100], F32)
    m = trijet_mass(px, py, pz, en, 0, 1, 2)
    assert m == invariant_mass((en[0] + en[1]) + en[2], (px[0] + px[1]) + px[2],
                               (py[0] + py[1]) + py[2], (pz[0] + pz[1]) + pz[2])


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
