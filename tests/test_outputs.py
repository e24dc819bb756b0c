"""Tests of agc_core.outputs: histograms.root as the seed writes it, the lossless npz file,
the hist.Hist / UHI JSON form."""

from __future__ import annotations

import boost_histogram as bh
import numpy as np
import pytest
import uproot

from agc_core.config import REGIONS, AnalysisConfig
from agc_core.errors import InputError
from agc_core.histograms import HistArray, to_boost
from agc_core.outputs import (
    atomic_path,
    filled_pairs,
    fit_histograms,
    load_full_histogram,
    load_uhi_histogram,
    save_full_histogram,
    save_uhi_histogram,
    to_hist,
    write_fit_histograms,
)


def random_hist(cfg: AnalysisConfig, samples=None, seed: int = 1) -> bh.Histogram:
    """The seed's 5-axis histogram with random content for the given (process, variation)."""
    rng = np.random.default_rng(seed)
    results = []
    for process, variation in samples or cfg.samples:
        arr = HistArray.empty(cfg.fill_variations(process, variation), cfg)
        arr.sumw[:] = rng.random(arr.sumw.shape) * 10
        arr.sumw2[:] = arr.sumw * rng.random(arr.sumw.shape)
        results.append((process, arr))
    return to_boost(results, cfg)


def expected_names(cfg: AnalysisConfig, samples=None) -> list[str]:
    names = []
    for region in REGIONS:
        names.append(f"{region}_pseudodata")
        for process, variation in samples or cfg.samples:
            for v in cfg.fill_variations(process, variation):
                names.append(f"{region}_{process}" + ("" if v == "nominal" else f"_{v}"))
    return names


