"""Remote inputs against a real XRootD server on 127.0.0.1: root://, http://, https://."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from xrootd_server import url_fileset

from agc_core import io
from agc_core.errors import InputError
from agc_core.io import remote
from agc_core.runner import run_analysis

SCHEMES = ("root", "http", "https")
EVENTS = 2000  # per file: the served_dataset fixture of conftest.py
CHUNK = 700


def first_file(fileset: Path) -> Path:
    data = json.loads(fileset.read_text())
    for process in data.values():
        for variation in process.values():
            return fileset.parent / variation["files"][0]["path"]
    raise AssertionError("empty fileset")


def assert_chunks_equal(a: io.Chunk, b: io.Chunk) -> None:
    assert (a.n_events, a.entry_start, a.entry_stop) == (b.n_events, b.entry_start, b.entry_stop)
    assert a.columns.keys() == b.columns.keys() and a.offsets.keys() == b.offsets.keys()
    for k in a.columns:
        assert a.columns[k].dtype == b.columns[k].dtype
        assert np.array_equal(a.columns[k], b.columns[k]), k
    for k in a.offsets:
        assert np.array_equal(a.offsets[k], b.offsets[k]), k
    assert a.bytes_read == b.bytes_read


@pytest.mark.parametrize("scheme", SCHEMES)
def test_read_chunk_equals_local(served_dataset, xrootd_server, cfg, scheme):
    local = first_file(served_dataset)
    url = xrootd_server.url(scheme, local.relative_to(xrootd_server.root))
    branches = cfg.analysis_branches
    assert io.num_entries(url) == EVENTS
    assert io.chunk_ranges(url, branches, CHUNK) == io.chunk_ranges(local, branches, CHUNK)
    for start, stop in [(0, EVENTS), (333, 1500), (EVENTS, EVENTS)]:
        assert_chunks_equal(io.read_chunk(url, branches, start, stop),
                            io.read_chunk(local, branches, start, stop))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_laid_out_remote_read_equals_local(served_dataset, xrootd_server, cfg, scheme, tmp_path):
    """A remote file's layout (planned once) reads every chunk without opening the file with
    uproot, through the byte cache: the same arrays as the local file; a second read comes
    from the cache, not the network."""
    from agc_core.io.cache import ByteCache

    local = first_file(served_dataset)
    url = xrootd_server.url(scheme, local.relative_to(xrootd_server.root))
    branches = cfg.analysis_branches
    layout = io.file_layout(url, branches)
    assert layout is not None and layout["remote"]
    assert layout["file"][0] == local.stat().st_size
    ranges = [(0, EVENTS), (333, 1500), (EVENTS, EVENTS)]
    expected = [io.read_chunk(local, branches, a, b) for a, b in ranges]
    io.close_files()
    cache = ByteCache(tmp_path / "cache")
    io.set_byte_cache(cache)
    try:
        for (start, stop), want in zip(ranges, expected, strict=True):
            assert_chunks_equal(io.read_chunk(url, branches, start, stop, layout=layout), want)
        assert io.open_files() == 0  # never opened with uproot
        before = remote.network_bytes()
        hits = cache.stats.hits
        assert_chunks_equal(io.read_chunk(url, branches, 0, EVENTS, layout=layout), expected[0])
        assert remote.network_bytes() == before and cache.stats.hits > hits
    finally:
        io.set_byte_cache(None)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_remote_file_is_permanent(xrootd_server, scheme):
    url = xrootd_server.url(scheme, "no/such/file.root")
    with pytest.raises(InputError, match=r"no such file|HTTP 404|not found") as info:
        io.read_chunk(url, ["jet_pt"])
    assert url in str(info.value)
    assert not isinstance(info.value, remote.TransientInputError)
    assert "corrupt" not in str(info.value)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_whole_run_identical(served_dataset, xrootd_server, small_run, tmp_path, scheme):
    local_run = small_run
    fileset = url_fileset(served_dataset, xrootd_server, scheme, tmp_path)
    opts = replace(local_run.options, fileset=fileset, output_dir=tmp_path / "out",
                   executor="processes" if scheme == "root" else "iterative", workers=2)
    result = run_analysis(opts)
    assert result.complete, [f.describe() for f in result.failures]
    assert result.dataset_source == scheme
    assert result.n_events == local_run.n_events
    assert result.bytes_read == local_run.bytes_read
    a, b = result.hist, local_run.hist
    assert a.axes == b.axes
    assert np.array_equal(a.view(flow=True).value, b.view(flow=True).value)
    assert np.array_equal(a.view(flow=True).variance, b.view(flow=True).variance)


def test_error_causes_transient_or_permanent():
    import aiohttp

    url = "https://127.0.0.1:8443/data/f.root"
    info = aiohttp.RequestInfo(aiohttp.client.URL(url), "GET", {}, aiohttp.client.URL(url))

    def response(status):
        return aiohttp.ClientResponseError(info, (), status=status, message="x")

    assert remote.classify(response(503), url) == (True, "HTTP 503 (x) from 127.0.0.1:8443")
    assert remote.classify(response(404), url)[0] is False
    assert remote.classify(ConnectionResetError(), url) == (
        True, "connection reset by 127.0.0.1:8443")
    assert remote.classify(TimeoutError(), url)[0] is True
    assert remote.classify(OSError("[ERROR] Operation expired"), "root://h:1094//f")[0] is True
    assert remote.classify(ValueError("bad basket"), url) is None  # data, not the network
    err = remote.remote_error(response(502), url, "cannot open")
    assert isinstance(err, remote.TransientInputError)
    assert str(err) == f"{url}: cannot open: HTTP 502 (x) from 127.0.0.1:8443"
    assert remote.remote_error(ValueError("x"), "/local/f.root", "cannot open") is None
