"""agc_core.reference_histograms: the published CMS histograms as a full histogram, and the MC
precision of one histogram given to another."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agc_core.config import REGIONS
from agc_core.errors import InputError
from agc_core.histograms import empty_boost_histogram
from agc_core.reference_histograms import (
    effective_events,
    reference_histogram,
    sample_weights,
    with_mc_precision,
)

REFERENCE_JSON = "reference_v1.2.0_histos_10_files_per_process.json"


def filled(cfg, n_events: dict[tuple[str, str], float], seed: int = 0):
    """A full histogram whose nominal (region, process) cells hold ``n`` events of weight 2,
    spread over the bins and classifications (other variations: the same)."""
    rng = np.random.default_rng(seed)
    processes = list(cfg.xsec_pb)
    hist = empty_boost_histogram(cfg, processes, cfg.all_variations())
    view = hist.view(flow=True)
    n_bins, n_cls = view.shape[0], view.shape[-1]
    for (region, process), n in n_events.items():
        counts = rng.multinomial(int(n), np.full(n_bins * n_cls, 1 / (n_bins * n_cls))
                                 ).reshape(n_bins, n_cls).astype(float)
        cell = (slice(None), REGIONS.index(region), processes.index(process))
        view.value[cell] = 2.0 * counts[:, None, :]
        view.variance[cell] = 4.0 * counts[:, None, :]
    return hist


def test_effective_events_count_unit_weight_events(cfg):
    n = {("4j1b", "ttbar"): 5000, ("4j2b", "wjets"): 300}
    got = effective_events(filled(cfg, n))
    assert got.keys() == n.keys()  # empty cells are left out
    for key, value in n.items():
        assert got[key] == pytest.approx(value)


def test_with_mc_precision_scales_relative_uncertainties(cfg):
    precise = filled(cfg, {("4j1b", "ttbar"): 40_000, ("4j2b", "ttbar"): 9000,
                           ("4j1b", "wjets"): 100})
    coarse = filled(cfg, {("4j1b", "ttbar"): 10_000, ("4j2b", "ttbar"): 9000}, seed=1)
    out = with_mc_precision(precise, coarse)
    np.testing.assert_array_equal(out.view(flow=True).value, precise.view(flow=True).value)
    got = effective_events(out)
    assert got[("4j1b", "ttbar")] == pytest.approx(10_000)  # 4x the variance: 2x the error
    assert got[("4j2b", "ttbar")] == pytest.approx(9000)
    assert got[("4j1b", "wjets")] == pytest.approx(100)  # nothing to match: unchanged
    v_in, v_out = precise.view(flow=True).variance, out.view(flow=True).variance
    cell = (slice(None), REGIONS.index("4j1b"), 0)  # ttbar: every variation, classification
    np.testing.assert_allclose(v_out[cell], 4.0 * v_in[cell])
    assert effective_events(precise)[("4j1b", "ttbar")] == pytest.approx(40_000)  # a copy


def test_with_mc_precision_names_a_missing_process(cfg):
    import boost_histogram as bh

    hist = filled(cfg, {("4j1b", "single_top_tW"): 100})
    axes = list(hist.axes)
    axes[2] = bh.axis.StrCategory(["ttbar"])
    other = bh.Histogram(*axes, storage=bh.storage.Weight())
    with pytest.raises(InputError, match="single_top_tW"):
        with_mc_precision(hist, other)


def test_reference_variance_is_that_of_its_event_weights(cfg, shared_agc):
    hist = reference_histogram(shared_agc / REFERENCE_JSON, shared_agc / "ntuples_merged.json",
                               cfg)
    raw = json.loads((shared_agc / REFERENCE_JSON).read_text())
    w = sample_weights(shared_agc / "ntuples_merged.json", cfg)
    processes, variations = list(hist.axes[2]), list(hist.axes[3])
    view = hist.view(flow=True)
    for name, region, process, variation, own in (
            ("4j1b_ttbar", "4j1b", "ttbar", "nominal", "nominal"),
            ("4j2b_ttbar_PS_var", "4j2b", "ttbar", "PS_var", "PS_var"),
            ("4j2b_wjets_btag_var_1_up", "4j2b", "wjets", "btag_var_1_up", "nominal")):
        cell = view[:, REGIONS.index(region), processes.index(process),
                    variations.index(variation), 0]
        np.testing.assert_array_equal(cell.value, raw[name]["contents"])
        np.testing.assert_allclose(cell.variance, cell.value * w[(process, own)])
    # the reference's raw ttbar events in 4j1b: ~10x the embedded dataset's
    assert effective_events(hist)[("4j1b", "ttbar")] > 1e5


def test_reference_with_a_wrong_binning_is_named(cfg, shared_agc, tmp_path):
    raw = json.loads((shared_agc / REFERENCE_JSON).read_text())
    raw["4j1b_ttbar"]["contents"] = raw["4j1b_ttbar"]["contents"][:-1]
    bad = tmp_path / "reference.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"4j1b_ttbar.*26 cells"):
        reference_histogram(bad, shared_agc / "ntuples_merged.json", cfg)
