"""Tests of agc_core.runner (and report): chunking, executors, merging, outputs, faults, CLI."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from agc_core import io
from agc_core.cli import main
from agc_core.config import REGIONS
from agc_core.errors import ConfigError
from agc_core.fileset import load_fileset
from agc_core.histograms import HistArray
from agc_core.outputs import load_full_histogram, load_uhi_histogram
from agc_core.report import METRICS_FIELDS
from agc_core.runner import (
    ChunkTask,
    EntriesCache,
    OrderedMerger,
    RunOptions,
    even_ranges,
    plan_tasks,
    run_analysis,
)

BACKEND = "kernels"
EVENTS = 2000
CHUNK = 600  # three chunks per file: [0, 600), [600, 1200), [1200, 2000)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny embedded dataset: one file of 2000 events per sample."""
    from agc_core.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("dataset")
    return Path(generate_dataset(out, events_per_file=EVENTS, files_per_sample=1,
                                 progress=False))


def options(dataset: Path, out: Path, **kw) -> RunOptions:
    base = RunOptions(fileset=dataset, output_dir=out, chunksize=CHUNK, inference="none",
                      plots=False, executor="iterative", progress=False,
                      processor=BACKEND)
    return replace(base, **kw)


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """The in-process run with every output (plots included)."""
    out = tmp_path_factory.mktemp("iterative")
    return run_analysis(options(dataset, out, plots=True))


def assert_same_hist(a, b) -> None:
    """Identical histograms: same axes, every sum of weights and of squares bit for bit."""
    assert a.axes == b.axes
    np.testing.assert_array_equal(a.view(flow=True).value, b.view(flow=True).value,
                                  strict=True)
    np.testing.assert_array_equal(a.view(flow=True).variance, b.view(flow=True).variance,
                                  strict=True)


# --- planning and merging ---------------------------------------------------------------------


def test_even_ranges():
    assert even_ranges(0, 10) == []
    assert even_ranges(10, 10) == [(0, 10)]
    assert even_ranges(10, 4) == [(0, 3), (3, 7), (7, 10)]
    assert even_ranges(1001, 500) == [(0, 334), (334, 667), (667, 1001)]


def test_plan_tasks_is_stable_and_cached(dataset, cfg, tmp_path, monkeypatch):
    samples = load_fileset(dataset, cfg)
    cache = EntriesCache(tmp_path / "cache.json")
    tasks, failures = plan_tasks(samples, cfg.analysis_branches, CHUNK, cache=cache)
    cache.save()
    assert not failures
    assert [t.index for t in tasks] == list(range(len(tasks))) and len(tasks) == 27
    assert [(t.entry_start, t.entry_stop) for t in tasks[:3]] == [(0, 600), (600, 1200),
                                                                  (1200, 2000)]
    assert [t.sample_id for t in tasks] == sorted(t.sample_id for t in tasks)

    def no_io(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    from agc_core import planning

    monkeypatch.setattr(planning, "_inspect_file", no_io)
    from agc_core import io

    monkeypatch.setattr(io, "file_layout", no_io)
    again, _ = plan_tasks(samples, cfg.analysis_branches, CHUNK,
                          cache=EntriesCache(tmp_path / "cache.json"))
    assert again == tasks
    # every task carries its file's basket layout (cached too), which its worker reads by
    assert all(t.layout is not None and t.layout == a.layout
               for t, a in zip(tasks, again, strict=True))
    assert tasks[0].layout["branches"].keys() == set(cfg.analysis_branches)
    from agc_core.resume import run_key

    bare = [replace(t, layout=None) for t in tasks]
    assert run_key(bare, {}) == run_key(tasks, {})  # the layout follows from the file


def test_plan_reports_unreadable_file(cfg, tmp_path, dataset):
    samples = load_fileset(dataset, cfg)
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"root" + b"\0" * 100)
    s0 = samples[0]
    samples[0] = replace(s0, files=(replace(s0.files[0], path=str(broken)),))
    tasks, failures = plan_tasks(samples, cfg.analysis_branches, CHUNK)
    assert len(failures) == 1 and failures[0].path == str(broken)
    assert failures[0].entry_start is None and "whole file" in failures[0].describe()
    assert len(tasks) == 24


