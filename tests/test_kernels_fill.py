"""Tests of kernels.fill: boost-histogram's bin index and weighted filling, and kernels.weights."""

from __future__ import annotations

import awkward as ak
import boost_histogram as bh
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agc_core import reference
from agc_core.kernels.fill import fill_region, fill_weighted, regular_bin
from agc_core.kernels.weights import btag_factor, btag_weights, flat_factor

EDGES = [(25, 50.0, 550.0), (1, 0.0, 1.0), (7, -3.3, 0.1), (100, 1e-3, 1e6)]


def bh_index(axis: bh.axis.Regular, x: float) -> int:
    return int(axis.index(x)) + 1  # boost: -1 underflow, bins overflow


@pytest.mark.parametrize(("bins", "low", "high"), EDGES)
def test_regular_bin_equals_boost_histogram(bins, low, high):
    axis = bh.axis.Regular(bins, low, high)
    rng = np.random.default_rng(bins)
    width = (high - low) / bins
    edges = low + width * np.arange(bins + 1)
    values = np.concatenate([
        rng.uniform(low - 0.2 * (high - low), high + 0.2 * (high - low), 5000),
        edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
        [np.nan, np.inf, -np.inf, low, high, -0.0, 0.0, 1e300, -1e300],
    ])
    for x in values:
        assert regular_bin(float(x), bins, low, high) == bh_index(axis, x), x


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=300, deadline=None)
def test_regular_bin_any_float(x):
    axis = bh.axis.Regular(25, 50.0, 550.0)
    assert regular_bin(x, 25, 50.0, 550.0) == bh_index(axis, x)


def test_fill_weighted_equals_boost():
    rng = np.random.default_rng(1)
    n = 4000
    obs = np.concatenate([rng.uniform(0, 600, n - 4), [np.nan, np.inf, 50.0, 550.0]])
    cls = rng.integers(0, 2, n)
    cls[:5] = [2, -1, 0, 1, 3]  # out-of-range classes are dropped, like boost's Integer axis
    w = rng.uniform(0.5, 2, n)
    sumw = np.zeros((3, 2, 2, 27))
    sumw2 = np.zeros_like(sumw)
    fill_weighted(sumw, sumw2, 1, 0, obs, cls, w, n, 50.0, 550.0)
    h = bh.Histogram(bh.axis.Regular(25, 50, 550),
                     bh.axis.Integer(0, 2, underflow=False, overflow=False),
                     storage=bh.storage.Weight())
    h.fill(obs, cls, weight=w)
    view = h.view(flow=True)
    np.testing.assert_array_equal(sumw[1, 0].T, view.value, strict=True)
    np.testing.assert_array_equal(sumw2[1, 0].T, view.variance, strict=True)
    assert sumw[[0, 2]].sum() == 0 and sumw[1, 1].sum() == 0


def test_fill_region_weight_variations():
    rng = np.random.default_rng(2)
    n = 1000
    obs = rng.uniform(0, 600, n)
    cls = rng.integers(0, 2, n)
    pts = (25 + rng.exponential(50, (n, 4))).astype(np.float32)
    n_var = 1 + 2 + 8
    sumw = np.zeros((n_var, 2, 2, 27))
    sumw2 = np.zeros_like(sumw)
    w0, m, ref = 0.37, 0.1, np.float32(50.0)
    fill_region(sumw, sumw2, 1, obs, cls, n, 50.0, 550.0, w0, 0, 1, 1.001, 0.999, 3, pts,
                m, ref)
    weights = [np.full(n, w0), np.full(n, w0 * 1.001), np.full(n, w0 * 0.999)]
    bt = btag_weights(pts, w0, m, ref)
    for i in range(4):
        weights += [bt[i, 0], bt[i, 1]]
    for v, w in enumerate(weights):
        s = np.zeros((2, 27))
        s2 = np.zeros((2, 27))
        fill_weighted(s[None, None], s2[None, None], 0, 0, obs, cls, w, n, 50.0, 550.0)
        np.testing.assert_array_equal(sumw[v, 1], s, strict=True)
        np.testing.assert_array_equal(sumw2[v, 1], s2, strict=True)
    assert sumw[:, 0].sum() == 0


def test_btag_weights_equal_reference(cfg):
    rng = np.random.default_rng(3)
    counts = rng.integers(4, 9, 500)
    pt = (20 + rng.exponential(60, counts.sum())).astype(np.float32)
    jagged = ak.unflatten(pt, counts)
    first = np.stack([ak.to_numpy(jagged[:, i]) for i in range(4)], axis=1)
    s = cfg.systematics
    out = btag_weights(np.ascontiguousarray(first), 1.0, s.btag_magnitude,
                       np.float32(s.btag_pt_ref))
    for i in range(4):
        ref = reference.btag_weight_factors(jagged, i, cfg)
        np.testing.assert_array_equal(out[i, 0], ref[:, 0])
        np.testing.assert_array_equal(out[i, 1], ref[:, 1])
        assert btag_factor(first[0, i], s.btag_magnitude, np.float32(s.btag_pt_ref)) \
            == ref[0, 0]


def test_flat_factor_equals_reference(cfg):
    m = np.float32(cfg.systematics.wjets_magnitude)
    ref = reference.wjets_scale_factors(cfg)
    assert flat_factor(m) == ref[0] and flat_factor(-m) == ref[1]
    assert flat_factor(np.float32(0.001)) == 1.0010000467300415  # built in float32
