"""The top-level API (``agc_core.run``, ``agc_core.fit``, ``agc_core.load_histograms``), the
short renderings of runs and fits, hist's plotting, and the progress bars."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys

import boost_histogram as bh
import hist
import numpy as np
import pytest
from fit_inputs import embedded_run

import agc_core
from agc_core import api, progress, workspace
from agc_core.errors import ConfigError, InputError
from agc_core.outputs import fit_histograms, load_full_histogram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: entries per chunk of the small run (several chunks per file)
SMALL_CHUNK = 700


def test_import_is_cheap_and_names_load_on_first_use():
    code = ("import sys, agc_core\n"
            "before = sorted(m for m in sys.modules if m.startswith('agc_core.'))\n"
            "fit = agc_core.fit\n"
            "import agc_core.api as api\n"
            "print(before, fit is api.fit, agc_core.run is api.run,\n"
            "      agc_core.load_histograms is api.load_histograms,\n"
            "      {'run', 'fit', 'load_histograms'} <= set(dir(agc_core)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["[]", "True", "True", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'runn'"):
        agc_core.runn  # noqa: B018


def test_run_takes_the_options_as_keywords(small_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'filset'.*fileset"):
        agc_core.run(filset=small_dataset)
    result = agc_core.run(fileset=small_dataset, output_dir=tmp_path, chunksize=SMALL_CHUNK,
                          executor="iterative", inference="none", plots=False, fit=False,
                          progress=False)
    assert result.complete and result.options.chunksize == SMALL_CHUNK
    # the histogram is a hist.Hist, no conversion call: the seed's slicing works on it
    h = result.hist
    assert isinstance(h, hist.Hist)
    assert h.axes.name == ("observable", "region", "process", "variation", "classification")
    saved = load_full_histogram(tmp_path / "histograms_full.npz")
    np.testing.assert_array_equal(h.view(flow=True).value, saved.view(flow=True).value)
    ttbar = h[:, "4j1b", "ttbar", "nominal", sum]
    assert ttbar.sum().value == pytest.approx(
        saved[:, bh.loc("4j1b"), bh.loc("ttbar"), bh.loc("nominal"), sum].sum().value)


def test_run_result_renders_short():
    run = api.with_hist(embedded_run().run)
    text = repr(run)
    lines = text.splitlines()
    assert lines[0] == "RunResult" and len(lines) < 12
    inference = run.stage_results["fit_result"]
    assert any(line.endswith(inference.summary_line()) for line in lines)
    assert f"{run.n_events:,} in {run.n_chunks} chunks" in text
    assert f"Hist: observable ({len(run.hist.axes[0])}), region" in text
    html = run._repr_html_()
    assert html.startswith("<table") and html.count("<tr>") == len(lines) - 1
    assert "ttbar_norm" in html and "complete" in html


@pytest.fixture(scope="module")
def run_fit():
    """The run's own fit (its fit stage) of the embedded run."""
    return embedded_run().run.stage_results["fit_result"].fit


@pytest.mark.parametrize("kind", ["root", "npz", "uhi", "workspace", "hist", "boost", "spec",
                                  "run"])
def test_fit_on_what_a_user_holds_equals_the_runs_fit(kind, run_fit):
    inputs = embedded_run()
    source = {"root": inputs.root, "npz": inputs.full,
              "uhi": inputs.folder / "histograms_full.uhi.json",
              "workspace": str(inputs.folder / "workspace.json"),
              "hist": api.load_histograms(inputs.full), "boost": inputs.hist,
              "spec": workspace.load(inputs.folder / "workspace.json"),
              "run": inputs.run}[kind]
    summary = agc_core.fit(source)
    assert summary.labels == run_fit.labels
    np.testing.assert_allclose(summary.bestfit, run_fit.bestfit, rtol=0, atol=1e-9)
    np.testing.assert_allclose(summary.uncertainty, run_fit.uncertainty, rtol=0, atol=1e-9)
    assert summary.poi == "ttbar_norm" == summary.labels[summary.poi_index]


