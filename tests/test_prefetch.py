"""Remote inputs at local speed, against the real XRootD server (and the delaying proxy):
read-ahead, the byte cache across runs, plans remembered in the cache folder, changed files."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from xrootd_server import url_fileset

from agc_core import io, planning
from agc_core.bench.proxy import DelayProxy
from agc_core.fileset import load_fileset
from agc_core.io import remote
from agc_core.runner import run_analysis


def same_hist(a, b) -> bool:
    return (a.axes == b.axes and np.array_equal(a.view(flow=True).value, b.view(flow=True).value)
            and np.array_equal(a.view(flow=True).variance, b.view(flow=True).variance))


@pytest.mark.parametrize("scheme", ["http", "root"])
def test_second_run_reads_from_the_cache(served_dataset, xrootd_server, small_run, tmp_path,
                                         scheme):
    """Cold: every byte from the network, fetched ahead of the workers; warm (another output
    folder, the same cache folder): nothing from the network but the planning probes, every
    byte from the cache; both identical to the local run. --no-cache: from the network again,
    through a spool that is gone afterwards."""
    fileset = url_fileset(served_dataset, xrootd_server, scheme, tmp_path)
    base = replace(small_run.options, fileset=fileset, cache_dir=tmp_path / "cache",
                   executor="processes", workers=2, io_timeout=30.0)
    cold = run_analysis(replace(base, output_dir=tmp_path / "cold"))
    warm = run_analysis(replace(base, output_dir=tmp_path / "warm"))
    off = run_analysis(replace(base, output_dir=tmp_path / "off", cache=False))
    for r in (cold, warm, off):
        assert r.complete and same_hist(r.hist, small_run.hist)
    assert cold.prefetch["chunks"] == cold.n_chunks and cold.prefetch["failed"] == 0
    assert cold.bytes_from_network > 0 and cold.bytes_from_cache == 0
    assert warm.bytes_from_network == 0 and warm.bytes_from_cache >= cold.bytes_from_network
    assert warm.metrics["bytes_from_cache"] == warm.bytes_from_cache
    assert off.bytes_from_network > 0 and off.bytes_from_cache == 0
    assert not list((tmp_path / "off").glob(".agc-spool-*"))  # the spool is deleted
    assert (tmp_path / "cache" / "plans").is_dir() and not (tmp_path / "warm" /
                                                            "entries_cache.json").exists()


@pytest.mark.parametrize("scheme", ["http", "root"])
def test_planning_is_concurrent_and_remembered(served_dataset, xrootd_server, cfg, tmp_path,
                                               scheme):
    """Planning opens the files at once (http: one connection each, seen by a proxy adding
    100 ms), records their basket layouts, and a second planning with the same cache folder
    only probes each file's header (no file opened, HEADER_BYTES a file from the network)."""
    proxy = DelayProxy(xrootd_server.port, 0.1)
    remote.set_io_timeout(30.0)
    try:
        fileset = url_fileset(served_dataset, xrootd_server, scheme, tmp_path, port=proxy.port)
        samples = load_fileset(fileset, cfg)
        n_files = sum(len(s.files) for s in samples)
        cache = planning.EntriesCache(tmp_path / "plans")
        tasks, failures = planning.plan_tasks(samples, cfg.analysis_branches, 700, cache=cache)
        cache.save()
        assert not failures and all(t.layout is not None and t.layout["remote"] for t in tasks)
        if scheme == "http":
            assert proxy.peak_open >= 4, proxy.peak_open  # files opened at once
        io.close_files()
        before = remote.network_bytes()
        again, failures = planning.plan_tasks(samples, cfg.analysis_branches, 700,
                                              cache=planning.EntriesCache(tmp_path / "plans"))
        assert not failures and again == tasks
        assert [t.layout for t in again] == [t.layout for t in tasks]
        assert io.open_files() == 0
        assert remote.network_bytes() - before == n_files * remote.HEADER_BYTES
    finally:
        proxy.close()
        remote.set_io_timeout(remote.DEFAULT_IO_TIMEOUT)


