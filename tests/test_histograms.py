"""Tests of agc_core.histograms: the dense container and its boost-histogram conversion."""

from __future__ import annotations

import boost_histogram as bh
import numpy as np
import pytest

from agc_core.histograms import HistArray, from_boost, to_boost


def random_hist(cfg, variations, seed):
    h = HistArray.empty(variations, cfg)
    rng = np.random.default_rng(seed)
    h.sumw[:] = rng.random(h.sumw.shape)
    h.sumw2[:] = rng.random(h.sumw.shape)
    return h


def test_empty_shape(cfg):
    h = HistArray.empty(["nominal", "pt_res_up"], cfg)
    assert h.sumw.shape == (2, 2, 2, cfg.binning.bins + 2) and not h.sumw.any()


def test_roundtrip_is_lossless(cfg):
    wj = random_hist(cfg, cfg.fill_variations("wjets", "nominal"), 1)
    tt = random_hist(cfg, cfg.fill_variations("ttbar", "nominal"), 2)
    tt_up = random_hist(cfg, ["scaleup"], 3)
    hist = to_boost([("ttbar", tt), ("wjets", wj), ("ttbar", tt_up)], cfg)
    assert [a.metadata for a in hist.axes] == [
        "observable", "region", "process", "variation", "classification"]
    assert list(hist.axes[2]) == ["ttbar", "wjets"]
    back = from_boost(hist, "wjets")
    for name in wj.variations:
        i, j = wj.variation_index(name), back.variation_index(name)
        assert np.array_equal(back.sumw[j], wj.sumw[i])
        assert np.array_equal(back.sumw2[j], wj.sumw2[i])
    back_tt = from_boost(hist, "ttbar")
    j = back_tt.variation_index("scaleup")
    assert np.array_equal(back_tt.sumw[j], tt_up.sumw[0])
    # a specific bin through boost-histogram indexing (flow bin 0 = underflow)
    value = hist[bh.loc(60.0), bh.loc("4j2b"), bh.loc("ttbar"), bh.loc("nominal"), bh.loc(1)]
    assert value.value == tt.sumw[0, 1, 1, 1]
    assert value.variance == tt.sumw2[0, 1, 1, 1]


def test_add(cfg):
    a = random_hist(cfg, ["nominal"], 1)
    b = random_hist(cfg, ["nominal"], 2)
    c = a + b
    assert np.array_equal(c.sumw, a.sumw + b.sumw)
    with pytest.raises(ValueError, match="different variations"):
        a + random_hist(cfg, ["pt_res_up"], 3)
