"""Warm remote files planned from the caches without a request, confirmed while processing
(agc_core.speculation), against the real XRootD server."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

from xrootd_server import url_fileset

from agc_core import io, planning
from agc_core.fileset import load_fileset
from agc_core.histograms import histogram_digest
from agc_core.io import remote
from agc_core.io.cache import ByteCache
from agc_core.runner import run_analysis
from agc_core.speculation import Speculation


def same_hist(a, b) -> bool:
    return histogram_digest(a) == histogram_digest(b)


def test_warm_files_are_planned_without_a_request(served_dataset, xrootd_server, small_run, cfg,
                                                  tmp_path):
    """After a run filled the caches, planning its remote files sends nothing: the tasks and
    layouts of a probed plan, every file assumed; the confirmation then probes each file once
    (its header) and finds nothing changed. With an empty byte cache nothing is assumed."""
    fileset = url_fileset(served_dataset, xrootd_server, "http", tmp_path)
    cache_dir = tmp_path / "cache"
    cold = run_analysis(replace(small_run.options, fileset=fileset, cache_dir=cache_dir,
                                output_dir=tmp_path / "cold", io_timeout=30.0))
    assert cold.complete
    samples = load_fileset(fileset, cfg)
    urls = [f.path for s in samples for f in s.files]
    branches = cfg.analysis_branches
    probed, _ = planning.plan_tasks(samples, branches, small_run.options.chunksize,
                                    cache=planning.EntriesCache(cache_dir / "plans"))
    speculation = Speculation(ByteCache(cache_dir), branches)
    before = remote.network_bytes()
    tasks, failures = planning.plan_tasks(samples, branches, small_run.options.chunksize,
                                          cache=planning.EntriesCache(cache_dir / "plans"),
                                          speculation=speculation)
    assert remote.network_bytes() == before and io.open_files() == 0
    assert not failures and tasks == probed
    assert [t.layout for t in tasks] == [t.layout for t in probed]
    assert sorted(speculation.assumed) == sorted(urls)
    assert speculation.changed() == []
    assert remote.network_bytes() - before == len(urls) * remote.HEADER_BYTES

    empty = Speculation(ByteCache(tmp_path / "empty"), branches)
    again, _ = planning.plan_tasks(samples, branches, small_run.options.chunksize,
                                   cache=planning.EntriesCache(cache_dir / "plans"),
                                   speculation=empty)
    assert again == probed and empty.assumed == {}


def test_file_changed_under_its_url_is_processed_again(small_dataset, xrootd_server, small_run,
                                                       tmp_path, caplog):
    """Two files swapped under their URLs between two runs sharing a cache: the second run
    plans them from the caches, the confirmation finds them changed (named in a warning), and
    the run plans and processes everything again: its histograms equal a fresh run on the
    swapped files, nothing of the stale plan kept."""
    folder = xrootd_server.root / "swapped"
    shutil.copytree(small_dataset.parent, folder)
    xrootd_server.publish()
    local = folder / small_dataset.name
    fileset = url_fileset(local, xrootd_server, "http", tmp_path)
    base = replace(small_run.options, fileset=fileset, cache_dir=tmp_path / "cache",
                   io_timeout=30.0)
    first = run_analysis(replace(base, output_dir=tmp_path / "first"))
    assert first.complete and same_hist(first.hist, small_run.hist)

    a, b = sorted(folder.rglob("*.root"))[:2]
    shutil.move(a, tmp_path / "a.root")
    shutil.move(b, a)
    shutil.move(tmp_path / "a.root", b)
    xrootd_server.publish()
    with caplog.at_level(logging.WARNING, logger="agc_core.runner"):
        second = run_analysis(replace(base, output_dir=tmp_path / "second"))
    fresh = run_analysis(replace(small_run.options, fileset=local, output_dir=tmp_path / "fresh"))
    assert second.complete and fresh.complete
    assert same_hist(second.hist, fresh.hist) and not same_hist(second.hist, first.hist)
    warned = [r.getMessage() for r in caplog.records if "not as their cached plan" in
              r.getMessage()]
    assert len(warned) == 1 and "2 remote file(s)" in warned[0]
    assert a.name in warned[0] and b.name in warned[0] and "changed since it was planned" in \
        warned[0]
