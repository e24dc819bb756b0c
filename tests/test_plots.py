"""Tests of agc_core.plots (and the accuracy of agc_core.report they show)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agc_core.accuracy import accuracy_by_process
from agc_core.config import AnalysisConfig
from agc_core.histograms import HistArray, to_boost
from agc_core.plots import PlotPool, draw_all, observable

PNG = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {
    "stack_4j1b_ht.png", "stack_4j2b_mbjj.png", "btag_variations.png",
    "jet_energy_variations.png", "classification_4j1b.png", "classification_4j2b.png",
    "classification_overlay_4j1b.png", "classification_overlay_4j2b.png",
    "accuracy_4j1b.png", "accuracy_4j2b.png",
}


def make_hist(cfg: AnalysisConfig, samples=None, seed: int = 3):
    rng = np.random.default_rng(seed)
    results = []
    for process, variation in samples or cfg.samples:
        arr = HistArray.empty(cfg.fill_variations(process, variation), cfg)
        arr.sumw[:] = rng.random(arr.sumw.shape)
        arr.sumw2[:] = arr.sumw
        results.append((process, arr))
    return to_boost(results, cfg)


def test_draw_all_writes_every_plot(cfg, tmp_path):
    paths = draw_all(make_hist(cfg), cfg, tmp_path / "plots")
    assert {p.name for p in paths} == ALL_PLOTS
    for p in paths:
        assert p.read_bytes()[:8] == PNG
    assert not [p for p in (tmp_path / "plots").iterdir() if p.suffix != ".png"]


def test_plots_without_inputs_are_skipped(cfg, tmp_path):
    hist = make_hist(cfg, [("wjets", "nominal"), ("single_top_tW", "nominal")])
    paths = draw_all(hist, cfg, tmp_path, classification=False)
    assert {p.name for p in paths} == {"stack_4j1b_ht.png", "stack_4j2b_mbjj.png"}


def test_observable_fit_binning_and_classification(cfg):
    hist = make_hist(cfg)
    edges, values = observable(hist, cfg, "4j1b", "ttbar", "nominal", fit_binning=True)
    np.testing.assert_allclose(edges, np.linspace(110, 550, 12))
    _, full = observable(hist, cfg, "4j1b", "ttbar", "nominal")
    assert len(full) == 25
    np.testing.assert_allclose(values, full[3:].reshape(11, 2).sum(axis=1))
    _, c0 = observable(hist, cfg, "4j2b", None, "nominal", 0)
    _, c1 = observable(hist, cfg, "4j2b", None, "nominal", 1)
    _, both = observable(hist, cfg, "4j2b", None, "nominal")
    np.testing.assert_allclose(c0 + c1, both)


def test_accuracy_by_process(cfg):
    arrays = []
    for process, n_sig, n_bkg in (("ttbar", 3.0, 1.0), ("wjets", 1.0, 4.0)):
        arr = HistArray.empty(["nominal"], cfg)
        arr.sumw[0, 0, 1, 5] = n_sig  # 4j1b, predicted signal
        arr.sumw[0, 0, 0, 7] = n_bkg  # 4j1b, predicted background
        arrays.append((process, arr))
    acc = accuracy_by_process(to_boost(arrays, cfg), "4j1b", "ttbar")
    assert acc["ttbar"] == pytest.approx(0.75)
    assert acc["wjets"] == pytest.approx(0.8)
    assert acc["overall"] == pytest.approx((3 + 4) / 9)
    assert accuracy_by_process(to_boost(arrays, cfg), "4j2b", "ttbar") == {}


def _fails(path):
    raise ValueError(f"cannot draw {path.name}")


def test_background_pool_draws_the_same_files(cfg, tmp_path):
    """Drawn by two background processes: the same PNG bytes as here; a failing plot is
    named, the others drawn."""
    hist = make_hist(cfg)
    here = draw_all(hist, cfg, tmp_path / "here")
    with PlotPool(2) as pool:
        planned = draw_all(hist, cfg, tmp_path / "pool", pool=pool)
        pool.submit("broken.png", _fails, tmp_path / "pool" / "broken.png")
        drawn = pool.finish()
    assert [p.name for p in planned] == [p.name for p in here]
    assert [p.name for p in drawn] == [p.name for p in here]
    assert pool.failed == ["broken.png"]
    for p in here:
        assert (tmp_path / "pool" / p.name).read_bytes() == p.read_bytes()


def test_submitting_to_a_pool_does_not_load_matplotlib(tmp_path):
    code = ("import sys; from agc_core.config import load_analysis_config; "
            "from agc_core.plots import PlotPool, draw_all; import test_plots; "
            "cfg = load_analysis_config(); pool = PlotPool(1); "
            f"draw_all(test_plots.make_hist(cfg), cfg, {str(tmp_path)!r}, pool=pool); "
            "print('matplotlib' in sys.modules, len(pool.finish()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.split() == ["False", str(len(ALL_PLOTS))]
