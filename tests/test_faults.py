"""Faults of remote inputs, against the real XRootD server: retried, bounded, named, nothing lost.

Each scenario ends with histograms identical to the clean local run or with every missing chunk
named (URL and cause); times are bounded by short ``io_timeout`` and ``retry_backoff`` values.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from xrootd_server import DroppingProxy, XRootDServer, free_port, url_fileset

from agc_core import io
from agc_core.io import remote
from agc_core.results import RunOptions
from agc_core.runner import run_analysis

CHUNK = 700
TIMEOUT = 1.0


@pytest.fixture
def clean_run(small_run):
    """The clean local run every fault scenario is compared with."""
    return small_run


@pytest.fixture(scope="module")
def fault_server(xrootd_server, small_dataset, tmp_path_factory):
    """A server of their own for the fault tests (killed, frozen, restarted), with the small
    dataset; the XRootD client meets it with the short test timeout already set (it takes
    a server's settings when it first connects)."""
    import tempfile

    remote.set_io_timeout(TIMEOUT)
    srv = XRootDServer(Path(tempfile.mkdtemp(prefix="agc-core-xrootd-faults-")))
    shutil.copytree(small_dataset.parent, srv.root / "ds")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.base, ignore_errors=True)
        remote.set_io_timeout(remote.DEFAULT_IO_TIMEOUT)


@pytest.fixture(scope="module")
def served_dataset(fault_server, small_dataset):
    """The fileset JSON of the small dataset in the fault server's export."""
    return fault_server.root / "ds" / small_dataset.name


@pytest.fixture
def server(fault_server):
    """The fault server, thawed or restarted after the test (a fault may leave it down)."""
    io.close_files()
    remote.set_io_timeout(TIMEOUT)
    yield fault_server
    fault_server.ensure_running()
    io.close_files()


def assert_identical(result, clean) -> None:
    assert result.complete, [f.describe() for f in result.failures]
    assert result.n_events == clean.n_events
    a, b = result.hist, clean.hist
    assert a.axes == b.axes
    assert np.array_equal(a.view(flow=True).value, b.view(flow=True).value)
    assert np.array_equal(a.view(flow=True).variance, b.view(flow=True).variance)


@pytest.mark.parametrize("scheme", ["root", "https"])
def test_server_down_from_the_start(served_dataset, server, clean_run, tmp_path, scheme):
    port = free_port()  # nothing listens there
    fileset = url_fileset(served_dataset, server, scheme, tmp_path, port=port)
    t0 = time.perf_counter()
    r = run_analysis(replace(clean_run.options, fileset=fileset, output_dir=tmp_path / "out",
                             max_retries=1, retry_backoff=0.1))
    elapsed = time.perf_counter() - t0
    assert not r.complete and r.exit_code == 1 and r.n_events == 0
    assert len(r.failures) == 9  # every file, named
    for f in r.failures:
        assert f.path.startswith(f"{scheme}://127.0.0.1:{port}/") and f.path in f.error
        assert f"127.0.0.1:{port}" in f.error.replace(f.path, "")  # the server, as the cause
        assert "corrupt" not in f.error and f.attempts <= 2
    # once one file failed for good, the others of that server are given up at once
    assert sum(f.attempts == 2 for f in r.failures) >= 1
    assert sum("given up, 127.0.0.1" in f.error for f in r.failures) >= 1
    print(f"\n{scheme} server down: {elapsed:.1f} s to fail; {r.failures[0].describe()}")


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_frozen_server_costs_one_timeout_per_try(served_dataset, server, cfg, scheme):
    remote.set_io_timeout(TIMEOUT)
    local = next(served_dataset.parent.glob("ttbar__nominal/*.root"))
    url = server.url(scheme, local.relative_to(server.root))
    io.read_chunk(url, cfg.analysis_branches, 0, 10)  # opened and cached
    server.freeze()
    try:
        for start in (100, 200):  # the cached handle, then a fresh open
            t0 = time.perf_counter()
            with pytest.raises(remote.TransientInputError) as info:
                io.read_chunk(url, cfg.analysis_branches, start, start + 10)
            elapsed = time.perf_counter() - t0
            assert str(info.value).startswith(url)
            assert f"no answer from 127.0.0.1:{server.port} in {TIMEOUT:g} s" in str(info.value)
            assert elapsed < 30  # bounded (~1 s; the clients' defaults wait 300-1800 s)
            print(f"\n{scheme} frozen: {elapsed:.1f} s; {info.value}")
    finally:
        server.thaw()
    assert io.read_chunk(url, cfg.analysis_branches, 100, 110).n_events == 10