def test_ordered_merger_does_not_depend_on_arrival(cfg):
    rng = np.random.default_rng(5)
    tasks = [ChunkTask(i, "ttbar", "nominal", i % 2, 0, "f", 0, 1, 1.0) for i in range(40)]
    hists = []
    for _ in tasks:
        h = HistArray.empty(["nominal"], cfg)
        h.sumw[:] = rng.random(h.sumw.shape) * 10.0 ** rng.integers(-8, 8)
        h.sumw2[:] = h.sumw ** 2
        hists.append(h)
    in_order = OrderedMerger(tasks)
    for t in tasks:
        in_order.add(t.index, hists[t.index])
    shuffled = OrderedMerger(tasks)
    order = list(range(40))
    random.Random(1).shuffle(order)
    for i in order:
        shuffled.add(i, hists[i])
    assert in_order.done and shuffled.done
    for sid in (0, 1):
        assert np.array_equal(in_order.sums[sid].sumw, shuffled.sums[sid].sumw)
        assert np.array_equal(in_order.sums[sid].sumw2, shuffled.sums[sid].sumw2)


# --- executors and workers ----------------------------------------------------------------


@pytest.mark.parametrize("executor, workers", [("processes", 1), ("processes", 2),
                                               ("dask", 2)])
def test_executors_and_worker_counts_give_identical_histograms(
        dataset, tmp_path, reference_run, executor, workers):
    if executor == "dask":
        pytest.importorskip("distributed")
    result = run_analysis(options(dataset, tmp_path, executor=executor, workers=workers))
    check_identical(result, reference_run, tmp_path, workers)


def test_existing_dask_cluster(dataset, tmp_path, reference_run):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        result = run_analysis(options(dataset, tmp_path, executor="dask",
                                      scheduler_address=cluster.scheduler_address))
    check_identical(result, reference_run, tmp_path, 2)


def check_identical(result, reference_run, tmp_path, workers):
    assert result.complete and result.num_workers == workers
    assert result.n_events == reference_run.n_events == 9 * EVENTS
    assert_same_hist(result.hist, reference_run.hist)
    assert not list(tmp_path.glob(".warmup*")) and not list(tmp_path.glob(".classifier*"))
    if result.options.executor == "processes" and workers == 2:
        pids = {w.worker for w in result.workers}
        assert len(pids) == 2
        text = (tmp_path / "agc.log").read_text()
        assert all(f"worker {w} ready" in text for w in pids)  # workers log into agc.log


def test_kernels_backend_matches_the_reference(dataset, tmp_path, reference_run):
    """End to end: the numba kernels fill what the awkward reference of the seed fills."""
    r = run_analysis(options(dataset, tmp_path, processor="reference"))
    assert r.complete, [f.describe() for f in r.failures]
    assert_same_hist(r.hist, reference_run.hist)  # bit for bit, every bin and variance


def test_forkserver_warmup_instructions(dataset, cfg, tmp_path, monkeypatch):
    import os

    samples = load_fileset(dataset, cfg)
    tasks, _ = plan_tasks(samples, cfg.analysis_branches, CHUNK)
    from agc_core import worker
    from agc_core.classifier import load_classifier
    from agc_core.logs import LogSetup

    classifier = load_classifier("numba", cfg=cfg)
    setup = worker.WorkerSetup(str(cfg.path), "numba", None, 0, False, cfg.analysis_branches,
                               "events", False, LogSetup(None),
                               worker.BACKENDS["kernels"], classifier)
    monkeypatch.delenv(worker.WARMUP_ENV, raising=False)
    with worker.forkserver_warmup(tasks, setup, tmp_path):
        spec = json.loads(os.environ[worker.WARMUP_ENV])
        assert spec["path"] == tasks[0].path and spec["stop"] == worker.WARMUP_ENTRIES
        assert Path(spec["classifier"]).is_file()
        worker.warm_up_from_env()  # what the fork server does when it imports the worker
    assert worker.WARMUP_ENV not in os.environ
    assert not Path(spec["classifier"]).exists()


