"""Remote inputs (``https://``, ``http://``, ``root://``): bounded waits, fetches, error causes.

uproot opens URLs through fsspec (aiohttp for http(s), fsspec-xrootd and the XRootD client for
``root://``). This module sets one timeout for both (:func:`set_io_timeout`), fetches byte
ranges so that a network error keeps its cause (:func:`cat_ranges`), and tells transient network
errors (connection refused or reset, timeouts, HTTP 5xx, XRootD connection errors: retried) from
permanent ones (:func:`classify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from agc_core.errors import InputError

log = logging.getLogger(__name__)

#: seconds one request (connect, or the next bytes of an answer) may take, unless told otherwise
DEFAULT_IO_TIMEOUT = 60.0
#: byte ranges closer than this are fetched in one request
MAX_GAP = 64 * 1024

REMOTE_SCHEMES = ("http", "https", "root", "roots")

_timeout = DEFAULT_IO_TIMEOUT


class TransientInputError(InputError):
    """A network problem that may pass (the executor retries it): names the URL and the cause."""

    retryable = True


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL served over the network (http, https, root)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def io_timeout() -> float:
    """The timeout in force in this process (seconds)."""
    return _timeout


def xrootd_env(timeout: float) -> dict[str, str]:
    """The XRootD client settings that bound every wait by ``timeout`` seconds.

    ``XRD_REQUESTTIMEOUT`` (a request's answer), ``XRD_STREAMTIMEOUT`` (an idle stream),
    ``XRD_CONNECTIONWINDOW`` with ``XRD_CONNECTIONRETRY=1`` (one connection attempt of at most
    ``timeout``; the client's default retries for ~2 minutes x 5) and
    ``XRD_TIMEOUTRESOLUTION=1`` (timeouts are checked every second, not every 15 s) and
    ``XRD_STREAMERRORWINDOW=1`` (a connection that failed is tried again by the next request
    after a second, not refused for 30 minutes: a restarted server is reached by the retry).
    """
    t = str(max(1, round(timeout)))
    return {"XRD_REQUESTTIMEOUT": t, "XRD_STREAMTIMEOUT": t, "XRD_CONNECTIONWINDOW": t,
            "XRD_CONNECTIONRETRY": "1", "XRD_TIMEOUTRESOLUTION": "1",
            "XRD_STREAMERRORWINDOW": "1"}


def set_io_timeout(timeout: float) -> None:
    """Bound every remote wait of this process (and of processes it starts) by ``timeout``.

    Sets the XRootD client's ``XRD_*`` variables (environment, so workers inherit them, and the
    running client through ``EnvPutInt``) and the aiohttp timeouts used by :func:`open_options`.

    Args:
        timeout: seconds (> 0) a connection attempt or a request's next bytes may take.
    """
    global _timeout
    if not timeout > 0:
        from agc_core.errors import ConfigError

        raise ConfigError(f"--io-timeout must be a positive number of seconds, got {timeout}")
    _timeout = float(timeout)
    env = xrootd_env(timeout)
    os.environ.update(env)
    # a client not imported yet reads the environment when it is; only a running one needs
    # telling (importing it here would load XRootD, and its noisy exit handler, in local runs)
    xrd_client = sys.modules.get("XRootD.client")
    if xrd_client is not None:
        for key, value in env.items():
            with contextlib.suppress(Exception):
                xrd_client.EnvPutInt(_XRD_NAMES[key], int(value))
    fsspec_xrootd = sys.modules.get("fsspec_xrootd")
    if fsspec_xrootd is not None:
        fsspec_xrootd.XRootDFileSystem.default_timeout = int(env["XRD_REQUESTTIMEOUT"])


def _default_env() -> None:
    """Bound the XRootD client's waits from the start (a user's own ``XRD_*`` values win).

    The client reads its settings when a connection to a server is made, so they must be in
    place before the first root:// access, even by a program that never calls
    :func:`set_io_timeout`.
    """
    for key, value in xrootd_env(DEFAULT_IO_TIMEOUT).items():
        os.environ.setdefault(key, value)


_XRD_NAMES = {"XRD_REQUESTTIMEOUT": "RequestTimeout", "XRD_STREAMTIMEOUT": "StreamTimeout",
              "XRD_CONNECTIONWINDOW": "ConnectionWindow",
              "XRD_CONNECTIONRETRY": "ConnectionRetry",
              "XRD_TIMEOUTRESOLUTION": "TimeoutResolution",
              "XRD_STREAMERRORWINDOW": "StreamErrorWindow"}
_default_env()


def open_options(path: str) -> dict[str, Any]:
    """Extra ``uproot.open`` options for a URL: aiohttp timeouts for http(s).

    Raises:
        InputError: the packages for this protocol are missing (names what to install).
    """
    scheme = path.partition("://")[0].lower()
    if scheme in ("http", "https"):
        try:
            import aiohttp
        except ImportError as exc:
            raise InputError(f"{path}: reading http(s) needs aiohttp and requests (pip install "
                             f"aiohttp requests, or reinstall agc-core)") from exc
        t = _timeout
        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(
            total=None, connect=t, sock_connect=t, sock_read=t)}}
    if scheme in ("root", "roots"):
        try:
            import fsspec_xrootd  # noqa: F401
            from XRootD import client  # noqa: F401
        except ImportError as exc:
            raise InputError(f"{path}: reading root:// needs fsspec-xrootd and the xrootd "
                             f"client (pip install fsspec-xrootd xrootd, or reinstall "
                             f"agc-core)") from exc
        forget_xrootd_handles()
    return {}


def forget_xrootd_handles(url: str | None = None) -> None:
    """Drop XRootD file handles from fsspec-xrootd's cache: closed ones, and those of ``url``.

    fsspec-xrootd keeps one open ``XRootD.client.File`` per URL; after the connection was lost
    (a server restart) that handle stays closed and every later read of the URL would fail with
    "I/O operation on closed file". Called before each root:// open (closed handles only: the
    open ones may be in use by other threads, planning many files or fetching several chunks of
    one file at once) and, with the URL, after each root:// network error.
    """
    try:
        from fsspec_xrootd import XRootDFileSystem
    except ImportError:
        return
    for fs in list(getattr(XRootDFileSystem, "_cache", {}).values()):
        cache = getattr(getattr(fs, "_readonly_filehandle_cache", None), "_cache", None)
        if not isinstance(cache, dict):
            continue
        for key, item in list(cache.items()):
            try:
                alive = bool(item.handle.is_open())
            except Exception:
                alive = False
            if alive and url is not None and _same_url(key, url):
                with contextlib.suppress(Exception):
                    item.handle.close(callback=lambda *args: None)
                alive = False
            if not alive:
                cache.pop(key, None)


def close_xrootd_handles() -> None:
    """Close every XRootD file handle fsspec-xrootd keeps open in this process, all at once.

    The XRootD client closes the handles left at exit one after the other, a round trip
    each: ~10 s after a run over 90 files at 100 ms. Called at the end of a run.
    """
    if "fsspec_xrootd" not in sys.modules:
        return
    from fsspec.asyn import sync
    from fsspec_xrootd import XRootDFileSystem

    for fs in list(getattr(XRootDFileSystem, "_cache", {}).values()):
        cache = getattr(fs, "_readonly_filehandle_cache", None)
        keys = list(getattr(cache, "_cache", {}))
        if not keys:
            continue
        t = max(1, round(_timeout))

        async def close_all(cache: Any = cache, keys: list[str] = keys, t: int = t) -> None:
            await asyncio.gather(*(cache._close(key, t) for key in keys),
                                 return_exceptions=True)

        with contextlib.suppress(Exception):
            sync(cache.loop, close_all, timeout=_timeout + 1)


def _same_url(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        scheme, _, rest = u.partition("://")
        host, _, path = rest.partition("/")
        return f"{scheme.lower()}://{host}/{path.lstrip('/')}"

    return norm(a) == norm(b)


def coalesce(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges merged where they overlap or lie within :data:`MAX_GAP` of each other."""
    out: list[list[int]] = []
    for a, b in sorted(set(ranges)):
        if out and a <= out[-1][1] + MAX_GAP:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