def test_fit_summary_renders_and_draws(tmp_path):
    summary = agc_core.fit(embedded_run().root, plot_dir=tmp_path)
    value, error = summary.value(summary.poi)
    text = repr(summary)
    assert text.startswith(f"FitSummary: ttbar_norm = {value:.4f} +- {error:.4f} (HESSE)")
    assert len(text.splitlines()) == 2
    html = summary._repr_html_()
    named = [label for label in summary.labels[1:] if not label.endswith("]")]
    per_bin = len(summary.labels) - 1 - len(named)
    assert all(f">{label}<" in html for label in named)
    assert f"{per_bin} not shown" in html and "staterror_" not in html
    result = summary.result  # the FitResult inside renders short too
    assert repr(result) == (f"FitResult: {text.splitlines()[0].split(': ', 1)[1]}; minimum valid, "
                            f"EDM {result.diagnostics.edm:.2g}; {len(result.labels)} parameters")
    assert result._repr_html_().count("<tr>") == summary._repr_html_().count("<tr>") - 1
    pulls = summary.pulls()
    assert pulls.path == tmp_path / "fit_pulls.png"
    assert pulls._repr_png_()[:8] == PNG_MAGIC
    channels = [name for name, _ in summary.likelihood.channels]
    for postfit in (False, True):
        images = summary.data_mc(postfit=postfit)
        label = "postfit" if postfit else "prefit"
        assert [p.path.name for p in images] == [f"fit_{label}_{c.replace(' ', '_')}.png"
                                                for c in channels]
        assert all(p.path.read_bytes()[:8] == PNG_MAGIC for p in images)


def test_fit_names_what_it_cannot_use(tmp_path):
    inputs = embedded_run()
    with pytest.raises(InputError, match="a histogram of 4 axes"):
        agc_core.fit(api.load_histograms(inputs.root))
    with pytest.raises(InputError, match="not a pyhf workspace"):
        agc_core.fit({"channels": []})
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(InputError, match=f"{re.escape(str(other))}: cannot fit this file"):
        agc_core.fit(other)
    with pytest.raises(InputError, match=r"missing\.root: file not found"):
        agc_core.fit(tmp_path / "missing.root")
    not_ws = tmp_path / "x.json"
    not_ws.write_text("[1, 2]")
    with pytest.raises(InputError, match=f"{re.escape(str(not_ws))}: not a pyhf workspace"):
        agc_core.fit(not_ws)
    with pytest.raises(InputError, match="cannot fit a int"):
        agc_core.fit(3)
    io_only = dataclasses.replace(inputs.run, hist=None)
    with pytest.raises(InputError, match="no histogram"):
        agc_core.fit(io_only)


def test_load_histograms_from_every_file(cfg):
    inputs = embedded_run()
    full = api.load_histograms(inputs.full)
    uhi = api.load_histograms(inputs.folder / "histograms_full.uhi.json")
    for h in (full, uhi):
        assert isinstance(h, hist.Hist) and h.axes == full.axes
        np.testing.assert_array_equal(h.view(flow=True).value,
                                      inputs.hist.view(flow=True).value)
    templates = api.load_histograms(inputs.root)
    assert templates.axes.name == ("observable", "region", "process", "variation")
    expected = fit_histograms(inputs.hist, cfg)
    names = set()
    for region in templates.axes["region"]:
        for process in templates.axes["process"]:
            for variation in templates.axes["variation"]:
                one = templates[:, region, process, variation]
                name = f"{region}_{process}" + ("" if variation == "nominal"
                                                else f"_{variation}")
                if name not in expected:
                    assert not one.values(flow=True).any(), name
                    continue
                names.add(name)
                np.testing.assert_allclose(one.values(flow=True),
                                           expected[name].values(flow=True), rtol=1e-12)
                np.testing.assert_allclose(one.variances(flow=True),
                                           expected[name].variances(flow=True), rtol=1e-12)
                np.testing.assert_allclose(one.axes[0].edges, expected[name].axes[0].edges)
    assert names == set(expected)


