"""The remote benchmark's delaying proxy (:class:`agc_core.bench.proxy.DelayProxy`) against a
loopback echo server: bytes intact both ways, every round trip at least the RTT, connection
counts. No speed is asserted."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agc_core.bench.proxy import DelayProxy
from agc_core.bench.xrootd import free_port


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback echo server (a thread per connection) that closes after the client's EOF."""
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``conn`` (fails on an early EOF)."""
    out = bytearray()
    while len(out) < n:
        data = conn.recv(n - len(out))
        assert data, f"EOF after {len(out)} of {n} bytes"
        out += data
    return bytes(out)


def echo_through(port: int, payload: bytes) -> bytes:
    """Send ``payload`` (while reading), half-close, and return everything read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        sender = threading.Thread(target=lambda: (conn.sendall(payload),
                                                  conn.shutdown(socket.SHUT_WR)))
        sender.start()
        out = bytearray()
        while data := conn.recv(1 << 20):
            out += data
        sender.join()
    return bytes(out)


@pytest.mark.parametrize("rtt", [0.0, 0.02])
def test_bytes_intact_both_ways(echo_port, rtt):
    """Megabytes in both directions at once, on two connections, arrive unchanged and in
    order; the client's half-close reaches the server and the server's close comes back."""
    payloads = [os.urandom(5 << 20), os.urandom(3 << 20) + b"tail"]
    with DelayProxy(echo_port, rtt) as proxy:
        results: list[bytes] = [b""] * len(payloads)
        threads = [threading.Thread(target=lambda i=i, p=p: results.__setitem__(
            i, echo_through(proxy.port, p))) for i, p in enumerate(payloads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == payloads
        total = sum(len(p) for p in payloads)
        assert (proxy.bytes_up, proxy.bytes_down) == (total, total)
        assert proxy.bytes_forwarded == 2 * total
        assert proxy.accepted == 2


@pytest.mark.parametrize("handshake", [True, False])
def test_each_round_trip_takes_the_rtt(echo_port, handshake):
    """A ping-pong: every exchange takes at least the RTT, and the first one on a new
    connection one RTT more with ``handshake`` (the TCP handshake a real path costs)."""
    rtt = 0.05
    with DelayProxy(echo_port, rtt, handshake=handshake) as proxy:
        t_connect = time.perf_counter()  # the handshake's RTT counts from before the connect
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
        times = []
        for i in range(6):
            message = f"ping {i}".encode()
            t0 = t_connect if i == 0 else time.perf_counter()
            conn.sendall(message)
            assert recv_exactly(conn, len(message)) == message
            times.append(time.perf_counter() - t0)
        conn.close()
    assert min(times) >= rtt, times
    if handshake:
        assert times[0] >= 2 * rtt, times


def test_zero_rtt_round_trips(echo_port):
    """RTT 0 forwards at once (no timer in the way of correctness)."""
    with DelayProxy(echo_port, 0.0) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as conn:
        for i in range(50):
            conn.sendall(b"%d" % i)
            assert recv_exactly(conn, len(b"%d" % i)) == b"%d" % i


def wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_peak_open_counts_concurrent_connections(echo_port):
    with DelayProxy(echo_port, 0.01) as proxy:
        conns = [socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
                 for _ in range(3)]
        for conn in conns:  # each is through to the server
            conn.sendall(b"hi")
            assert recv_exactly(conn, 2) == b"hi"
        assert (proxy.accepted, proxy.open, proxy.peak_open) == (3, 3, 3)
        for conn in conns:
            conn.close()
        assert wait_for(lambda: proxy.open == 0), proxy.open
        for _ in range(2):  # one after the other: never more than one open
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as conn:
                conn.sendall(b"x")
                assert recv_exactly(conn, 1) == b"x"
            assert wait_for(lambda: proxy.open == 0), proxy.open
        assert (proxy.accepted, proxy.peak_open) == (5, 3)
        proxy.reset_counts()  # counting again, from the connections open now (none)
        assert (proxy.accepted, proxy.peak_open, proxy.bytes_forwarded) == (0, 0, 0)


def test_target_down_closes_the_client_and_close_is_idempotent():
    proxy = DelayProxy(free_port(), 0.0)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as conn:
            try:
                assert conn.recv(1) == b""  # closed (EOF) ...
            except ConnectionResetError:  # ... or reset
                pass
    finally:
        proxy.close()
        proxy.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


def test_negative_rtt_is_refused():
    with pytest.raises(ValueError, match="rtt_s"):
        DelayProxy(free_port(), -0.1)


def test_proxy_in_its_own_process(echo_port):
    """DelayProxyProcess (what the benchmark uses: the forwarding takes no CPU from the
    measured process) delays, forwards and counts as DelayProxy; its counts stay readable
    after close."""
    from agc_core.bench.proxy import DelayProxyProcess

    rtt = 0.04
    with DelayProxyProcess(echo_port, rtt) as proxy:
        t_connect = time.perf_counter()  # the handshake's RTT counts from before the connect
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as conn:
            times = []
            for i in range(3):
                t0 = t_connect if i == 0 else time.perf_counter()
                conn.sendall(b"ping %d" % i)
                assert recv_exactly(conn, 6) == b"ping %d" % i
                times.append(time.perf_counter() - t0)
        assert min(times) >= rtt and times[0] >= 2 * rtt, times
        assert wait_for(lambda: proxy.open == 0)
        assert (proxy.accepted, proxy.peak_open, proxy.bytes_up, proxy.bytes_down) == (1, 1, 18,
                                                                                     18)
        assert proxy.bytes_forwarded == 36
        proxy.reset_counts()
        assert (proxy.accepted, proxy.peak_open, proxy.bytes_forwarded) == (0, 0, 0)
        payload = os.urandom(2 << 20)
        assert echo_through(proxy.port, payload) == payload
    assert proxy.accepted == 1 and proxy.bytes_down == len(payload)
    proxy.close()