def test_changed_remote_file_is_detected(small_dataset, xrootd_server, cfg, tmp_path):
    """A remote file replaced by another one under the same URL (a new ROOT UUID and size):
    planned anew, its bytes fetched anew, never taken from the cache of the old file."""
    from agc_core.io.cache import ByteCache

    files = sorted(p for p in small_dataset.parent.rglob("*.root"))
    old, new = files[0], files[-1]
    target = xrootd_server.root / "changing" / "f.root"
    target.parent.mkdir(parents=True, exist_ok=True)
    url = xrootd_server.url("http", "changing/f.root")
    cache_dir = tmp_path / "cache"
    io.set_byte_cache(ByteCache(cache_dir))
    try:
        results = []
        for src in (old, new):
            shutil.copy(src, target)
            xrootd_server.publish()
            io.close_files()
            probe = planning.probe_file(url, "events")
            layout = io.file_layout(url, cfg.analysis_branches)
            io.close_files()
            before = remote.network_bytes()
            chunk = io.read_chunk(url, cfg.analysis_branches, 0, 2000, layout=layout)
            results.append((probe, layout, chunk, remote.network_bytes() - before))
            want = io.read_chunk(src, cfg.analysis_branches, 0, 2000)
            for k in want.columns:
                assert np.array_equal(chunk.columns[k], want.columns[k]), k
        (p_old, l_old, _, n_old), (p_new, l_new, _, n_new) = results
        assert p_old.key != p_new.key and p_old.uuid != p_new.uuid
        assert io.layout_cache_key(url, l_old) != io.layout_cache_key(url, l_new)
        assert n_old > 0 and n_new > 0  # the new file's bytes came from the network
    finally:
        io.set_byte_cache(None)
        io.close_files()


@pytest.mark.parametrize("scheme", ["http", "root"])
@pytest.mark.parametrize("which", ["ROOT-written (AGC layout)", "uproot-written (embedded)"])
def test_planning_reads_the_metadata_in_one_go(xrootd_server, small_dataset, shared_agc, cfg,
                                               tmp_path, scheme, which):
    """Planning a new remote file fetches its first and last 64 kB at once and uproot opens
    it from them: no request of uproot's own reaches the server (ROOT writes the TTree near
    the end of the file, uproot near its start), and the layout is the local file's."""
    from agc_core.io import files
    from agc_core.io.source import METADATA_BYTES

    if which.startswith("ROOT"):
        src, branches = shared_agc / "poet_layout_sample.root", None
    else:
        src, branches = sorted(small_dataset.parent.rglob("*.root"))[0], cfg.analysis_branches
    name = f"meta/{scheme}-{src.name}"
    (xrootd_server.root / "meta").mkdir(exist_ok=True)
    shutil.copy(src, xrootd_server.root / name)
    xrootd_server.publish()
    url = xrootd_server.url(scheme, name)
    if branches is None:  # the AGC file: the analysis branches it has
        import uproot

        with uproot.open(src) as f:
            branches = [b for b in cfg.analysis_branches if b in f["events"].keys()]
    io.close_files()
    cache = planning.EntriesCache(None)
    before = remote.network_bytes()
    n, _, _, _, layout = planning._plan_file(url, branches, 10**6, "events",
                                           cache)
    handle = files._cache[(url,)]
    assert handle.directory.file.source.num_requests == 0
    # the probe brought the first 64 kB (a file never planned): only the rest was fetched
    size = (xrootd_server.root / name).stat().st_size
    assert remote.network_bytes() - before == min(size, 2 * METADATA_BYTES)
    want = io.file_layout(src, branches)
    assert layout["num_entries"] == want["num_entries"] == n
    assert layout["branches"] == want["branches"]
    io.close_files()


