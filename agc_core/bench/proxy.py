"""A loopback TCP proxy that delays every forwarded segment: a network round-trip time in user
space (the kernel's netem is not available), for ``python -m agc_core bench --what remote``.

:class:`DelayProxy` listens on 127.0.0.1 and forwards each connection to ``127.0.0.1:target``.
Whatever it reads from one side is written to the other side one one-way delay (``rtt / 2``)
after it arrived, in order, in both directions: a request and its answer take at least one RTT,
and a new connection's first bytes leave one RTT after it was accepted (the TCP handshake a real
path costs before the client can send; ``handshake=False`` leaves it out). The bandwidth is not
limited: reads take up to 1 MiB at a time, each piece is written when its delay is over, and the
source is only paused while the destination's write buffer is full or a direction holds more than
:data:`MAX_QUEUED` delayed bytes (back-pressure, as TCP windows give it). Its event loop runs in a
daemon thread; only 127.0.0.1 is ever bound or connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Any

__all__ = ["MAX_QUEUED", "READ_SIZE", "DelayProxy"]

#: bytes read from a socket at a time
READ_SIZE = 1 << 20
#: delayed bytes one direction of a connection may hold before its source is paused
MAX_QUEUED = 64 << 20
#: a destination's write buffer above this pauses the source (back-pressure)
WRITE_HIGH = 4 << 20
LOOPBACK = "127.0.0.1"

_EOF = object()  # queue marker: the source sent EOF (half-close)
_CLOSE = object()  # queue marker: the source is gone


class _Pipe:
    """One direction of a proxied connection: pieces from ``src``, written to ``dst`` at their
    arrival time + ``delay``, in arrival order."""

    def __init__(self, proxy: DelayProxy, delay: float, not_before: float, up: bool) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.delay = delay
        self.not_before = not_before  # arrivals count from here at the earliest (handshake)
        self.up = up  # client -> server
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.dst_side: _Side | None = None
        self.queue: deque[tuple[float, Any]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.dst_full = False
        self.src_paused = False

    def push(self, item: Any) -> None:
        """Queue ``item`` (bytes or a marker) for ``dst`` at now + delay."""
        when = max(self.loop.time(), self.not_before) + self.delay
        self.queue.append((when, item))
        if isinstance(item, bytes):
            self.queued += len(item)
        self._flow()
        self._arm()

    def connected(self, dst: asyncio.Transport) -> None:
        """``dst`` is ready: forward what waited for it."""
        self.dst = dst
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.queue and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        """Write every piece whose time has come, in order; re-arm for the next one."""
        self.timer = None
        dst = self.dst
        assert dst is not None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, item = self.queue.popleft()
            if item is _EOF:
                if not dst.is_closing() and dst.can_write_eof():
                    dst.write_eof()
                if self.dst_side is not None:
                    self.dst_side.eof_sent()
            elif item is _CLOSE:
                dst.close()  # after its buffered writes
            else:
                self.queued -= len(item)
                if not dst.is_closing():
                    self.proxy.count(len(item), self.up)  # before the peer can see it
                    dst.write(item)
        self._flow()
        self._arm()

    def set_dst_full(self, full: bool) -> None:
        """The destination's write buffer crossed its high (True) or low (False) mark."""
        self.dst_full = full
        self._flow()

    def _flow(self) -> None:
        """Pause the source while the destination is full or too much waits; else resume."""
        src = self.src
        if src is None or src.is_closing():
            return
        pause = self.dst_full or self.queued > MAX_QUEUED
        if pause and not self.src_paused:
            src.pause_reading()
        elif not pause and self.src_paused:
            src.resume_reading()
        self.src_paused = pause

    def drop(self) -> None:
        """Forget what waits (the destination is gone)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class _Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection (the client's or the server's): what it reads goes
    into ``out``, what ``into`` forwards is written to it."""

    def __init__(self, proxy: DelayProxy, out: _Pipe, into: _Pipe, client: bool) -> None:
        self.proxy = proxy
        self.out = out
        self.into = into
        self.client = client
        into.dst_side = self
        self.buf = memoryview(bytearray(READ_SIZE))
        self.transport: asyncio.Transport | None = None
        self.eof_in = False  # the peer half-closed
        self.eof_out = False  # we half-closed towards the peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.out.src = transport
        self.into.connected(transport)
        self.proxy.opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.out.push(bytes(self.buf[:nbytes]))  # one copy: the buffer is reused

    def eof_received(self) -> bool:
        self.eof_in = True
        self.out.push(_EOF)
        self._maybe_close()
        return True  # keep the other direction open (half-close)

    def pause_writing(self) -> None:
        self.into.set_dst_full(True)

    def resume_writing(self) -> None:
        self.into.set_dst_full(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.into.drop()
        self.out.push(_CLOSE)  # the other side closes after what this one sent before
        self.proxy.closed(self)

    def eof_sent(self) -> None:
        """We half-closed towards the peer."""
        self.eof_out = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.eof_in and self.eof_out and self.transport is not None:
            self.transport.close()


class DelayProxy:
    """A loopback TCP proxy to ``127.0.0.1:target_port`` adding ``rtt_s`` to every round trip.

    Usable as a context manager (closed on exit).

    Attributes:
        port: where it listens (127.0.0.1).
        rtt_s: the added round-trip time (each direction gets half).
        accepted: connections accepted so far.
        open: client connections open now.
        peak_open: the most client connections open at once.
        bytes_up: bytes forwarded client -> server.
        bytes_down: bytes forwarded server -> client.
    """

    def __init__(self, target_port: int, rtt_s: float, handshake: bool = True) -> None:
        if rtt_s < 0:
            raise ValueError(f"rtt_s must be >= 0, got {rtt_s}")
        self.target = target_port
        self.rtt_s = float(rtt_s)
        self.handshake = handshake
        self.accepted = 0
        self.open = 0
        self.peak_open = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._sides: set[_Side] = set()
        self._closed_flag = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy",
                                        daemon=True)
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        except BaseException:
            self._stop_loop()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def bytes_forwarded(self) -> int:
        """Bytes forwarded in both directions."""
        return self.bytes_up + self.bytes_down

    async def _listen(self) -> asyncio.AbstractServer:
        return await self.loop.create_server(self._accept, LOOPBACK, 0, backlog=256)

    def _accept(self) -> _Side:
        """A new client connection: its side, and the connection to the target behind it."""
        self.accepted += 1
        delay = self.rtt_s / 2
        now = self.loop.time()
        up = _Pipe(self, delay, now + (self.rtt_s if self.handshake else 0.0), True)
        down = _Pipe(self, delay, now, False)
        client = _Side(self, up, down, client=True)
        server = _Side(self, down, up, client=False)
        self.loop.create_task(self._connect(client, server))
        return client

    async def _connect(self, client: _Side, server: _Side) -> None:
        try:
            await self.loop.create_connection(lambda: server, LOOPBACK, self.target)
        except OSError:
            if client.transport is not None:
                client.transport.abort()

    def opened(self, side: _Side) -> None:
        """A socket of a proxied connection is connected."""
        self._sides.add(side)
        if side.client:
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)

    def closed(self, side: _Side) -> None:
        """A socket of a proxied connection is gone."""
        self._sides.discard(side)
        if side.client:
            self.open -= 1

    def count(self, n: int, up: bool) -> None:
        """``n`` bytes were forwarded (``up``: client -> server)."""
        if up:
            self.bytes_up += n
        else:
            self.bytes_down += n

    def reset_counts(self) -> None:
        """Start counting again: ``accepted`` and the bytes from 0, ``peak_open`` from the
        connections open now (in the loop's thread, so no update is lost)."""

        def reset() -> None:
            self.accepted = self.bytes_up = self.bytes_down = 0
            self.peak_open = self.open

        self.loop.call_soon_threadsafe(reset)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(10)

    async def _shutdown(self) -> None:
        self._server.close()
        for side in list(self._sides):
            if side.transport is not None:
                side.transport.abort()
        await self._server.wait_closed()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    def close(self) -> None:
        """Stop listening, drop every connection and stop the loop's thread (idempotent)."""
        if self._closed_flag:
            return
        self._closed_flag = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self._stop_loop()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DelayProxy(127.0.0.1:{self.port} -> 127.0.0.1:{self.target}, "
                f"rtt {self.rtt_s * 1e3:g} ms, {self.accepted} accepted)")