def test_frozen_server_run_is_bounded_and_named(served_dataset, server, clean_run, tmp_path):
    fileset = url_fileset(served_dataset, server, "http", tmp_path)
    server.freeze()
    try:
        t0 = time.perf_counter()
        r = run_analysis(replace(clean_run.options, fileset=fileset,
                                 output_dir=tmp_path / "out", max_retries=0, io_timeout=1.0))
        elapsed = time.perf_counter() - t0
    finally:
        server.thaw()
    assert not r.complete and len(r.failures) == 9
    assert all("no answer from 127.0.0.1" in f.error and "in 1 s" in f.error
               for f in r.failures)
    print(f"\nfrozen server, whole run: {elapsed:.1f} s; {r.failures[0].describe()}")


# a chunk processor that kills the server once, after the chunk it is given (in process:
# the iterative executor), and restarts it shortly after from a thread
_KILL: dict = {}


def kill_server_once(chunk, sample, cfg, classifier, seed):
    from agc_core.processor import process_chunk

    if _KILL and not _KILL.get("done") and sample.process == _KILL["process"]:
        _KILL["done"] = True
        srv = _KILL["server"]
        srv.kill()

        def restart():
            try:
                srv.start()
            except Exception as exc:  # reported by the test
                _KILL["error"] = exc

        threading.Timer(_KILL["down_s"], restart).start()
    return process_chunk(chunk, sample, cfg, classifier, seed)


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_server_killed_mid_run_and_restarted(served_dataset, server, clean_run, tmp_path,
                                             scheme):
    fileset = url_fileset(served_dataset, server, scheme, tmp_path)
    _KILL.clear()
    _KILL.update(server=server, process="wjets", down_s=0.5)
    try:
        t0 = time.perf_counter()
        # each worker fetches its own chunk from the server here (the read-ahead or the byte
        # cache would have had them all before the kill; test_prefetch_fails_and_the_worker_
        # retries kills the server while the read-ahead fetches)
        r = run_analysis(replace(clean_run.options, fileset=fileset,
                                 output_dir=tmp_path / "out", max_retries=4,
                                 retry_backoff=0.5, read_ahead=False, cache=False,
                                 processor=f"{__name__}:kill_server_once"))
        elapsed = time.perf_counter() - t0
        error = _KILL.get("error")
    finally:
        _KILL.clear()
    assert error is None, f"the server did not restart: {error}"
    assert_identical(r, clean_run)
    log = (tmp_path / "out" / "agc.log").read_text()
    retried = [line for line in log.splitlines() if "retrying" in line]
    assert retried and f"127.0.0.1:{server.port}" in retried[0]
    print(f"\n{scheme} killed and restarted: {elapsed:.1f} s, {len(retried)} retries; "
          f"{retried[0].split(': ', 1)[1]}")


