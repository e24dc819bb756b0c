"""The lean HTTP range reader (agc_core.io.http) against the real XRootD server on 127.0.0.1,
and its fallback to fsspec against Python's own http.server (which ignores ``Range``)."""

from __future__ import annotations

import functools
import http.server as stdlib_http
import threading
from typing import ClassVar

import numpy as np
import pytest

from agc_core.errors import InputError
from agc_core.io import http, remote


@pytest.fixture()
def served_file(xrootd_server, tmp_path_factory):
    """A 3 MB file of known bytes in the server's export: (local path, bytes)."""
    folder = xrootd_server.root / "http-reader"
    folder.mkdir(exist_ok=True)
    data = np.random.default_rng(7).integers(0, 256, 3_000_001, dtype=np.uint8)
    path = folder / "blob.bin"
    path.write_bytes(data.tobytes())
    return path, data


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_spans_equal_the_file(xrootd_server, served_file, scheme, monkeypatch):
    """Spans cut into concurrent pieces land in one buffer each, byte for byte; a span past
    the end comes back short; the connections are kept alive (fewer than the requests)."""
    path, data = served_file
    url = xrootd_server.url(scheme, path.relative_to(xrootd_server.root))
    monkeypatch.setattr(remote, "PIECE_BYTES", 20_000)
    spans = [(0, 1), (5, 1_000_005), (2_500_000, 3_100_000), (1_200_000, 1_200_128)]
    connects = []
    real_connect = http._connect
    monkeypatch.setattr(http, "_connect", lambda *a: connects.append(a) or real_connect(*a))
    got = remote.fetch_spans(url, spans)
    for (a, b), arr in zip(spans, got, strict=True):
        assert np.array_equal(arr, data[a:min(b, len(data))]), (a, b)
    requests = sum(len(remote.split_spans([s], 20_000)) for s in spans)
    assert 0 < len(connects) <= http.STREAMS + 1 < requests  # +1: the piece past the end
    again = remote.fetch_spans(url, [(0, 1000)])[0]  # on a kept-alive connection
    assert np.array_equal(again, data[:1000])


def test_missing_file_is_named(xrootd_server):
    url = xrootd_server.url("http", "http-reader/no-such-file.root")
    with pytest.raises(InputError, match=r"no-such-file\.root.*no such file on 127\.0\.0\.1"):
        remote.fetch_spans(url, [(0, 100)])
    with pytest.raises(InputError, match="no such file"):
        remote.probe(url)


def test_refused_connection_is_transient():
    from agc_core.bench.xrootd import free_port

    url = f"http://127.0.0.1:{free_port()}/x.root"
    with pytest.raises(remote.TransientInputError, match=r"connection refused by 127\.0\.0\.1"):
        remote.fetch_spans(url, [(0, 100)])


def test_kept_alive_connection_closed_by_the_server_is_replaced(xrootd_server, served_file):
    """A kept-alive connection that the server closed meanwhile: the request goes out once
    more on a new connection, with no error."""
    path, data = served_file
    url = xrootd_server.url("http", path.relative_to(xrootd_server.root))
    assert np.array_equal(remote.fetch_spans(url, [(10, 20)])[0], data[10:20])
    server, _ = http._server(url)
    with http._lock:
        idle = list(http._idle.get(server, []))
    assert idle
    for sock in idle:  # as if the server had closed them: the next request finds them dead
        sock.shutdown(2)
    assert np.array_equal(remote.fetch_spans(url, [(30, 40)])[0], data[30:40])


class _NoRangeHandler(stdlib_http.SimpleHTTPRequestHandler):
    """Answers every GET with the whole file (200), as servers without range support do."""

    def log_message(self, *args):
        pass


@pytest.fixture()
def no_range_server(served_file):
    handler = functools.partial(_NoRangeHandler, directory=str(served_file[0].parent))
    server = stdlib_http.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_ignoring_ranges_is_a_named_error(no_range_server, served_file):
    """A server that answers a range request with the whole file (HTTP 200): a permanent
    error naming it, never the file's first bytes taken for the range's."""
    url = f"{no_range_server}/{served_file[0].name}"
    with pytest.raises(InputError, match=r"blob\.bin: cannot read 1 byte ranges: 127\.0\.0\.1:\d+ "
                                         r"ignores byte ranges") as info:
        remote.fetch_spans(url, [(5, 15)])
    assert not isinstance(info.value, remote.TransientInputError)


class _RedirectHandler(stdlib_http.BaseHTTPRequestHandler):
    """Redirects every GET to the same path on ``target`` (a data federation's redirector);
    counts the requests it got."""

    protocol_version = "HTTP/1.1"  # kept alive, as a redirector's connections are
    target = ""
    seen: ClassVar[list] = []

    def do_GET(self):
        self.seen.append(self.headers.get("Range"))
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"see")

    def log_message(self, *args):
        pass


def _redirector(target):
    handler = type("Redirect", (_RedirectHandler,), {"target": target, "seen": []})
    server = stdlib_http.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_redirect_is_followed(xrootd_server, served_file):
    """A redirector in front of the data server: every request is sent on (with its Range)
    and answered there, by this reader, not fsspec; a redirect loop gives up after
    MAX_REDIRECTS hops, a permanent error naming the URL (not handed to fsspec, which loops
    too and says "HTTP 0")."""
    path, data = served_file
    server, handler = _redirector(xrootd_server.url("http", "").rstrip("/"))
    try:
        rel = path.relative_to(xrootd_server.root).as_posix()
        url = f"http://127.0.0.1:{server.server_address[1]}/{rel}"
        buf = bytearray(10)
        assert http.read_into(url, [(5, memoryview(buf))], 10.0) == [10]
        assert bytes(buf) == data[5:15].tobytes()
        got = remote.fetch_spans(url, [(5, 15), (2_000_000, 2_000_100)])
        assert np.array_equal(got[0], data[5:15])
        assert np.array_equal(got[1], data[2_000_000:2_000_100])
        assert sorted(handler.seen) == ["bytes=2000000-2000099", "bytes=5-14", "bytes=5-14"]
    finally:
        server.shutdown()
        server.server_close()
    loop, _ = _redirector("")
    try:
        port = loop.server_address[1]
        loop.RequestHandlerClass.target = f"http://127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}/x.root"
        want = (rf"x\.root: cannot read 1 byte ranges: HTTP 302 \(more than 5 redirects\) "
                rf"from 127\.0\.0\.1:{port}")
        with pytest.raises(InputError, match=want):
            remote.fetch_spans(url, [(0, 4)])
        assert len(loop.RequestHandlerClass.seen) == 6  # the first request and 5 redirects
    finally:
        loop.shutdown()
        loop.server_close()