def _serve_in_child(target_port: int, rtt_s: float, handshake: bool, conn: Any) -> None:
    """The body of :class:`DelayProxyProcess`'s process: a :class:`DelayProxy` that answers
    ``counts``, ``reset`` and ``close`` on ``conn``."""
    proxy = DelayProxy(target_port, rtt_s, handshake)
    conn.send(proxy.port)
    try:
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                proxy.reset_counts()
            if cmd in ("counts", "reset", "close"):
                conn.send({k: getattr(proxy, k) for k in _COUNTS})
            if cmd == "close":
                break
    except EOFError:
        pass
    finally:
        proxy.close()


_COUNTS = ("accepted", "open", "peak_open", "bytes_up", "bytes_down")


class DelayProxyProcess:
    """A :class:`DelayProxy` in a process of its own: forwarding hundreds of MB costs CPU,
    which must not take the GIL of the process whose client it measures (the benchmark runs
    the analysis in its own process). Same attributes as :class:`DelayProxy` (read from the
    child when asked)."""

    def __init__(self, target_port: int, rtt_s: float, handshake: bool = True) -> None:
        import multiprocessing

        if rtt_s < 0:
            raise ValueError(f"rtt_s must be >= 0, got {rtt_s}")
        self.target = target_port
        self.rtt_s = float(rtt_s)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_in_child, args=(target_port, rtt_s, handshake,
                                                               child), daemon=True,
                                 name="delay-proxy")
        self._proc.start()
        if not self._conn.poll(30):
            self._proc.kill()
            raise RuntimeError("the delaying proxy's process did not start")
        self.port = int(self._conn.recv())
        self._last: dict[str, int] = dict.fromkeys(_COUNTS, 0)
        self._closed = False

    def _ask(self, cmd: str) -> dict[str, int]:
        if not self._closed:
            self._conn.send(cmd)
            self._last = self._conn.recv()
        return self._last

    def __getattr__(self, name: str) -> Any:
        if name in _COUNTS:
            return self._ask("counts")[name]
        raise AttributeError(name)

    @property
    def bytes_forwarded(self) -> int:
        """Bytes forwarded in both directions."""
        c = self._ask("counts")
        return c["bytes_up"] + c["bytes_down"]

    def reset_counts(self) -> None:
        """As :meth:`DelayProxy.reset_counts`."""
        self._ask("reset")

    def close(self) -> None:
        """Stop the proxy and its process (idempotent; the last counts stay readable)."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._ask("close")
        self._closed = True
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    def __enter__(self) -> DelayProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