# ---------------------------------------------------------------------------------------------
# fetching byte ranges without uproot: concurrent requests, the byte cache, the header probe

#: a span larger than this goes out as several concurrent requests (parallel streams)
PIECE_BYTES = 4 * 1024 * 1024
#: bytes of a ROOT file's start that hold its header (fEND, fUUID)
HEADER_BYTES = 128

_net_lock = threading.Lock()
_net_bytes = 0
_net_thread = threading.local()


def network_bytes(this_thread: bool = False) -> int:
    """Bytes fetched from remote servers through :func:`read_ranges` and :func:`probe` by this
    process, or by the calling thread only (counters; take differences)."""
    return getattr(_net_thread, "n", 0) if this_thread else _net_bytes


def _count(n: int) -> None:
    global _net_bytes
    with _net_lock:
        _net_bytes += n
    _net_thread.n = getattr(_net_thread, "n", 0) + n


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem (and the path within it) that reads ``url``, with this process's
    timeouts (:func:`open_options`); fsspec keeps one instance per set of options.

    Raises:
        InputError: the packages for this protocol are missing.
    """
    import fsspec

    return fsspec.core.url_to_fs(url, **open_options(url))


def split_spans(spans: Sequence[tuple[int, int]], piece: int | None = None
                ) -> list[tuple[int, int]]:
    """Spans cut into pieces of at most ``piece`` bytes (default :data:`PIECE_BYTES`): requests
    that can run concurrently."""
    piece = piece or PIECE_BYTES
    out = []
    for a, b in spans:
        n = max(1, -(-(b - a) // piece))
        bounds = [a + (b - a) * i // n for i in range(n + 1)]
        out += list(itertools.pairwise(bounds))
    return out


def _http_spans(url: str, per_span: Sequence[Sequence[tuple[int, int]]]
                ) -> list[np.ndarray] | None:
    """The spans' bytes by :mod:`agc_core.io.http`, each span's pieces received straight into
    its buffer (None: an answer it does not handle: read with fsspec)."""
    from agc_core.io import http

    bufs = [np.empty(ps[-1][1] - ps[0][0], np.uint8) for ps in per_span]
    jobs = [(pa, memoryview(buf)[pa - ps[0][0]:pb - ps[0][0]])
            for ps, buf in zip(per_span, bufs, strict=True) for pa, pb in ps]
    try:
        sizes = http.read_into(url, jobs, _timeout)
    except http.Unsupported as exc:
        log.debug("%s: read through fsspec (%s)", url, exc)
        return None
    return [buf[:n] for buf, n in zip(bufs, _received(per_span, sizes), strict=True)]


def _received(per_span: Sequence[Sequence[tuple[int, int]]], sizes: Sequence[int]
              ) -> list[int]:
    """The bytes each span holds, from what its pieces received (in order): up to the first
    short piece, where the file ends."""
    it = iter(sizes)
    out = []
    for ps in per_span:
        got = 0
        short = False
        for pa, pb in ps:
            n = next(it)
            if not short:
                got += n
                short = n < pb - pa
        out.append(got)
    return out


def fetch_spans(url: str, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The bytes of ``spans`` of a remote file, all requested at once.

    Large spans go out as several concurrent range requests (:data:`PIECE_BYTES` each); http
    sends them over :mod:`agc_core.io.http`'s kept-alive connections (fsspec where it cannot),
    ``root://`` as XRootD vector reads. Every wait is bounded by the io timeout
    (:func:`set_io_timeout`).

    Raises:
        InputError: a network problem (:class:`TransientInputError`, retried) or a permanent
            one, naming the URL and the cause; any other error as it came.
    """
    per_span = [split_spans([span]) for span in spans]
    pieces = [p for ps in per_span for p in ps]
    try:
        if url.lower().startswith(("http://", "https://")):
            got = _http_spans(url, per_span)
            if got is not None:
                _count(sum(len(d) for d in got))
                return got
        fs, fpath = filesystem(url)
        datas = fs.cat_ranges([fpath] * len(pieces), [a for a, _ in pieces],
                              [b for _, b in pieces], on_error="raise")
    except Exception as exc:
        err = remote_error(exc, url, f"cannot read {len(spans)} byte ranges")
        if err is not None:
            raise err from exc
        raise
    for d in datas:
        if isinstance(d, BaseException):  # an fsspec that returns errors in place
            err = remote_error(d, url, "cannot read a byte range")
            raise err if err is not None else d
    _count(sum(len(d) for d in datas))
    parts = iter(np.frombuffer(d, np.uint8) for d in datas)
    out = []
    for ps, n in zip(per_span, _received(per_span, [len(d) for d in datas]), strict=True):
        mine = [next(parts) for _ in ps]
        out.append((mine[0] if len(mine) == 1 else np.concatenate(mine))[:n])
    return out


