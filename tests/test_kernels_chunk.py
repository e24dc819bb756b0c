"""Tests of the fused chunk kernel (kernels.chunk via processor.analyse_chunk) vs the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agc_core import reference
from agc_core.config import REGIONS
from agc_core.fixtures import chunk_from_jagged, random_chunk
from agc_core.kernels.chunk import MAX_STANDARD_NORMAL, jer_bounds, jer_factor, jer_key
from agc_core.kernels.rng import jer_factors
from agc_core.processor import KERNEL_FEATURES, SampleInfo, analyse_chunk

F32 = np.float32
SEED = 1234


def assert_same_analysis(chunk, sample, cfg, seed=SEED) -> None:
    """Kernel and reference agree bit for bit on every pt variation and region (NaN where
    the reference has NaN, same dtypes)."""
    ours = analyse_chunk(chunk, sample, cfg, seed)
    ref = reference.analyse_chunk(chunk, sample, cfg, seed)
    assert ours.pt_variations == tuple(ref)
    for iv, pt_var in enumerate(ours.pt_variations):
        for ir, region in enumerate(REGIONS):
            r = ref[pt_var][region]
            n = ours.n(iv, ir)
            where = f"{pt_var} {region}"
            np.testing.assert_array_equal(ours.event_index[iv, ir, :n], r.event_index,
                                          err_msg=where)
            obs = np.asarray(r.observable, dtype=np.float64)
            np.testing.assert_array_equal(ours.observable[iv, ir, :n], obs, err_msg=where,
                                          strict=True)
            feats = ours.region_features(iv, ir, KERNEL_FEATURES[region])
            assert feats.dtype == np.float32 and feats.shape == r.features.shape, where
            np.testing.assert_array_equal(feats, r.features, err_msg=where, strict=True)
            if pt_var == "pt_nominal" and n:
                first = np.stack([np.asarray(r.jet_pt[:, i]) for i in
                                  range(cfg.systematics.btag_n_jets)], axis=1)
                np.testing.assert_array_equal(ours.btag_pt[ir, :n], first, err_msg=where)


@pytest.mark.parametrize(("n", "seed", "mean_jets", "entry_start"), [
    (3000, 1, 6.0, 0), (3000, 2, 9.0, 12345), (2000, 3, 4.0, 7), (500, 4, 14.0, 0),
])
def test_random_chunks_equal_reference(cfg, n, seed, mean_jets, entry_start):
    chunk = random_chunk(n, seed, mean_jets=mean_jets, mean_leptons=0.7,
                         entry_start=entry_start, edge_fraction=0.05)
    assert_same_analysis(chunk, SampleInfo("ttbar", "nominal", 0, 3, 0.5), cfg)


def test_variation_samples_only_nominal_kinematics(cfg):
    chunk = random_chunk(1000, 5)
    ours = analyse_chunk(chunk, SampleInfo("ttbar", "ME_var", 3, 0, 0.5), cfg, SEED)
    assert ours.pt_variations == ("pt_nominal",)
    assert_same_analysis(chunk, SampleInfo("ttbar", "ME_var", 3, 0, 0.5), cfg)


def test_ttbar_like_chunk_selects_many_events(cfg):
    """A W+jets-like chunk with enough selected events that the exact comparison means much."""
    chunk = random_chunk(3000, 6, mean_jets=7.0, mean_leptons=0.6)
    sample = SampleInfo("wjets", "nominal", 8, 0, 1.0)
    assert_same_analysis(chunk, sample, cfg)
    assert analyse_chunk(chunk, sample, cfg, SEED).count.sum() > 500


def test_many_jets_without_bit_masks(cfg):
    """Events with more than 64 jets take the path without selection bit masks."""
    rng = np.random.default_rng(9)
    jets, electrons, muons = [], [], []
    for n in (70, 65, 64, 80, 5):
        pt = (20 + rng.exponential(40, n)).astype(F32)
        eta = rng.normal(0, 1.5, n).astype(F32)
        jets.append([(p, e, rng.uniform(-3, 3), p * np.cosh(e) * 1.1, rng.random())
                     for p, e in zip(pt, eta, strict=True)])
        electrons.append([30.0])
        muons.append([])
    chunk = chunk_from_jagged(jets, electrons, muons, entry_start=5)
    assert_same_analysis(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg)


# --- hypothesis edge cases ------------------------------------------------------------------

PT_EDGES = [25.0, float(F32(25.0 / 1.03)), 24.999, 25.001, 17.4, 17.6, 43.0, 44.5, 15.0]
BTAG_EDGES = [0.0, 0.5, float(np.nextafter(F32(0.5), F32(1))),
              float(np.nextafter(F32(0.5), F32(0))), 0.9, 1.0]

jet = st.tuples(
    st.one_of(st.sampled_from(PT_EDGES), st.floats(15.0, 400.0, width=32)),
    st.floats(-3.0, 3.0, width=32),
    st.floats(-3.25, 3.25, width=32),
    st.sampled_from(BTAG_EDGES) | st.floats(0.0, 1.0, width=32),
).map(lambda j: (j[0], j[1], j[2], j[0] * math.cosh(j[1]) * 1.1, j[3]))
leptons = st.lists(st.sampled_from([10.0, 25.0, 25.001, 24.999, 40.0]), max_size=2)
event = st.tuples(st.lists(jet, max_size=20), leptons, leptons)


@given(st.lists(event, max_size=12), st.integers(0, 1000))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_edge_cases_equal_reference(cfg, events, entry_start):
    jets = [e[0] for e in events]
    chunk = chunk_from_jagged(jets, [e[1] for e in events], [e[2] for e in events],
                              entry_start)
    assert_same_analysis(chunk, SampleInfo("wjets", "nominal", 8, 1, 2.0), cfg)


@pytest.mark.parametrize("case", ["no events", "no jets", "every event selected"])
def test_degenerate_chunks(cfg, case):
    if case == "no events":
        chunk = chunk_from_jagged([], [], [])
    elif case == "no jets":
        chunk = chunk_from_jagged([[]] * 5, [[30.0]] * 5, [[]] * 5)
    else:  # exactly 4 jets, exactly one lepton, two b-tags > 0.5
        ev = [(60.0, 0.1, 0.2, 70.0, 0.9), (50.0, -0.5, 1.2, 60.0, 0.8),
              (40.0, 1.0, -2.0, 70.0, 0.1), (30.0, 0.0, 3.0, 35.0, 0.2)]
        chunk = chunk_from_jagged([ev] * 6, [[]] * 6, [[35.0]] * 6)
    assert_same_analysis(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg)
    ours = analyse_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg, SEED)
    expected = 6 if case == "every event selected" else 0
    assert ours.count[0, 1] == expected and ours.count[:, 0].sum() == 0


# --- JER draws --------------------------------------------------------------------------------

def test_jer_factor_equals_jer_factors():
    off = np.array([0, 3, 3, 10], dtype=np.int64)
    flat = jer_factors(off, 100, 5, 6, 7, 0.05)
    key = jer_key(5, 6, 7)
    for i in range(3):
        for j in range(off[i + 1] - off[i]):
            assert jer_factor(key, 100 + i, j, 0.05) == flat[off[i] + j]


def test_jer_bounds_hold():
    """Every factor lies strictly inside the bounds used to skip draws."""
    lower, upper = jer_bounds(0.05)
    assert lower == pytest.approx(1 - 0.05 * MAX_STANDARD_NORMAL)
    off = np.arange(0, 2_000_001, 20, dtype=np.int64)
    f = jer_factors(off, 0, 1, 2, 3, 0.05)
    assert lower < f.min() and f.max() < upper