def test_prefetch_fails_and_the_worker_retries(served_dataset, server, clean_run, tmp_path,
                                               caplog):
    """The server is killed while the read-ahead fetches the next chunks (through a proxy
    adding 300 ms to each round trip, so that fetches are in flight then): those prefetches
    fail and are named, their chunks are fetched by the worker (retried while the server is
    down), and nothing is lost or counted twice."""
    from agc_core.bench.proxy import DelayProxy

    _KILL.clear()
    _KILL.update(server=server, process="ttbar", down_s=1.0)
    proxy = DelayProxy(server.port, 0.3)
    try:
        fileset = url_fileset(served_dataset, server, "http", tmp_path, port=proxy.port)
        with caplog.at_level("INFO", logger="agc_core"):
            r = run_analysis(replace(clean_run.options, fileset=fileset,
                                     output_dir=tmp_path / "out", max_retries=6,
                                     retry_backoff=0.3, io_timeout=3.0,
                                     processor=f"{__name__}:kill_server_once"))
        error = _KILL.get("error")
    finally:
        _KILL.clear()
        proxy.close()
    assert error is None, f"the server did not restart: {error}"
    assert_identical(r, clean_run)  # every chunk once: the same events and histograms
    assert r.prefetch is not None and r.prefetch["failed"] >= 1, r.prefetch
    assert r.prefetch["chunks"] + r.prefetch["failed"] == r.n_chunks
    named = [m for m in caplog.messages if m.startswith("prefetch of ")]
    assert len(named) == r.prefetch["failed"]
    assert all(" file http://127.0.0.1:" in m and "entries [" in m and "its worker reads it"
               in m for m in named)
    assert r.bytes_from_network > 0 and r.bytes_from_cache == 0  # a cold cache: all fetched
    print(f"\nread-ahead with the server killed: {r.prefetch}; {named[0]}")


def test_proxy_dropping_connections(served_dataset, server, clean_run, tmp_path):
    proxy = DroppingProxy(server.port, every=10)
    try:
        fileset = url_fileset(served_dataset, server, "http", tmp_path, port=proxy.port)
        t0 = time.perf_counter()
        r = run_analysis(replace(clean_run.options, fileset=fileset,
                                 output_dir=tmp_path / "out", max_retries=5,
                                 retry_backoff=0.05, io_timeout=5.0))
        elapsed = time.perf_counter() - t0
    finally:
        proxy.close()
    assert proxy.dropped >= 1
    assert_identical(r, clean_run)
    print(f"\nproxy: {proxy.dropped} of {proxy.accepted} connections dropped, "
          f"{elapsed:.1f} s, identical")


# --- an event with an absurd multiplicity: skipped and named, not its whole chunk -----------


