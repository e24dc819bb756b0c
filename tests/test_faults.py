"""Faults of remote inputs, against the real XRootD server: retried, bounded, named, nothing lost.

Each scenario ends with histograms identical to the clean local run or with every missing chunk
named (URL and cause); times are bounded by short ``io_timeout`` and ``retry_backoff`` values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from xrootd_server import DroppingProxy, free_port, url_fileset

from agc_core import io, remote
from agc_core.results import RunOptions
from agc_core.runner import run_analysis

CHUNK = 700
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def clean_run(served_dataset, tmp_path_factory):
    """The clean local run every fault scenario is compared with."""
    out = tmp_path_factory.mktemp("clean")
    return run_analysis(RunOptions(fileset=served_dataset, output_dir=out, chunksize=CHUNK,
                                   inference="none", plots=False, executor="iterative",
                                   progress=False, io_timeout=TIMEOUT, retry_backoff=0.2))


@pytest.fixture
def server(xrootd_server):
    """The session's server, thawed or restarted after the test (a fault may leave it down)."""
    io.close_files()
    yield xrootd_server
    xrootd_server.ensure_running()
    io.close_files()
    remote.set_io_timeout(remote.DEFAULT_IO_TIMEOUT)


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
        assert "corrupt" not in f.error and f.attempts == 2
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
            assert elapsed < 4 * TIMEOUT + 2  # bounded (the client defaults wait 300-1800 s)
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
        threading.Timer(_KILL["down_s"], srv.start).start()
    return process_chunk(chunk, sample, cfg, classifier, seed)


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_server_killed_mid_run_and_restarted(served_dataset, server, clean_run, tmp_path,
                                             scheme):
    fileset = url_fileset(served_dataset, server, scheme, tmp_path)
    _KILL.clear()
    _KILL.update(server=server, process="wjets", down_s=0.5)
    try:
        t0 = time.perf_counter()
        r = run_analysis(replace(clean_run.options, fileset=fileset,
                                 output_dir=tmp_path / "out", max_retries=4,
                                 retry_backoff=0.5,
                                 processor=f"{__name__}:kill_server_once"))
        elapsed = time.perf_counter() - t0
    finally:
        _KILL.clear()
    assert_identical(r, clean_run)
    log = (tmp_path / "out" / "agc.log").read_text()
    retried = [line for line in log.splitlines() if "retrying" in line]
    assert retried and f"127.0.0.1:{server.port}" in retried[0]
    print(f"\n{scheme} killed and restarted: {elapsed:.1f} s, {len(retried)} retries; "
          f"{retried[0].split(': ', 1)[1]}")


def test_proxy_dropping_connections(served_dataset, server, clean_run, tmp_path):
    proxy = DroppingProxy(server.port, every=10)
    try:
        fileset = url_fileset(served_dataset, server, "http", tmp_path, port=proxy.port)
        t0 = time.perf_counter()
        r = run_analysis(replace(clean_run.options, fileset=fileset,
                                 output_dir=tmp_path / "out", max_retries=5,
                                 retry_backoff=0.05))
        elapsed = time.perf_counter() - t0
    finally:
        proxy.close()
    assert proxy.dropped >= 1
    assert_identical(r, clean_run)
    print(f"\nproxy: {proxy.dropped} of {proxy.accepted} connections dropped, "
          f"{elapsed:.1f} s, identical")