def test_early_forkserver_instructions(dataset, cfg, tmp_path, monkeypatch):
    """The protocol of a fork server started before planning (forkserver.start): it
    pre-warms on in-memory events, then waits for the instructions file the pool writes,
    warms the reader on the first task, and every file is gone afterwards."""
    import os

    from agc_core import forkserver, worker
    from agc_core.classifier import load_classifier
    from agc_core.logs import LogSetup

    tasks, _ = plan_tasks(load_fileset(dataset, cfg), cfg.analysis_branches, CHUNK)
    setup = worker.WorkerSetup(str(cfg.path), "numba", None, 0, False, cfg.analysis_branches,
                               "events", False, LogSetup(None), worker.BACKENDS["kernels"],
                               load_classifier("numba", cfg=cfg))
    early = tmp_path / ".warmup.test.json"
    calls = []
    real = worker.load_function
    monkeypatch.setattr(worker, "load_function",
                        lambda spec: (lambda chunk, *a: calls.append(chunk.n_events)
                                      or real(spec)(chunk, *a)))
    server_env = json.dumps({"wait_for": str(early), "parent": os.getppid(), "timeout": 5.0,
                             "config": str(cfg.path), "processor": worker.BACKENDS["kernels"]})
    with worker.forkserver_warmup(tasks, setup, tmp_path, early):
        spec = json.loads(early.read_text())
        assert spec["path"] == tasks[0].path and Path(spec["classifier"]).is_file()
        monkeypatch.setenv(worker.WARMUP_ENV, server_env)  # what the fork server was given
        worker.warm_up_from_env()
    assert calls == [worker.WARMUP_ENTRIES, worker.WARMUP_ENTRIES]  # in memory, then the file
    assert not early.exists() and not Path(spec["classifier"]).exists()
    # no local file (none, or remote ones: a fetch in the fork server): the MLP alone
    remote = [replace(t, path="root://127.0.0.1:1//f.root") for t in tasks]
    for given in ([], remote):
        calls.clear()
        with worker.forkserver_warmup(given, setup, tmp_path, early):
            spec = json.loads(early.read_text())
            assert spec["path"] is None and Path(spec["classifier"]).is_file()
            monkeypatch.setenv(worker.WARMUP_ENV, server_env)
            worker.warm_up_from_env()
        assert calls == [worker.WARMUP_ENTRIES]  # in memory only
        assert not early.exists() and not Path(spec["classifier"]).exists()
    # nothing to do: an empty object, which the fork server removes
    with worker.forkserver_warmup([], replace(setup, classifier=None), tmp_path, early):
        assert json.loads(early.read_text()) == {}
    assert forkserver.wait_for_instructions(json.loads(server_env)) == {}
    assert not early.exists()


# --- outputs ------------------------------------------------------------------------------


def test_run_outputs(reference_run, cfg):
    r = reference_run
    out = r.output_dir
    assert r.complete and r.exit_code == 0 and r.n_chunks == 27
    assert set(r.outputs) >= {"histograms.root", "histograms_full.npz",
                              "histograms_full.uhi.json", "metrics.json"}
    plots = {n for n in r.outputs if n.startswith("plots/")}
    assert {f"plots/{n}.png" for n in ("stack_4j1b_ht", "stack_4j2b_mbjj", "btag_variations",
                                       "jet_energy_variations")} <= plots
    assert not [n for n in plots if "classification" in n or "accuracy" in n]  # no MLP
    expected = {f"{region}_pseudodata" for region in REGIONS}
    for process, variation in cfg.samples:
        for v in cfg.fill_variations(process, variation):
            expected |= {f"{region}_{process}" + ("" if v == "nominal" else f"_{v}")
                         for region in REGIONS}
    with uproot.open(out / "histograms.root") as f:
        names = {k.split(";")[0] for k in f.keys()}
        assert names == expected
        for name in names:
            assert len(f[name].values()) == 11
    assert_same_hist(load_full_histogram(out / "histograms_full.npz"), r.hist)
    uhi = load_uhi_histogram(out / "histograms_full.uhi.json")
    np.testing.assert_array_equal(uhi.view(flow=True).value, r.hist.view(flow=True).value)
    np.testing.assert_array_equal(uhi.view(flow=True).variance,
                                  r.hist.view(flow=True).variance)
    assert {y.process for y in r.yields} == set(cfg.xsec_pb)
    ttbar = next(y for y in r.yields if (y.process, y.variation) == ("ttbar", "nominal"))
    assert ttbar.n_events == EVENTS and ttbar.raw["4j2b"] > 0
    w = next(s for s in load_fileset(r.fileset, cfg) if s.process == "ttbar").xsec_weight
    assert ttbar.weighted["4j2b"] == pytest.approx(ttbar.raw["4j2b"] * w)


