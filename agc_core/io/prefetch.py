"""Read-ahead of remote inputs: the network kept busy while the workers compute.

A worker that reads a remote chunk waits for the network (round trips, transfer) and then
computes; meanwhile nothing is fetched. The :class:`Prefetcher` runs in the process that
plans and submits the tasks: it fetches the baskets of the next chunks, in task order, into the
byte cache (:mod:`agc_core.io.cache`) while the workers process the current ones, several
chunks at once and each chunk's byte ranges as concurrent requests
(:func:`agc_core.io.remote.read_ranges`). The executor submits a task once its bytes are there
(:meth:`Prefetcher.wait`), and the worker then reads them from the cache at local speed.

Bounds. At most ``depth`` chunks are fetched at once (one per worker until as many arrived: the
first chunks are what the workers wait for); the depth starts at four per worker and
adapts to the measured time a chunk takes to fetch and to process (more chunks in flight when
the network is slow), up to :data:`MAX_DEPTH`, and never more than :data:`MEMORY_BYTES` of
chunks in flight (this process holds each in memory while it is fetched). At most
:data:`AHEAD_BYTES` (and at most half the cache's bound) of fetched chunks wait for a
worker; the cache is trimmed to its bound during the run, each time a tenth of it was written.
A prefetch that fails is only logged: the worker then fetches the chunk itself, with the usual
retries and error messages, so no chunk is lost or processed twice because of it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agc_core.io import remote
from agc_core.io.cache import ByteCache

log = logging.getLogger(__name__)

#: most chunks fetched at once
MAX_DEPTH = 16
#: most bytes of chunks being fetched at once (held in this process's memory meanwhile)
MEMORY_BYTES = 512 * 1000**2
#: most bytes of fetched chunks waiting for a worker (on disk, in the cache or the spool)
AHEAD_BYTES = 4 * 1000**3


@dataclass
class PrefetchStats:
    """What the read-ahead did: chunks fetched or failed, bytes, busy seconds, depth."""

    chunks: int = 0
    failed: int = 0
    #: bytes the read-ahead fetched from the network
    bytes_network: int = 0
    seconds: float = 0.0
    max_depth: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


def _ranges(task: Any, branches: Sequence[str]) -> list[tuple[int, int]]:
    from agc_core.io.layout import layout_byte_ranges

    return layout_byte_ranges(task.layout, branches, task.entry_start, task.entry_stop)


def eligible(task: Any) -> bool:
    """Whether a task's bytes can be fetched ahead: a remote file with a basket layout."""
    return task.layout is not None and bool(task.layout.get("remote")) and remote.is_remote(
        task.path)