def test_load_histograms_names_bad_files(tmp_path):
    import uproot

    with pytest.raises(InputError, match=r"missing\.npz: histogram file not found"):
        api.load_histograms(tmp_path / "missing.npz")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(InputError, match="not one of agc-core's histogram files"):
        api.load_histograms(other)
    bad = tmp_path / "bad.root"
    with uproot.recreate(bad) as f:
        f["4j1b_ttbar"] = bh.Histogram(bh.axis.Regular(2, 0, 1))
        f["signal_region"] = bh.Histogram(bh.axis.Regular(2, 0, 1))
    with pytest.raises(InputError,
                       match=f"{re.escape(str(bad))}: histogram 'signal_region' is not named"):
        api.load_histograms(bad)
    empty = tmp_path / "empty.root"
    with uproot.recreate(empty):
        pass
    with pytest.raises(InputError, match="no TH1 histogram"):
        api.load_histograms(empty)


def test_inspect_workspace_summarizes_the_spec():
    spec = workspace.load(embedded_run().folder / "workspace.json")
    text = api.inspect_workspace(spec)
    samples = {s["name"] for ch in spec["channels"] for s in ch["samples"]}
    assert f"channels  {len(spec['channels'])}\n" in text
    assert f"samples  {len(samples)}\n" in text
    for channel in spec["channels"]:
        assert channel["name"] in text
    assert api.inspect_workspace(embedded_run().folder / "workspace.json") == text
    with pytest.raises(InputError, match="workspace file not found"):
        api.inspect_workspace(embedded_run().folder / "nothing.json")


def test_the_fit_stage_result_renders_short():
    inference = embedded_run().run.stage_results["fit_result"]
    lines = repr(inference).splitlines()
    assert lines[0] == "InferenceResult" and len(lines) < 10
    assert lines[1].endswith(inference.summary_line())
    html = inference._repr_html_()
    assert html.startswith("<table") and html.count("<tr>") == len(lines) - 1
    assert all(channel in html for channel in inference.channels)


def test_hist_plots_out_of_the_box(tmp_path, cfg):
    """The seed's first plot: hist's stack plot needs mplhep, a dependency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = api.load_histograms(embedded_run().full)
    fig = plt.figure()
    low, rebin = cfg.binning.fit_low * 1j, hist.rebin(cfg.binning.fit_rebin)  # the seed's
    artists = h[low::rebin, "4j1b", :, "nominal", sum].stack("process")[::-1].plot(  # 120j, 2
        stack=True, histtype="fill", linewidth=1, edgecolor="grey")
    assert len(artists) == len(h.axes["process"])
    fig.savefig(tmp_path / "stack.png")
    plt.close(fig)
    assert (tmp_path / "stack.png").read_bytes()[:8] == PNG_MAGIC


def test_progress_bar_suits_where_it_is_shown(monkeypatch):
    from tqdm import tqdm as text_bar

    assert not progress.in_notebook()  # pytest is no Jupyter kernel
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert progress.shown(None) is False and progress.shown(True) is True
    bar = progress.progress_bar(3, None, dynamic_ncols=True)
    assert bar.disable and type(bar) is text_bar
    bar.close()
    monkeypatch.setattr(progress, "has_widgets", lambda: False)
    assert progress.bar_class(notebook=True) is text_bar  # no ipywidgets: the text bar
    monkeypatch.setattr(progress, "has_widgets", lambda: True)
    pytest.importorskip("ipywidgets")
    assert progress.bar_class(notebook=True).__module__ == "tqdm.notebook"
    assert progress.bar_class(notebook=False) is text_bar


def test_logging_goes_through_a_shown_bar_only():
    import contextlib
    import io

    hidden = progress.progress_bar(2, False)
    assert isinstance(progress.redirect_logging(hidden), contextlib.nullcontext)
    shown = progress.progress_bar(2, True, file=io.StringIO())
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    try:
        with progress.redirect_logging(shown):  # the console handler writes through the bar
            assert console not in root.handlers
            assert any(getattr(h, "tqdm_class", None) is type(shown) for h in root.handlers)
        assert console in root.handlers
    finally:
        root.removeHandler(console)
        shown.close()


def test_metrics_json_of_the_run_is_what_the_result_holds():
    """The notebook prints the seed's metrics from ``result.metrics``: the file's record."""
    run = embedded_run().run
    record = json.loads((run.output_dir / "metrics.json").read_text())
    for key in ("entries", "processtime", "walltime", "bytesread", "num_workers"):
        assert record[key] == run.metrics[key]