def test_metrics_json_has_documented_fields(reference_run):
    metrics = json.loads((reference_run.output_dir / "metrics.json").read_text())
    assert set(METRICS_FIELDS) <= set(metrics)
    assert metrics["entries"] == 9 * EVENTS
    assert metrics["chunks"] == 27 and metrics["chunks_failed"] == 0
    assert metrics["complete"] is True and metrics["mode"] == "analysis"
    assert metrics["bytesread"] > 0 and metrics["walltime"] > 0
    assert metrics["event_rate_hz"] == pytest.approx(metrics["entries"] / metrics["walltime"])
    assert metrics["columns"] == list(reference_run.columns)
    assert metrics["versions"]["numpy"] == np.__version__
    assert len(metrics["workers"]) == 1 and metrics["workers"][0]["max_rss_mb"] > 0
    assert metrics["executor"] == "iterative" and metrics["chunksize"] == CHUNK


def test_systematics_none_keeps_only_nominal(dataset, tmp_path, reference_run):
    r = run_analysis(options(dataset, tmp_path, systematics="none"))
    assert r.complete and {y.variation for y in r.yields} == {"nominal"}
    assert [r.hist.axes[3][i] for i in range(len(r.hist.axes[3]))] == ["nominal"]
    with uproot.open(tmp_path / "histograms.root") as f:
        names = {k.split(";")[0] for k in f.keys()}
    assert len(names) == 10 and not any("pseudodata" in n for n in names)
    ref = reference_run.hist
    for ip, process in enumerate(r.hist.axes[2]):
        jp = ref.axes[2].index(process)
        np.testing.assert_array_equal(r.hist.view(flow=True).value[:, :, ip, 0],
                                      ref.view(flow=True).value[:, :, jp,
                                                                ref.axes[3].index("nominal")])


# --- I/O only -----------------------------------------------------------------------------


def basket_bytes(path: str, branches) -> int:
    """Compressed bytes of every basket of the branches, as stored (fBasketBytes)."""
    with uproot.open(path) as f:
        tree = f["events"]
        return sum(int(np.sum(tree[b].member("fBasketBytes")[:tree[b].num_baskets]))
                   for b in branches)


@pytest.mark.parametrize("percent", [4, 25])
def test_io_only_reads_exactly_its_branch_set(dataset, tmp_path, cfg, monkeypatch, percent):
    seen: list[tuple[str, ...]] = []
    read = io.read_chunk

    def spy(path, branches, *args, **kwargs):
        seen.append(tuple(branches))
        return read(path, branches, *args, **kwargs)

    monkeypatch.setattr(io, "read_chunk", spy)
    r = run_analysis(options(dataset, tmp_path, io_only=True, io_file_percent=percent,
                             chunksize=100_000))
    branches = tuple(cfg.io_branch_sets[percent])
    assert r.complete and r.hist is None and r.n_events == 9 * EVENTS
    assert set(seen) == {branches} and len(seen) == 9
    files = [f.path for s in load_fileset(dataset, cfg) for f in s.files]
    assert r.bytes_read == sum(basket_bytes(p, branches) for p in files)
    metrics = json.loads((tmp_path / "metrics_io.json").read_text())
    assert metrics["mode"] == "io_only" and metrics["io_file_percent"] == percent
    assert metrics["columns"] == list(branches)
    assert metrics["read_rate_mb_s"] > 0
    assert not (tmp_path / "histograms.root").exists()


# --- faults -------------------------------------------------------------------------------


def copy_dataset(dataset: Path, dest: Path) -> Path:
    shutil.copytree(dataset.parent, dest)
    return dest / dataset.name