def rewrite_with_jets(src: Path, dst: Path, branches, entry: int, n_jets: int) -> None:
    """Copy the analysis branches of ``src`` to ``dst``; event ``entry`` gets ``n_jets`` jets."""
    with uproot.open(src) as f:
        arrays = f["events"].arrays(list(branches), library="ak")
    groups: dict = {}
    scalars = {}
    for name in branches:
        coll, _, prop = name.partition("_")
        if arrays[name].ndim == 2:
            groups.setdefault(coll, {})[prop] = arrays[name]
        else:
            scalars[name] = ak.to_numpy(arrays[name])
    data = {c: ak.zip(props) for c, props in groups.items()}
    jets = data["jet"]
    one = jets[entry][:1] if len(jets[entry]) else jets[ak.num(jets) > 0][0][:1]
    middle = ak.Array([ak.to_list(one) * n_jets])
    data["jet"] = ak.concatenate([jets[:entry], ak.values_astype(middle, np.float32)
                                  if n_jets else jets[entry:entry + 1][:, :0],
                                  jets[entry + 1:]])
    data.update(scalars)
    with uproot.recreate(dst) as f:
        f.mktree("events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                            for k, v in data.items()}, counter_name=lambda c: "number" + c)
        f["events"].extend(data)


def test_absurd_multiplicity_skips_one_event(small_dataset, cfg, tmp_path):
    """300 jets in one event: that event is skipped and named, the rest of its chunk is kept;
    the histograms equal those of the same file where that event has no jets at all (but for
    the rewritten file's pt_res_up: its JER draws are keyed on the file's own UUID)."""
    entry, limit = 1234, cfg.input_checks.max_objects_per_event
    runs = {}
    for label, n_jets in (("absurd", limit + 44), ("empty", 0)):
        data = tmp_path / label
        shutil.copytree(small_dataset.parent, data)
        target = data / "wjets__nominal" / "0.root"
        rewrite_with_jets(small_dataset.parent / "wjets__nominal" / "0.root", target,
                          cfg.analysis_branches, entry, n_jets)
        runs[label] = run_analysis(RunOptions(
            fileset=data / small_dataset.name, output_dir=tmp_path / f"out_{label}",
            chunksize=CHUNK, inference="none", plots=False, executor="iterative",
            progress=False, fit=False))
    r, ref = runs["absurd"], runs["empty"]
    target = tmp_path / "absurd" / "wjets__nominal" / "0.root"
    assert r.failures == () and not r.complete and r.exit_code == 1
    assert r.skipped_events == (
        f"{target} entry {entry}: {limit + 44} objects in 'numberjet' (more than "
        f"input_checks.max_objects_per_event = {limit}): event skipped",)
    assert r.skipped_events[0] in r.input_warnings
    metrics = json.loads((tmp_path / "out_absurd" / "metrics.json").read_text())
    assert metrics["events_skipped"] == 1 and metrics["complete"] is False
    assert metrics["skipped_events"] == list(r.skipped_events)
    assert ref.complete and r.n_events == ref.n_events
    a, b = r.hist.view(flow=True), ref.hist.view(flow=True)
    keep = np.ones(a.shape, bool)
    keep[:, :, r.hist.axes[2].index("wjets"), r.hist.axes[3].index("pt_res_up")] = False
    # equal but for the order of the float64 additions (the skipped event splits its chunk)
    np.testing.assert_allclose(a.value[keep], b.value[keep], rtol=1e-14, atol=0)
    np.testing.assert_allclose(a.variance[keep], b.variance[keep], rtol=1e-14, atol=0)
    assert replace(r, options=replace(r.options, allow_partial=True)).exit_code == 0


# --- interrupted runs and --resume ----------------------------------------------------------

_CONTROL: dict = {}


def controlled_processor(chunk, sample, cfg, classifier, seed):
    """The kernels' processor, counting its calls; SIGTERMs this process on call ``stop_at``."""
    import os
    import signal

    from agc_core.processor import process_chunk

    _CONTROL["calls"] = _CONTROL.get("calls", 0) + 1
    if _CONTROL["calls"] == _CONTROL.get("stop_at"):
        os.kill(os.getpid(), signal.SIGTERM)
    return process_chunk(chunk, sample, cfg, classifier, seed)


def test_sigterm_then_resume_equals_an_uninterrupted_run(small_dataset, small_run, tmp_path):
    opts = replace(small_run.options, output_dir=tmp_path / "out",
                   processor=f"{__name__}:controlled_processor")
    _CONTROL.clear()
    _CONTROL["stop_at"] = 4
    try:
        first = run_analysis(opts)
    finally:
        _CONTROL.clear()
    assert not first.complete and first.exit_code == 1
    assert {f.error for f in first.failures} == {"interrupted"}
    assert len(first.failures) == small_run.n_chunks - 3  # three chunks finished
    records = sorted((tmp_path / "out" / "resume").glob("*/*.npz"))
    assert len(records) == 3
    assert not list((tmp_path / "out" / "resume").glob("*/.*.tmp"))  # nothing half-written

    again = run_analysis(replace(opts, resume=True))
    assert _CONTROL["calls"] == small_run.n_chunks - 3  # only the rest was processed
    assert_identical(again, small_run)
    assert again.n_chunks == small_run.n_chunks
    assert not (tmp_path / "out" / "resume").exists()  # complete: nothing left to resume