def read_ranges(url: str, ranges: Sequence[tuple[int, int]], cache: Any = None,
                key: str | None = None) -> dict[tuple[int, int], np.ndarray]:
    """Byte ranges of a remote file: from the byte cache where it holds them, the rest fetched
    at once (:func:`fetch_spans`) and stored in the cache.

    Args:
        url: the file's URL.
        ranges: (start, stop) byte ranges; ranges closer than :data:`MAX_GAP` are fetched
            (and cached) as one span.
        cache: an :class:`agc_core.io.cache.ByteCache`, or None.
        key: the file's cache key (:func:`agc_core.io.cache.file_key`); None: no caching.

    Returns:
        (start, stop) -> the bytes (``uint8``; shorter only where the file ends), per range.
    """
    spans = coalesce(ranges)
    got: dict[tuple[int, int], np.ndarray] = {}
    missing = []
    for span in spans:
        data = cache.get(key, *span) if cache is not None and key is not None else None
        if data is None:
            missing.append(span)
        else:
            got[span] = data
    if missing:
        for span, data in zip(missing, fetch_spans(url, missing), strict=True):
            got[span] = data
            if cache is not None and key is not None:
                cache.put(key, span[0], span[1], data)
    out: dict[tuple[int, int], np.ndarray] = {}
    for a, b in ranges:
        s, _e = next(sp for sp in spans if sp[0] <= a <= sp[1])
        out[(a, b)] = got[(s, _e)][a - s:b - s]
    return out