def corrupt_basket(path: Path, branch: str = "jet_pt") -> None:
    """Overwrite the middle of a branch's first basket payload (the file keeps its size)."""
    with uproot.open(path) as f:
        b = f["events"][branch]
        seek = int(b.member("fBasketSeek")[0])
        nbytes = int(b.member("fBasketBytes")[0])
    with open(path, "r+b") as fh:
        fh.seek(seek + nbytes // 2)
        fh.write(b"\x00\xff" * 64)


def test_failing_chunks_are_reported_and_the_rest_kept(dataset, tmp_path, reference_run):
    fileset = copy_dataset(dataset, tmp_path / "data")
    bad = fileset.parent / "wjets__nominal" / "0.root"
    corrupt_basket(bad)
    r = run_analysis(options(fileset, tmp_path / "out", executor="processes", workers=2))
    assert not r.complete and r.exit_code == 1
    assert len(r.failures) == 3  # the file's three chunks, each named
    for failure, (a, b) in zip(r.failures, [(0, 600), (600, 1200), (1200, 2000)],
                               strict=True):
        assert (failure.process, failure.variation, failure.path) == ("wjets", "nominal",
                                                                      str(bad))
        assert (failure.entry_start, failure.entry_stop) == (a, b)
        assert str(bad) in failure.error and failure.attempts == 1  # bad input: no retry
    assert r.n_events == 8 * EVENTS
    # every other sample's histograms are kept, identical to the clean run
    ref, got = reference_run.hist, r.hist
    assert "wjets" not in list(got.axes[2])
    for process in ("ttbar", "single_top_s_chan", "single_top_t_chan", "single_top_tW"):
        for variation in got.axes[3]:
            a = got.view(flow=True)[:, :, got.axes[2].index(process),
                                    got.axes[3].index(variation)]
            b = ref.view(flow=True)[:, :, ref.axes[2].index(process),
                                    ref.axes[3].index(variation)]
            np.testing.assert_array_equal(a.value, b.value)
            np.testing.assert_array_equal(a.variance, b.variance)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["chunks_failed"] == 3
    assert metrics["failed_chunks"][0]["path"] == str(bad)
    assert (tmp_path / "out" / "histograms.root").exists()
    assert replace(r, options=replace(r.options, allow_partial=True)).exit_code == 0


def die_on_first_wjets_chunk(chunk, sample, cfg, classifier, seed):
    """A chunk processor whose worker dies (hard exit) on the first W+jets chunk."""
    import os

    from agc_core.processor import process_chunk

    if sample.process == "wjets" and chunk.entry_start == 0:
        os._exit(3)
    return process_chunk(chunk, sample, cfg, classifier, seed)


def test_dying_worker_chunk_is_retried_then_reported(dataset, tmp_path, reference_run):
    r = run_analysis(options(dataset, tmp_path, executor="processes", workers=2,
                             max_retries=1,
                             processor=f"{__name__}:die_on_first_wjets_chunk"))
    assert not r.complete and len(r.failures) == 1
    failure = r.failures[0]
    assert (failure.process, failure.entry_start, failure.entry_stop) == ("wjets", 0, 600)
    assert failure.error.startswith("WorkerDied") and failure.attempts == 2
    assert r.n_events == 9 * EVENTS - 600  # every other chunk survived the deaths
    ref = reference_run.hist
    for process in ("ttbar", "single_top_tW"):
        np.testing.assert_array_equal(
            r.hist.view(flow=True).value[:, :, r.hist.axes[2].index(process)],
            ref.view(flow=True).value[:, :, ref.axes[2].index(process)])


def test_truncated_file_fails_by_name_in_the_cli(dataset, tmp_path, capsys):
    fileset = copy_dataset(dataset, tmp_path / "data")
    bad = fileset.parent / "single_top_tW__nominal" / "0.root"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    args = ["run", "--fileset", str(fileset), "--output-dir", str(tmp_path / "out"),
            "--executor", "iterative", "--inference", "none", "--no-plots",
            "--backend", BACKEND]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "FAILED chunk" in captured.out and str(bad) in captured.out
    assert "truncated" in captured.out
    assert "incomplete" in captured.err
    assert main([*args, "--allow-partial"]) == 0


_CALLS: list[int] = []


def interrupt_on_third_chunk(chunk, sample, cfg, classifier, seed):
    """A chunk processor that is 'interrupted' (Ctrl-C) on its third chunk."""
    from agc_core.reference import process_chunk_reference

    _CALLS.append(1)
    if len(_CALLS) == 3:
        raise KeyboardInterrupt
    return process_chunk_reference(chunk, sample, cfg, classifier, seed)


def test_interrupted_run_keeps_what_was_done(dataset, tmp_path):
    _CALLS.clear()
    r = run_analysis(options(dataset, tmp_path,
                             processor=f"{__name__}:interrupt_on_third_chunk"))
    assert not r.complete and r.n_events == 1200  # the first two chunks (600 each)
    assert len(r.failures) == 25 and {f.error for f in r.failures} == {"interrupted"}
    assert (tmp_path / "histograms.root").exists() and (tmp_path / "metrics.json").exists()


# --- CLI and API ----------------------------------------------------------------------------


def rewrite_with_bad_values(path: Path) -> None:
    """Rewrite a file in the AGC schema with NaN, +inf and a negative value in jet_pt."""
    with uproot.open(path) as f:
        arrays = f["events"].arrays(["jet_pt", "jet_eta", "jet_phi", "jet_e", "jet_btag",
                                     "electron_pt", "muon_pt"])
    pt = np.asarray(ak.flatten(arrays["jet_pt"])).copy()
    pt[[3, 50, 51]] = [np.nan, np.inf, -40.0]
    jet = ak.zip({"pt": ak.unflatten(pt, ak.num(arrays["jet_pt"])),
                  **{k: arrays[f"jet_{k}"] for k in ("eta", "phi", "e", "btag")}})
    data = {"jet": jet, "electron": ak.zip({"pt": arrays["electron_pt"]}),
            "muon": ak.zip({"pt": arrays["muon_pt"]})}
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {k: v.type.content for k, v in data.items()},
                        counter_name=lambda c: f"number{c}",
                        field_name=lambda outer, inner: f"{outer}_{inner}")
        tree.extend(data)


