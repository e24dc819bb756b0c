"""Tests of agc_core.accuracy against the seed's own hist expressions."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from agc_core.accuracy import classification_summaries, classification_summary
from agc_core.config import AnalysisConfig
from agc_core.histograms import HistArray, to_boost

PROCESSES = ("ttbar", "wjets", "single_top_tW")


def as_seed_hist(h: object, cfg: AnalysisConfig) -> hist.Hist:
    """The same histogram as the seed's hist.Hist with named axes."""
    b = cfg.binning
    out = (hist.Hist.new.Reg(b.bins, b.low, b.high, name="observable")
           .StrCat(list(h.axes[1]), name="region").StrCat(list(h.axes[2]), name="process")
           .StrCat(list(h.axes[3]), name="variation")
           .IntCat(list(h.axes[4]), name="classification").Weight())
    out.view(flow=True)[...] = h.view(flow=True)
    return out


@pytest.fixture()
def filled(cfg: AnalysisConfig) -> tuple[object, dict[str, HistArray]]:
    rng = np.random.default_rng(0)
    arrays = {}
    for process in PROCESSES:
        arr = HistArray.empty(["nominal", "pt_scale_up"], cfg)
        arr.sumw[:] = rng.uniform(0, 5, arr.sumw.shape)
        arr.sumw2[:] = arr.sumw * 0.1
        arrays[process] = arr
    return to_boost(arrays.items(), cfg), arrays


def test_seed_expressions(filled: tuple, cfg: AnalysisConfig) -> None:
    bh_hist, _ = filled
    h = as_seed_hist(bh_hist, cfg)
    for region in ("4j1b", "4j2b"):
        s = classification_summary(bh_hist, region, "ttbar")
        seed = {}
        for p in PROCESSES:
            good = 1 if p == "ttbar" else 0
            seed[p] = (h[:, region, p, "nominal", good].sum().value
                       / h[:, region, p, "nominal", :].project("classification",
                                                                 "observable").sum().value)
        correct = (h[:, region, "ttbar", "nominal", 1].sum().value
                   + h[:, region, "wjets", "nominal", 0].sum().value
                   + h[:, region, "single_top_tW", "nominal", 0].sum().value)
        total = h[:, region, :, "nominal", :].project("classification",
                                                      "observable").sum().value
        for p in PROCESSES:
            assert s.accuracy[p] == pytest.approx(seed[p], rel=1e-12)
        assert s.overall == pytest.approx(correct / total, rel=1e-12)
        # stacks: the seed's h[:, region, :, "nominal", c] per process
        for p in PROCESSES:
            assert np.allclose(s.predicted_background[p], h[:, region, p, "nominal", 0].values())
            assert np.allclose(s.predicted_signal[p], h[:, region, p, "nominal", 1].values())
        assert s.edges.shape == (cfg.binning.bins + 1,)


def test_flow_and_counts(filled: tuple, cfg: AnalysisConfig) -> None:
    bh_hist, arrays = filled
    s = classification_summary(bh_hist, "4j2b", "ttbar", flow=True)
    arr = arrays["wjets"]
    n0, n1 = arr.sumw[0, 1, 0].sum(), arr.sumw[0, 1, 1].sum()
    assert s.counts("wjets") == pytest.approx((n0, n1))
    assert s.accuracy["wjets"] == pytest.approx(n0 / (n0 + n1))
    assert s.predicted_signal["wjets"].shape == (cfg.binning.bins + 2,)
    other = classification_summary(bh_hist, "4j2b", "ttbar", variation="pt_scale_up")
    assert other.accuracy["wjets"] != s.accuracy["wjets"]
    assert set(classification_summaries(bh_hist, cfg)) == {"4j1b", "4j2b"}
    assert s.as_dict()["counts"]["wjets"] == pytest.approx([n0, n1])


def test_empty_process_and_unknown_names(cfg: AnalysisConfig) -> None:
    arrays = {p: HistArray.empty(["nominal"], cfg) for p in PROCESSES}
    arrays["ttbar"].sumw[0, 0, 1, 5] = 2.0
    arrays["wjets"].sumw[0, 0, 1, 5] = 1.0
    h = to_boost(arrays.items(), cfg)
    s = classification_summary(h, "4j1b", "ttbar")
    assert s.accuracy == {"ttbar": 1.0, "wjets": 0.0}
    assert s.overall == pytest.approx(2 / 3)
    assert np.isnan(classification_summary(h, "4j2b", "ttbar").overall)
    with pytest.raises(KeyError, match="variation 'ME_var'"):
        classification_summary(h, "4j1b", "ttbar", variation="ME_var")
    with pytest.raises(KeyError, match="region"):
        classification_summary(h, "5j3b", "ttbar")