def parse_header(head: bytes, where: str) -> tuple[int, bytes]:
    """(fEND, fUUID) of a ROOT file from its first bytes.

    Raises:
        InputError: not a ROOT file, or too short.
    """
    if len(head) < 4 or head[:4] != b"root":
        raise InputError(f"{where}: not a ROOT file (no 'root' signature at its start)")
    fmt = ">4siiqqiiiBiqiH16s" if len(head) >= 8 and int.from_bytes(head[4:8], "big") >= \
        1000000 else ">4siiiiiiiBiiiH16s"
    import struct

    size = struct.calcsize(fmt)
    if len(head) < size:
        raise InputError(f"{where}: truncated file: {len(head)} bytes, shorter than a ROOT "
                         f"header")
    fields = struct.unpack(fmt, head[:size])
    return int(fields[3]), bytes(fields[-1])


def _probe_bytes(url: str, nbytes: int) -> Any:
    if url.lower().startswith(("http://", "https://")):
        got = _http_spans(url, [[(0, nbytes)]])
        if got is not None:
            return got[0]
    fs, fpath = filesystem(url)
    return np.frombuffer(fs.cat_file(fpath, start=0, end=nbytes), np.uint8)


def probe_head(url: str, nbytes: int = HEADER_BYTES) -> tuple[int, bytes, np.ndarray]:
    """One request for a remote ROOT file's first ``nbytes``: its (fEND, fUUID), its identity
    for the caches, and those bytes (a new file's planning needs its first 64 kB anyway).

    Raises:
        InputError: network problems (transient or permanent, named), or not a ROOT file.
    """
    try:
        head = _probe_bytes(url, nbytes)
    except Exception as exc:
        err = remote_error(exc, url, "cannot open")
        if err is not None:
            raise err from exc
        raise InputError(f"{url}: cannot open ({type(exc).__name__}: {_short(exc)})") from exc
    _count(len(head))
    size, uuid = parse_header(head[:HEADER_BYTES].tobytes(), url)
    return size, uuid, head


def probe(url: str) -> tuple[int, bytes]:
    """One small request (:data:`HEADER_BYTES`): a remote ROOT file's (fEND, fUUID), its
    identity for the caches.

    Raises:
        InputError: network problems (transient or permanent, named), or not a ROOT file.
    """
    size, uuid, _ = probe_head(url)
    return size, uuid


# ---------------------------------------------------------------------------------------------
# error causes

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                     errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
                     errno.EAGAIN}
# XRootD client status messages of network problems (XrdCl::Status), as fsspec-xrootd passes them
# ("invalid operation": a cached file handle left in a bad state by a lost connection)
_XRD_TRANSIENT = re.compile(r"connection|socket|stream|operation expired|timeout|timed out|"
                            r"invalid operation|"
                            r"redirect limit|operation interrupted|poller|tls|handshake|"
                            r"\[3005\]|\[3007\]|\[3008\]|\[3021\]|server is not responding",
                            re.IGNORECASE)
_HOSTPORT = re.compile(r"(?:host |\(')?(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-f:]+\])"
                       r"(?:', |:)(\d+)")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def server_of(url: str) -> str:
    """``host:port`` of a URL (the default port of its scheme when none is given)."""
    return _server(url)