def test_bad_values_are_reported_by_chunk_and_branch(dataset, tmp_path, capsys):
    fileset = copy_dataset(dataset, tmp_path / "data")
    bad = fileset.parent / "ttbar__nominal" / "0.root"
    rewrite_with_bad_values(bad)
    code = main(["run", "--fileset", str(fileset), "--output-dir", str(tmp_path / "out"),
                 "--executor", "iterative", "--no-plots", "--chunksize", str(CHUNK),
                 "--inference", "none", "--backend", BACKEND])
    assert code == 0  # reported, not fatal: the seed's cuts treat such values consistently
    out = capsys.readouterr().out
    assert f"input warning    : ttbar/nominal file {bad} entries [0, 600)" in out
    assert "branch 'jet_pt': 2 NaN/inf and 1 negative value(s)" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["input_warnings"]) == 1 and "'jet_pt'" in metrics["input_warnings"][0]


def test_cli_run_prints_summary(dataset, tmp_path, capsys):
    code = main(["run", "--fileset", str(dataset), "--output-dir", str(tmp_path),
                 "--executor", "iterative", "--no-plots", "--chunksize", "5000",
                 "--backend", BACKEND])  # with the shipped MLP (numba inference)
    assert code == 0
    out = capsys.readouterr().out
    # every file's entries (the generator-filtered W+jets file declares its own)
    entries = sum(f.get("entries", f["nevts"]) for vs in json.loads(dataset.read_text()).values()
                  for v in vs.values() for f in v["files"])
    assert f"events processed : {entries:,}" in out and "MLP accuracy" in out
    assert "4j2b weighted" in out and "ttbar nominal" in out
    assert str(tmp_path / "histograms.root") in out


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--fileset", "--n-files-max-per-sample", "--systematics", "--seed",
                 "--workers", "--executor", "--scheduler-address", "--chunksize",
                 "--inference", "--output-dir", "--allow-partial", "--config", "--io-only",
                 "--io-file-percent"):
        assert flag in text


def test_default_fileset_is_the_embedded_dataset(dataset, tmp_path, monkeypatch):
    import agc_core.synthetic

    monkeypatch.setattr(agc_core.synthetic, "ensure_dataset", lambda **kw: dataset)
    r = run_analysis(replace(options(dataset, tmp_path), fileset=None,
                             n_files_max_per_sample=1))
    assert r.complete and r.fileset == dataset


def test_invalid_options_are_config_errors(dataset, tmp_path):
    for bad in ({"systematics": "some"}, {"io_only": True, "io_file_percent": 7},
                {"chunksize": 0}, {"executor": "threads"}, {"workers": 0},
                {"inference": "onnx"}):
        with pytest.raises(ConfigError):
            run_analysis(options(dataset, tmp_path, **bad))


def test_library_logging_keeps_the_application_level(dataset, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    run_analysis(options(dataset, tmp_path))
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    assert "run complete" in (tmp_path / "agc.log").read_text()
    assert logging.getLogger("agc_core").propagate


# --- a script without the main guard -----------------------------------------------------------


def run_script(path: Path, text: str) -> subprocess.CompletedProcess:
    path.write_text(text)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=path.parent)