class Prefetcher:
    """Fetches the baskets of upcoming remote chunks into a byte cache (see the module).

    Args:
        tasks: the tasks in the order the executor submits them (its item indices).
        branches: the branches the workers read.
        cache: the byte cache the workers read through.
        workers: worker processes (the first depth is four per worker, never below two).
        spool: the cache is a run's private spool (``--no-cache``): a file's entries are
            deleted once its tasks are done.
    """

    def __init__(self, tasks: Sequence[Any], branches: Sequence[str], cache: ByteCache,
                 workers: int, spool: bool = False) -> None:
        self.tasks = list(tasks)
        self.branches = list(branches)
        self.cache = cache
        self.spool = spool
        self.workers = max(1, workers)
        self.depth = min(MAX_DEPTH, 4 * self.workers)
        self.stats = PrefetchStats()
        self._todo = [i for i, t in enumerate(self.tasks) if eligible(t)]
        self._done = {i: threading.Event() for i in self._todo}
        self._left: dict[str, int] = {}  # per file: its tasks not finished yet
        for i in self._todo:
            self._left[self.tasks[i].path] = self._left.get(self.tasks[i].path, 0) + 1
        self._sizes: dict[int, int] = {}
        self._cond = threading.Condition()
        self._in_flight: dict[int, int] = {}  # index -> bytes
        self._ahead = 0  # bytes fetched for tasks not yet finished
        self._fetch_s: list[float] = []
        self._process_s: list[float] = []
        self._stop = False
        self._trimmed = 0  # the cache's bytes_written at the last trim
        self._pool = ThreadPoolExecutor(MAX_DEPTH, thread_name_prefix="agc-prefetch")
        self._thread = threading.Thread(target=self._schedule, name="agc-prefetch",
                                        daemon=True)

    def __enter__(self) -> Prefetcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """Whether any task is fetched ahead."""
        return bool(self._todo)

    def start(self) -> None:
        """Start fetching (in background threads)."""
        if self._todo:
            self._thread.start()

    def close(self) -> None:
        """Stop fetching (chunks in flight finish or are abandoned; nothing waits for them)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for ev in self._done.values():
            ev.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait(self, index: int, timeout: float | None = None) -> bool:
        """Block until task ``index``'s bytes were fetched (or its prefetch failed, or it is
        not fetched ahead): the executor submits it then. Returns False on timeout."""
        ev = self._done.get(index)
        return True if ev is None else ev.wait(timeout)

    def finished(self, index: int, seconds: float = 0.0) -> None:
        """Task ``index`` is done (its worker took ``seconds`` to read and process it): its
        bytes no longer count as waiting, and a spool forgets them."""
        with self._cond:
            self._ahead -= self._sizes.pop(index, 0)
            if seconds > 0:
                self._process_s.append(seconds)
            self._cond.notify_all()
        if self.spool and index in self._done:
            self._forget(index)

    def _forget(self, index: int) -> None:
        """A spool forgets a file's bytes once all its tasks are done (a task's ranges may
        be served by another task's entries: baskets that straddle two chunks)."""
        import shutil

        from agc_core.io.layout import layout_cache_key

        task = self.tasks[index]
        with self._cond:
            self._left[task.path] -= 1
            if self._left[task.path] > 0:
                return
        key = layout_cache_key(task.path, task.layout)
        if key is not None:
            shutil.rmtree(self.cache._dir(key), ignore_errors=True)

    def _adapt(self) -> None:
        """More chunks in flight when fetching a chunk takes longer than processing one."""
        if not self._fetch_s:
            return
        fetch = sorted(self._fetch_s[-16:])[len(self._fetch_s[-16:]) // 2]
        process = (sorted(self._process_s[-16:])[len(self._process_s[-16:]) // 2]
                   if self._process_s else fetch)
        want = math.ceil(self.workers * (1 + fetch / max(process, 1e-3)))
        self.depth = max(min(MAX_DEPTH, 2 * self.workers), min(MAX_DEPTH, want))

    def _depth_now(self) -> int:
        """The chunks that may be in flight now: one per worker until as many were fetched
        (the chunks the workers wait for first get the bandwidth to themselves), then
        :attr:`depth`."""
        if self.stats.chunks + self.stats.failed < self.workers:
            return self.workers
        return self.depth

    def _trim(self) -> None:
        """Keep the cache within its bound during a long run (what was fetched ahead is the
        most recently used: the least recently used go first), each time a tenth of the bound
        was written."""
        written = self.cache.stats.bytes_written
        if self.spool or written - self._trimmed < self.cache.max_bytes / 10:
            return
        self._trimmed = written
        try:
            removed = self.cache.trim()
        except OSError as exc:
            log.warning("cannot trim the byte cache %s: %s", self.cache.folder, exc)
            return
        if removed:
            log.info("byte cache %s: removed %.1f MB of the least recently used ranges",
                     self.cache.folder, removed / 1e6)

    def _schedule(self) -> None:
        ahead_max = AHEAD_BYTES if self.spool else min(AHEAD_BYTES, self.cache.max_bytes // 2)
        for index in self._todo:
            task = self.tasks[index]
            try:
                ranges = _ranges(task, self.branches)
            except Exception as exc:  # a layout that does not fit: the worker reads it
                log.debug("prefetch %s: no ranges (%s)", task.name, exc)
                self._done[index].set()
                continue
            size = sum(b - a for a, b in ranges)
            with self._cond:
                while not self._stop and (self._in_flight or self._ahead) and (
                        len(self._in_flight) >= self._depth_now()
                        or sum(self._in_flight.values()) + size > MEMORY_BYTES
                        or self._ahead + size > ahead_max):
                    self._cond.wait(0.5)
                if self._stop:
                    return
                self._in_flight[index] = size
                self._ahead += size
                self._sizes[index] = size
                self.stats.max_depth = max(self.stats.max_depth, len(self._in_flight))
            self._trim()
            try:
                self._pool.submit(self._fetch, index, ranges, size)
            except RuntimeError:  # closed meanwhile
                return

    def _fetch(self, index: int, ranges: list[tuple[int, int]], size: int) -> None:
        from agc_core.io.layout import layout_cache_key

        task = self.tasks[index]
        t0 = time.perf_counter()
        net0 = remote.network_bytes(this_thread=True)
        ok = False
        try:
            key = layout_cache_key(task.path, task.layout)
            if not self._stop and not all(self.cache.has(key, a, b)
                                          for a, b in remote.coalesce(ranges)):
                remote.read_ranges(task.path, ranges, self.cache, key)
            ok = True
        except Exception as exc:  # the worker fetches it itself (retries, named errors)
            log.info("prefetch of %s failed, its worker reads it: %s", task.name, exc)
        dt = time.perf_counter() - t0
        with self._cond:
            self._in_flight.pop(index, None)
            if ok:
                self.stats.chunks += 1
                self._fetch_s.append(dt)
                self._adapt()
            else:
                self.stats.failed += 1
                self._ahead -= self._sizes.pop(index, 0)
            self.stats.seconds += dt
            self.stats.bytes_network += remote.network_bytes(this_thread=True) - net0
            self._cond.notify_all()
        self._done[index].set()