def test_corrupt_cache_entry_is_fetched_again_in_a_run(served_dataset, xrootd_server,
                                                       small_run, tmp_path, caplog):
    """One cached byte range damaged between two runs (a bit flipped, another one cut short):
    the second run detects both, fetches just those ranges again and equals the local run."""
    from agc_core.io.cache import _HEADER, ByteCache

    fileset = url_fileset(served_dataset, xrootd_server, "http", tmp_path)
    base = replace(small_run.options, fileset=fileset, cache_dir=tmp_path / "cache",
                   io_timeout=30.0)
    cold = run_analysis(replace(base, output_dir=tmp_path / "cold"))
    entries = sorted(ByteCache(tmp_path / "cache").entries(), key=lambda e: str(e[0]))
    flipped, cut = entries[0][0], entries[-1][0]
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    flipped.write_bytes(bytes(raw))
    cut.write_bytes(cut.read_bytes()[:-10])
    damaged = entries[0][1] + entries[-1][1] - 2 * _HEADER.size  # their contents
    with caplog.at_level("WARNING", logger="agc_core"):
        warm = run_analysis(replace(base, output_dir=tmp_path / "warm"))
    assert cold.complete and warm.complete and same_hist(warm.hist, small_run.hist)
    assert sum("corrupt entry" in m for m in caplog.messages) == 2
    assert warm.bytes_from_network == damaged  # those two ranges again, nothing else
    assert warm.bytes_from_cache > 0


def test_cache_stays_bounded_during_a_run(served_dataset, xrootd_server, small_run, tmp_path):
    """A cache bound of a third of what one run reads: the read-ahead trims the cache while
    it fetches (least recently used first) and the run is still identical to the local one."""
    from agc_core.io.cache import ByteCache

    fileset = url_fileset(served_dataset, xrootd_server, "http", tmp_path)
    base = replace(small_run.options, fileset=fileset, cache_dir=tmp_path / "cache",
                   io_timeout=30.0)
    full = run_analysis(replace(base, output_dir=tmp_path / "full",
                                cache_dir=tmp_path / "unbounded"))
    bound = full.bytes_from_network // 3
    r = run_analysis(replace(base, output_dir=tmp_path / "bounded", cache_size=bound))
    assert r.complete and same_hist(r.hist, small_run.hist)
    held = sum(size for _, size, _ in ByteCache(tmp_path / "cache").entries())
    assert 0 < held <= bound
    log = (tmp_path / "bounded" / "agc.log").read_text().splitlines()
    during = [line for line in log if "agc_core.io.prefetch" in line
              and "least recently used" in line]
    assert during  # trimmed by the read-ahead during the run, not only after it


@pytest.mark.parametrize("scheme", ["http", "root"])
def test_planning_processes_parse_what_the_threads_fetched(served_dataset, xrootd_server, cfg,
                                                           tmp_path, scheme, monkeypatch):
    """With the fork server running and enough remote files, the TTrees are parsed in
    planning processes from the metadata the threads fetched: the same tasks and layouts as
    planning in threads alone."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver")
    forkserver.ensure_running()
    fileset = url_fileset(served_dataset, xrootd_server, scheme, tmp_path)
    samples = load_fileset(fileset, cfg)
    threads, failures = planning.plan_tasks(samples, cfg.analysis_branches, 700,
                                            cache=planning.EntriesCache(None))
    assert not failures
    used = []
    original = planning._planning_processes

    def recorded(n_remote):
        pool = original(n_remote)
        used.append(pool)
        return pool

    monkeypatch.setattr(planning, "PLAN_PROCESSES_MIN_FILES", 2)
    monkeypatch.setattr(planning, "_planning_processes", recorded)
    io.close_files()
    processes, failures = planning.plan_tasks(samples, cfg.analysis_branches, 700,
                                              cache=planning.EntriesCache(None))
    assert not failures and used and used[0] is not None
    assert processes == threads
    assert [t.layout for t in processes] == [t.layout for t in threads]