def _server(url: str) -> str:
    """``host:port`` of a URL (the default port of its scheme when none is given)."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if ":" in netloc.strip("[]").split("]")[-1]:
        return netloc
    port = {"http": 80, "https": 443, "root": 1094, "roots": 1094}.get(scheme.lower(), 0)
    return f"{netloc}:{port}"


def classify(exc: BaseException, url: str) -> tuple[bool, str] | None:
    """Whether a failure reading ``url`` is a transient network problem, and its cause.

    Args:
        exc: the exception (its ``__cause__`` / ``__context__`` chain is searched).
        url: the file's URL.

    Returns:
        ``(True, cause)`` for connection refused/reset, timeouts, HTTP 5xx/408/429, XRootD
        connection errors; ``(False, cause)`` for a permanent remote problem (HTTP 4xx such as
        404, no such file on the server); None when it is no network problem (bad data).
    """
    server = _server(url)
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        aiohttp = None  # type: ignore[assignment]
    from agc_core.io.http import HTTPStatusError

    for e in _chain(exc):
        if isinstance(e, HTTPStatusError):
            if e.status == 200:
                return False, f"{server} ignores byte ranges (HTTP 200 to a range request)"
            if e.status == 404:
                return False, f"no such file on {server} (HTTP 404)"
            if e.status >= 500 or e.status in (408, 429):
                return True, f"HTTP {e.status} ({e.reason}) from {server}"
            return False, f"HTTP {e.status} ({e.reason}) from {server}"
        if aiohttp is not None and isinstance(e, aiohttp.ClientResponseError):
            status = int(e.status)
            if status >= 500 or status in (408, 429):
                return True, f"HTTP {status} ({e.message}) from {server}"
            return False, f"HTTP {status} ({e.message}) from {server}"
        if isinstance(e, FileNotFoundError) and not isinstance(e, ConnectionError):
            return False, f"no such file on {server}"
        if isinstance(e, (TimeoutError, asyncio.TimeoutError, socket.timeout)) or (
                aiohttp is not None and isinstance(e, aiohttp.ServerTimeoutError)):
            return True, f"no answer from {server} in {_timeout:g} s (--io-timeout)"
        if isinstance(e, ConnectionRefusedError) or (
                isinstance(e, OSError) and e.errno == errno.ECONNREFUSED):
            return True, f"connection refused by {server}"
        if isinstance(e, ConnectionResetError):
            return True, f"connection reset by {server}"
        if aiohttp is not None and isinstance(e, aiohttp.ClientConnectorError):
            os_err = getattr(e, "os_error", None)
            if isinstance(os_err, ConnectionRefusedError) or "refused" in str(e).lower() or \
                    "connect call failed" in str(e).lower():
                return True, f"connection refused by {server}"
            return True, f"cannot connect to {server} ({_short(e)})"
        if aiohttp is not None and isinstance(e, (aiohttp.ServerDisconnectedError,
                                                  aiohttp.ClientPayloadError,
                                                  aiohttp.ClientOSError,
                                                  aiohttp.ClientConnectionError)):
            return True, f"connection to {server} lost ({type(e).__name__}: {_short(e)})"
        if isinstance(e, ConnectionError) or (isinstance(e, OSError)
                                               and e.errno in _TRANSIENT_ERRNOS):
            return True, f"network error with {server} ({type(e).__name__}: {_short(e)})"
    for e in _chain(exc):  # XRootD: OSError("... : [ERROR] ...") from fsspec-xrootd
        text = str(e)
        if isinstance(e, ValueError) and "closed file" in text and url.startswith("root"):
            # a cached XRootD handle that a lost connection (or its idle timeout) closed
            return True, f"the XRootD file handle was closed (connection to {server} lost?)"
        if "[ERROR]" in text or "[FATAL]" in text:
            if "[3011]" in text or "no such file" in text.lower():
                return False, f"no such file on {server} ({_short(e)})"
            if _XRD_TRANSIENT.search(text):
                msg = _short(e)
                if "expired" in msg.lower() or "timeout" in msg.lower():
                    return True, f"no answer from {server} in {_timeout:g} s ({msg})"
                if "connection error" in msg.lower():
                    return True, f"cannot connect to {server}, or the connection was lost ({msg})"
                return True, f"XRootD error with {server} ({msg})"
            return False, f"XRootD error from {server} ({_short(e)})"
    return None


_NOISE = re.compile(r"<bound method [^>]*>>? |<[^<>]* object at 0x[0-9a-f]+>")


def _short(exc: BaseException) -> str:
    text = _NOISE.sub("", str(exc).strip())
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def remote_error(exc: BaseException, url: str, what: str) -> InputError | None:
    """The error to raise for a failure reading ``url``, None when it is not a network problem.

    Args:
        exc: the failure.
        url: the file's URL.
        what: what was being done (``"cannot open"``, ``"cannot read entries [0, 10)"``).

    Returns:
        :class:`TransientInputError` (retried) or :class:`InputError` (permanent), naming the
        URL and the cause; None for anything else (the caller reports bad data).
    """
    if not is_remote(url):
        return None
    found = classify(exc, url)
    if found is None:
        return None
    transient, cause = found
    if transient and url.lower().startswith(("root://", "roots://")):
        forget_xrootd_handles(url)
    cls = TransientInputError if transient else InputError
    return cls(f"{url}: {what}: {cause}")