def seed_fit_values(hist: bh.Histogram, region: str, process: str, variation: str,
                    cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """What the seed's save_histograms computes, redone with plain numpy on the flow view.

    +1e-6 to every cell (variance + 1e-12), bins from the one containing 120 GeV, pairs of
    bins summed, all classification cells (incl. the category overflow) summed.
    """
    b = cfg.binning
    view = hist.view(flow=True)
    ir = hist.axes[1].index(region)
    ip = hist.axes[2].index(process)
    iv = hist.axes[3].index(variation)
    off = b.fit_bin_offset
    vals = view.value[:, ir, ip, iv, :] + off
    vars_ = view.variance[:, ir, ip, iv, :] + off**2
    first = 1 + int((b.fit_low - b.low) // b.width)  # flow index of the bin containing fit_low
    n = (b.bins - (first - 1)) // b.fit_rebin
    idx = first + np.arange(n)[:, None] * b.fit_rebin + np.arange(b.fit_rebin)[None, :]
    return vals[idx].sum(axis=(1, 2)), vars_[idx].sum(axis=(1, 2))


def test_fit_histograms_names_binning_and_values(cfg):
    hist = random_hist(cfg)
    hists = fit_histograms(hist, cfg)
    assert sorted(hists) == sorted(expected_names(cfg))
    assert len(hists) == 124  # as many as the seed's file
    assert next(iter(hists)) == "4j1b_pseudodata"
    for h in hists.values():
        assert h.ndim == 1
        np.testing.assert_allclose(h.axes[0].edges, np.linspace(110, 550, 12))
    for name, (process, variation) in {"4j1b_ttbar": ("ttbar", "nominal"),
                                       "4j2b_wjets_scale_var_up": ("wjets", "scale_var_up"),
                                       "4j1b_ttbar_ME_var": ("ttbar", "ME_var")}.items():
        region = name.split("_")[0]
        values, variances = seed_fit_values(hist, region, process, variation, cfg)
        np.testing.assert_allclose(hists[name].values(), values, rtol=1e-13)
        np.testing.assert_allclose(hists[name].variances(), variances, rtol=1e-13)


def test_pseudodata_is_mean_of_ttbar_variations_plus_wjets(cfg):
    hist = random_hist(cfg)
    hists = fit_histograms(hist, cfg)
    for region in REGIONS:
        me = seed_fit_values(hist, region, "ttbar", "ME_var", cfg)[0]
        ps = seed_fit_values(hist, region, "ttbar", "PS_var", cfg)[0]
        wj = seed_fit_values(hist, region, "wjets", "nominal", cfg)[0]
        np.testing.assert_allclose(hists[f"{region}_pseudodata"].values(), (me + ps) / 2 + wj,
                                   rtol=1e-13)


def test_no_pseudodata_without_its_inputs(cfg):
    samples = [s for s in cfg.samples if s[1] == "nominal"]
    hist = random_hist(cfg, samples)
    hists = fit_histograms(hist, cfg)
    assert not any(name.endswith("pseudodata") for name in hists)
    assert sorted(hists) == sorted(n for n in expected_names(cfg, samples)
                                   if not n.endswith("pseudodata"))


def test_filled_pairs_and_explicit_filled(cfg):
    samples = [("ttbar", "nominal"), ("wjets", "nominal")]
    hist = random_hist(cfg, samples)
    pairs = filled_pairs(hist)
    assert ("ttbar", "btag_var_0_up") in pairs and ("ttbar", "scale_var_up") not in pairs
    hists = fit_histograms(hist, cfg, filled=[("wjets", "nominal")])
    assert list(hists) == ["4j1b_wjets", "4j2b_wjets"]


def test_histograms_root_reads_back_with_uproot(cfg, tmp_path):
    hist = random_hist(cfg)
    path = tmp_path / "histograms.root"
    names = write_fit_histograms(hist, cfg, path)
    assert sorted(names) == sorted(expected_names(cfg))
    expected = fit_histograms(hist, cfg)
    with uproot.open(path) as f:
        assert sorted(k.split(";")[0] for k in f.keys()) == sorted(names)
        for name in names:
            h = f[name]
            assert h.classname == "TH1D"
            assert len(h.values()) == 11
            np.testing.assert_allclose(h.axis().edges(), np.linspace(110, 550, 12))
            np.testing.assert_array_equal(h.values(), expected[name].values())
            np.testing.assert_array_equal(h.variances(), expected[name].variances())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_full_histogram_round_trip(cfg, tmp_path):
    hist = random_hist(cfg)
    path = save_full_histogram(hist, tmp_path / "full.npz")
    back = load_full_histogram(path)
    assert back == hist
    assert back.axes == hist.axes
    assert [a.metadata for a in back.axes] == [a.metadata for a in hist.axes]
    np.testing.assert_array_equal(back.view(flow=True).variance, hist.view(flow=True).variance)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["format"]) == "agc-core-histogram/1"
        assert data["values"].shape == hist.view(flow=True).shape


def test_load_full_histogram_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(InputError, match=r"bad\.npz"):
        load_full_histogram(bad)
    other = tmp_path / "other.npz"
    np.savez(other, values=np.zeros(3))
    with pytest.raises(InputError, match=r"other\.npz"):
        load_full_histogram(other)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [target]


def test_hist_supports_the_seed_notebook_idioms(cfg):
    """The seed's own expressions on our histogram give what the boost-histogram holds."""
    h = random_hist(cfg)
    hh = to_hist(h)
    assert hh.axes.name == ("observable", "region", "process", "variation", "classification")
    assert hh.axes[0].label == "observable [GeV]"
    view = h.view(flow=True)
    ir, ip = (list(h.axes[i]).index(c) for i, c in ((1, "4j1b"), (2, "ttbar")))
    iv = list(h.axes[3]).index("nominal")
    np.testing.assert_array_equal(hh[:, "4j1b", "ttbar", "nominal", 0].values(),
                                  view.value[1:-1, ir, ip, iv, 0])
    proj = hh[:, "4j1b", "ttbar", "nominal", :].project("classification", "observable")
    np.testing.assert_array_equal(proj.values(), view.value[1:-1, ir, ip, iv, :2].T)
    stack = hh[:, "4j2b", :, "nominal", 1].stack("process")
    assert [s.name for s in stack] == list(h.axes[2])
    total = sum(s.values() for s in stack)
    np.testing.assert_allclose(total, hh[:, "4j2b", sum, "nominal", 1].values(), rtol=1e-12)
    # the seed's accuracy expression (its projection keeps the observable's flow bins)
    acc = (hh[:, "4j1b", "ttbar", "nominal", 1].sum().value
           / hh[:, "4j1b", "ttbar", "nominal", :].project("classification").sum().value)
    assert acc == pytest.approx(view.value[1:-1, ir, ip, iv, 1].sum()
                                / view.value[:, ir, ip, iv, :2].sum(), rel=1e-14)


def test_uhi_json_round_trip_readable_without_agc_core(cfg, tmp_path):
    import json

    import uhi.io.json
    from boost_histogram.serialization import from_uhi

    h = random_hist(cfg)
    path = save_uhi_histogram(h, tmp_path / "full.uhi.json")
    back = load_uhi_histogram(path)
    assert back.axes.name == to_hist(h).axes.name
    for a, b in ((back.view(flow=True), h.view(flow=True)),):
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.variance, b.variance)
    plain = bh.Histogram(from_uhi(json.loads(path.read_text(),
                                             object_hook=uhi.io.json.object_hook)))
    np.testing.assert_array_equal(plain.view(flow=True).value, h.view(flow=True).value)
    assert [list(a) for a in plain.axes[1:]] == [list(a) for a in h.axes[1:]]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match=r"bad\.json"):
        load_uhi_histogram(tmp_path / "bad.json")
