"""Tests of kernels.selection against the seed's awkward expressions (as in the reference)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from agc_core import reference
from agc_core.fixtures import random_chunk
from agc_core.kernels.rng import jer_factors
from agc_core.kernels.selection import (
    REGION_4J1B,
    REGION_4J2B,
    REGION_NONE,
    event_region,
    event_regions,
    jet_passes,
    select_event_jets,
    select_jets,
    select_leptons,
)

F32 = np.float32


@pytest.fixture(scope="module")
def chunk():
    return random_chunk(4000, 11, edge_fraction=0.05)


def test_select_leptons(chunk, cfg):
    sel = cfg.selection
    ev = reference.build_events(chunk)
    n, pt = select_leptons(chunk.offsets["electron"], chunk.columns["electron_pt"],
                           chunk.offsets["muon"], chunk.columns["muon_pt"],
                           F32(sel.electron_pt_min), F32(sel.muon_pt_min))
    el = ev.electron[ev.electron.pt > sel.electron_pt_min]
    mu = ev.muon[ev.muon.pt > sel.muon_pt_min]
    np.testing.assert_array_equal(n, ak.to_numpy(ak.count(el.pt, axis=1)
                                                 + ak.count(mu.pt, axis=1)))
    ref_pt = ak.to_numpy(ak.sum(el.pt, axis=-1) + ak.sum(mu.pt, axis=-1))
    assert pt.dtype == np.float32 == ref_pt.dtype
    np.testing.assert_array_equal(pt, ref_pt)


@pytest.mark.parametrize("variation", ["nominal", "scale", "res"])
def test_select_jets(chunk, cfg, variation):
    sel = cfg.selection
    ev = reference.build_events(chunk)
    off = chunk.offsets["jet"]
    nj = int(off[-1])
    factor = {
        "nominal": np.ones(nj),
        "scale": np.full(nj, cfg.systematics.jes_factor),
        "res": jer_factors(off, chunk.entry_start, 1, 2, 3, cfg.systematics.jer_width),
    }[variation]
    mask, n, n_ge, n_gt, ht, lead = select_jets(off, chunk.columns["jet_pt"],
                                                chunk.columns["jet_btag"], factor,
                                                sel.jet_pt_min, F32(sel.btag_threshold))
    f = ak.unflatten(factor, np.diff(off))
    keep = ev.jet.pt * f > sel.jet_pt_min
    np.testing.assert_array_equal(mask, ak.to_numpy(ak.flatten(keep)))
    jets, fj = ev.jet[keep], f[keep]
    thr = sel.btag_threshold
    np.testing.assert_array_equal(n, ak.to_numpy(ak.count(jets.pt, axis=1)))
    np.testing.assert_array_equal(n_ge, ak.to_numpy(ak.sum(jets.btag >= thr, axis=1)))
    np.testing.assert_array_equal(n_gt, ak.to_numpy(ak.sum(jets.btag > thr, axis=1)))
    np.testing.assert_array_equal(ht, ak.to_numpy(ak.sum(jets.pt * fj, axis=-1)))
    ref_lead = ak.to_numpy(ak.fill_none(ak.max(jets.pt, axis=-1), F32(0)))
    np.testing.assert_array_equal(lead, ref_lead)
    # the selection is exactly float64(pt) * factor > cut
    for k in np.flatnonzero(chunk.columns["jet_pt"] == F32(25.0))[:20]:
        assert jet_passes(chunk.columns["jet_pt"][k], factor[k], sel.jet_pt_min) == mask[k]


def test_select_event_jets_equals_select_jets(chunk, cfg):
    """The event helper with one factor for all jets (stride 0, as the fused kernel calls it)
    gives select_jets' summaries (per-jet factors, stride 1)."""
    sel, off = cfg.selection, chunk.offsets["jet"]
    pt, btag = chunk.columns["jet_pt"], chunk.columns["jet_btag"]
    f = cfg.systematics.jes_factor
    mask, n, n_ge, n_gt, ht, lead = select_jets(off, pt, btag, np.full(pt.shape[0], f),
                                                sel.jet_pt_min, F32(sel.btag_threshold))
    selected = np.empty(int(np.diff(off).max()), dtype=np.int64)
    for i in range(len(off) - 1):
        got = select_event_jets(pt, btag, off[i], off[i + 1] - off[i], np.array([f]), 0,
                                sel.jet_pt_min, F32(sel.btag_threshold), selected)
        assert got[:5] == (n[i], n_ge[i], n_gt[i], ht[i], lead[i])
        local = np.flatnonzero(mask[off[i]:off[i + 1]])
        np.testing.assert_array_equal(selected[:got[0]], local)
        assert got[5] == sum(1 << int(j) for j in local if j < 64)


def test_jet_cut_is_strict_and_float64():
    assert not jet_passes(F32(25.0), 1.0, 25.0)
    assert jet_passes(np.nextafter(F32(25.0), F32(30)), 1.0, 25.0)
    pt = F32(25.0 / 1.03)  # float32 rounding decides, in float64 arithmetic
    assert jet_passes(pt, 1.03, 25.0) == (np.float64(pt) * 1.03 > 25.0)


def test_event_region_rules():
    # (n_lep, n_jets, n_ge, n_gt) -> region with the seed's cuts (1 lepton, 4 jets, 1 tag)
    cases = {
        (1, 4, 1, 0): REGION_4J1B, (1, 4, 1, 1): REGION_4J1B, (1, 7, 1, 1): REGION_4J1B,
        (1, 4, 2, 2): REGION_4J2B, (1, 5, 3, 2): REGION_4J2B,
        (1, 4, 2, 1): REGION_NONE,  # two tags >= 0.5 but one exactly 0.5: neither region
        (1, 4, 0, 0): REGION_NONE, (0, 4, 1, 1): REGION_NONE, (2, 6, 2, 2): REGION_NONE,
        (1, 3, 2, 2): REGION_NONE,
    }
    for (nl, nj, ge, gt), region in cases.items():
        assert event_region(nl, nj, ge, gt, 1, 4, 1) == region
    arrays = [np.array([k[i] for k in cases], dtype=np.int64) for i in range(4)]
    np.testing.assert_array_equal(event_regions(*arrays, 1, 4, 1), list(cases.values()))