def test_unguarded_call_site_is_found(tmp_path):
    script = tmp_path / "probe.py"
    done = run_script(script, (
        "from agc_core.mainguard import unguarded_call_site\n"
        "def helper():\n"
        "    return unguarded_call_site()\n"
        "print('top', helper())\n"
        "if __name__ == '__main__':\n"
        "    print('guarded', helper())\n"
        "if '__main__' == __name__:\n"
        "    print('reversed', helper())\n"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"top ('{script}', 4)", "guarded None", "reversed None"]


def test_script_without_main_guard_is_told_what_to_do(dataset, tmp_path):
    """The processes executor in an unguarded script: a one-line error, no dying workers."""
    script = tmp_path / "analysis.py"
    done = run_script(script, (
        "from agc_core.runner import RunOptions, run_analysis\n"
        f"run_analysis(RunOptions(fileset={str(dataset)!r}, output_dir={str(tmp_path)!r},\n"
        "                         executor='processes', workers=1, inference='none',\n"
        "                         plots=False, progress=False))\n"))
    assert done.returncode != 0
    assert f"{script}:2: run_analysis is called at the top level of the script" in done.stderr
    assert "if __name__ == \"__main__\":" in done.stderr
    assert "keep dying" not in done.stderr + done.stdout


def test_first_run_compiles_before_processing_and_says_so(dataset, tmp_path, monkeypatch):
    from agc_core import compilation, runner
    from agc_core.report import format_summary

    assert compilation.kernels_cached(mlp=False)  # the suite has run the kernels by now
    calls = []
    monkeypatch.setattr(runner, "kernels_cached", lambda mlp: False)
    monkeypatch.setattr(runner, "compile_kernels",
                        lambda cfg, clf: calls.append(compilation.compile_kernels(cfg, clf)))
    # the background compilation (a forked process) fails: compiled in this process instead
    monkeypatch.setattr(compilation, "_compile_in_child", lambda cfg, clf: os._exit(3))
    r = run_analysis(options(dataset, tmp_path))
    assert r.complete and len(calls) == 1 and r.stage_times["compile"] > 0
    assert "compile_wait" not in r.stage_times
    assert "compiled on this first run" in format_summary(r)
    assert "before processing" in format_summary(r)
    monkeypatch.undo()
    # the background compilation succeeds: nothing compiled in this process
    calls.clear()
    monkeypatch.setattr(runner, "kernels_cached", lambda mlp: False)
    monkeypatch.setattr(runner, "compile_kernels", lambda cfg, clf: calls.append(1))
    r = run_analysis(options(dataset, tmp_path))
    assert r.complete and not calls and r.stage_times["compile"] > 0
    assert r.stage_times["compile_wait"] <= r.stage_times["compile"]
    assert "compiled on this first run" in format_summary(r)
    assert "alongside the dataset generation" in format_summary(r)
    monkeypatch.undo()
    again = run_analysis(options(dataset, tmp_path))
    assert "compile" not in again.stage_times
    assert "compiled" not in format_summary(again)


def test_jer_key_is_the_file_identity_not_its_position(dataset, cfg, tmp_path):
    """The same file gets the same JER key (its ROOT UUID) first or second in a sample, in
    any fileset; a rewritten file (new UUID) gets a new one."""
    from agc_core.planning import file_identity

    spec = json.loads(dataset.read_text())
    ttbar = spec["ttbar"]["nominal"]["files"][0]
    other = spec["ttbar"]["scaledown"]["files"][0]
    for entry in (ttbar, other):
        entry["path"] = str(dataset.parent / entry["path"])
    copy = tmp_path / "copy.root"
    shutil.copyfile(ttbar["path"], copy)
    rewritten = tmp_path / "rewritten.root"
    with uproot.open(ttbar["path"]) as f:
        arrays = f["events"].arrays(["jet_pt", "jet_eta"], how=dict)
    with uproot.recreate(rewritten) as f:
        f["events"] = arrays

    def key_of(files: list[dict], path: str) -> int:
        fileset = tmp_path / f"fileset{len(files)}.json"
        fileset.write_text(json.dumps({"ttbar": {"nominal": {"files": files,
                                                             "nevts_total": 1}}}))
        tasks, _ = plan_tasks(load_fileset(fileset, cfg), ["jet_pt"], CHUNK)
        return {t.file_id for t in tasks if t.path == path}.pop()

    alone = key_of([ttbar], ttbar["path"])
    assert alone == key_of([other, ttbar], ttbar["path"]) == file_identity(ttbar["path"])
    assert file_identity(str(copy)) == alone
    assert len({alone, file_identity(other["path"]), file_identity(str(rewritten))}) == 3
