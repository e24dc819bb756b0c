"""Executors: run one function over many chunks in process, on a process pool, or on Dask."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from agc_core.errors import ConfigError
from agc_core.retry import (  # the policy, also offered here
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    is_retryable,
    retry_delay,
)

log = logging.getLogger(__name__)

EXECUTORS = ("iterative", "processes", "dask")
# the processes executor keeps this many items per worker submitted (bounds what a crash touches)
IN_FLIGHT_PER_WORKER = 2
DEFAULT_START_METHOD = "forkserver" if sys.platform.startswith("linux") else "spawn"


@dataclass(frozen=True)
class Outcome:
    """What became of one item.

    Attributes:
        index: position of the item in the sequence given to :meth:`Executor.run`.
        value: the function's return value (None when it failed).
        error: one line ``"ExceptionType: message"`` when it failed for good, else None.
        attempts: how many times it was started (a re-run after its worker died together
            with others is not counted: only a death while it ran alone is its fault).
        detail: the formatted traceback (or other detail) of the last failure, for the log.
    """

    index: int
    value: Any
    error: str | None
    attempts: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the item succeeded."""
        return self.error is None


@dataclass(frozen=True)
class _Failed:
    """Returned by :func:`guarded_call` in place of a result when the function raised."""

    error: str
    retryable: bool
    detail: str


def guarded_call(fn: Callable[[Any], Any], item: Any, delay: float = 0.0) -> Any:
    """Call ``fn(item)`` (after ``delay`` seconds), turning an exception into a failure record.

    Runs in the worker. See :func:`is_retryable` for which failures are retried.
    """
    if delay > 0:
        time.sleep(delay)
    try:
        return fn(item)
    except Exception as exc:
        return _Failed(f"{type(exc).__name__}: {exc}", is_retryable(exc),
                       traceback.format_exc())


def default_workers() -> int:
    """The default number of workers: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Executor(ABC):
    """Runs ``fn`` over items and yields an :class:`Outcome` per item as each finishes.

    All three share one small interface, :class:`Executor`, whose :meth:`Executor.run` yields an
    :class:`Outcome` per item as items finish (in completion order; the caller merges by index):

    - ``iterative``: in this process, one item after the other (debugging, profiling);
    - ``processes``: a ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes;
    - ``dask``: a ``dask.distributed`` cluster, either an existing one (``scheduler_address``) or
      a ``LocalCluster`` of ``workers`` single-threaded processes.

    Faults. The function runs inside :func:`guarded_call`, so an exception becomes an error
    outcome instead of a lost future. A failed item is retried up to ``max_retries`` times, after
    ``retry_backoff`` seconds, doubling for each further try (:func:`retry_delay`), except for
    :class:`agc_core.errors.AGCError` (bad input, deterministic: retrying cannot help) other than
    a transient network error (:func:`is_retryable`). A worker
    process that dies (segfault, OOM kill, ``os._exit``) breaks the process pool; the pool is then
    recreated, every item that was in flight is re-run alone (one at a time) so the item that kills
    its worker is identified exactly, and only that item is counted as a failed attempt. On Dask the
    scheduler re-runs tasks of dead workers itself (``distributed.scheduler.allowed-failures``) and
    reports ``KilledWorker`` when it gives up. Results already received are never dropped.

    Per-process state (configuration, classifier) belongs in the caller's ``initializer``, which
    each pool process runs once; for Dask it runs once on each worker through ``Client.run`` and
    the function must also be able to initialize lazily (a module-level cache) for workers that
    join later.
    """

    name: str = ""

    def __init__(self, workers: int, max_retries: int = DEFAULT_MAX_RETRIES,
                 retry_backoff: float = DEFAULT_RETRY_BACKOFF) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff < 0:
            raise ConfigError(f"retry_backoff must be >= 0, got {retry_backoff}")
        self.workers = workers
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff

    @abstractmethod
    def run(self, fn: Callable[[Any], Any], items: Sequence[Any],
            initializer: Callable[..., None] | None = None,
            initargs: tuple[Any, ...] = (),
            ready: Callable[[int], Any] | None = None) -> Iterator[Outcome]:
        """Run ``fn`` on every item; yield outcomes in completion order.

        Args:
            fn: a module-level (picklable) function of one item.
            items: picklable items.
            initializer: run once per worker process before its first item.
            initargs: arguments of the initializer.
            ready: called with an item's index before its first submission, blocks until
                the item may go (its input was fetched ahead: :mod:`agc_core.io.prefetch`);
                Dask submits everything at once and does not wait.
        """

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release workers and clusters (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settle(self, index: int, value: Any, attempts: int) -> Outcome | None:
        """An outcome for a finished attempt, or None when the item should be retried."""
        if not isinstance(value, _Failed):
            return Outcome(index, value, None, attempts)
        if value.retryable and attempts <= self.max_retries:
            log.warning("item %d failed (attempt %d of %d), retrying in %.1f s: %s", index,
                        attempts, self.max_retries + 1,
                        retry_delay(self.retry_backoff, attempts), value.error)
            return None
        return Outcome(index, None, value.error, attempts, value.detail)


class IterativeExecutor(Executor):
    """Everything in this process, in order: the reference for debugging and profiling."""

    name = "iterative"

    def __init__(self, workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES,
                 retry_backoff: float = DEFAULT_RETRY_BACKOFF) -> None:
        super().__init__(1, max_retries, retry_backoff)

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any],
            initializer: Callable[..., None] | None = None,
            initargs: tuple[Any, ...] = (),
            ready: Callable[[int], Any] | None = None) -> Iterator[Outcome]:
        if initializer is not None:
            initializer(*initargs)
        for index, item in enumerate(items):
            if ready is not None:
                ready(index)
            attempts = 0
            outcome = None
            while outcome is None:
                delay = retry_delay(self.retry_backoff, attempts) if attempts else 0.0
                attempts += 1
                outcome = self._settle(index, guarded_call(fn, item, delay), attempts)
            yield outcome


class ProcessesExecutor(Executor):
    """A local process pool (``concurrent.futures``) that survives dying workers."""

    name = "processes"

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 start_method: str | None = None, preload: Sequence[str] = (),
                 retry_backoff: float = DEFAULT_RETRY_BACKOFF) -> None:
        super().__init__(default_workers() if workers is None else workers, max_retries,
                         retry_backoff)
        self.preload = list(preload)
        self.start_method = start_method or DEFAULT_START_METHOD
        if self.start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError(f"start method '{self.start_method}' is not available here "
                              f"(choose from {multiprocessing.get_all_start_methods()})")
        self._pool: ProcessPoolExecutor | None = None
        self.pools_created = 0

    def _new_pool(self, initializer: Callable[..., None] | None,
                  initargs: tuple[Any, ...]) -> ProcessPoolExecutor:
        self._shutdown_pool()
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # import the heavy modules once in the fork server, not in every worker
            ctx.set_forkserver_preload(list(dict.fromkeys(["agc_core.executors",
                                                           *self.preload])))
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=initializer,
                                         initargs=initargs)
        self.pools_created += 1
        return self._pool

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._shutdown_pool()

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any],
            initializer: Callable[..., None] | None = None,
            initargs: tuple[Any, ...] = (),
            ready: Callable[[int], Any] | None = None) -> Iterator[Outcome]:
        pool = self._new_pool(initializer, initargs)
        todo: deque[int] = deque(range(len(items)))
        suspects: deque[int] = deque()  # in flight when a worker died: re-run one at a time
        attempts = [0] * len(items)
        delays: dict[int, float] = {}  # items to retry after a failure: wait before the call
        running: dict[Future, int] = {}
        window = self.workers * IN_FLIGHT_PER_WORKER
        breaks_in_a_row = 0
        try:
            while todo or suspects or running:
                # submit: alone while clearing suspects, else keep the window full
                if suspects:
                    if not running:
                        index = suspects.popleft()
                        attempts[index] += 1
                        running[pool.submit(guarded_call, fn, items[index])] = index
                else:
                    while todo and len(running) < window:
                        index = todo.popleft()
                        if ready is not None and attempts[index] == 0:
                            ready(index)
                        attempts[index] += 1
                        running[pool.submit(guarded_call, fn, items[index],
                                            delays.pop(index, 0.0))] = index
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                broken: list[int] = []
                for future in done:
                    index = running.pop(future)
                    try:
                        value = future.result()
                    except BrokenProcessPool:
                        broken.append(index)
                        continue
                    outcome = self._settle(index, value, attempts[index])
                    if outcome is None:
                        delays[index] = retry_delay(self.retry_backoff, attempts[index])
                        todo.appendleft(index)
                    else:
                        yield outcome
                if not broken:
                    breaks_in_a_row = 0
                    continue
                lost = sorted(broken + list(running.values()))
                running.clear()
                breaks_in_a_row += 1
                if breaks_in_a_row > max(10, 2 * self.workers):
                    for index in sorted(lost + list(suspects) + list(todo)):
                        yield Outcome(index, None, "WorkerDied: worker processes keep dying "
                                      "(even on a fresh pool)", attempts[index])
                    return
                pool = self._new_pool(initializer, initargs)
                if len(lost) == 1:
                    # it ran alone: this item killed its worker
                    index = lost[0]
                    value = _Failed("WorkerDied: the worker process died while processing "
                                    "this item", True, "")
                    outcome = self._settle(index, value, attempts[index])
                    if outcome is None:
                        suspects.appendleft(index)
                    else:
                        yield outcome
                else:
                    log.warning("a worker process died; re-running the %d items that were in "
                                "flight one at a time", len(lost))
                    for index in lost:
                        attempts[index] -= 1  # not known to be their fault
                    suspects.extend(lost)
        finally:
            self._shutdown_pool()


class DaskExecutor(Executor):
    """``dask.distributed``: an existing cluster or a local one of single-threaded workers."""

    name = "dask"

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 scheduler_address: str | None = None,
                 retry_backoff: float = DEFAULT_RETRY_BACKOFF) -> None:
        super().__init__(default_workers() if workers is None else workers, max_retries,
                         retry_backoff)
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--executor dask needs dask[distributed] "
                              "(pip install 'agc-core[dask]')") from exc
        self.scheduler_address = scheduler_address
        self._client: Any = None
        self._cluster: Any = None

    def _connect(self) -> Any:
        from distributed import Client, LocalCluster

        if self._client is not None:
            return self._client
        if not log.isEnabledFor(logging.DEBUG):  # dask's INFO chatter only with --verbose
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.scheduler_address:
            try:
                self._client = Client(self.scheduler_address, timeout="30s")
            except OSError as exc:
                raise ConfigError(f"cannot connect to the Dask scheduler at "
                                  f"{self.scheduler_address}: {exc}") from exc
            n = len(self._client.scheduler_info().get("workers", {}))
            log.info("connected to Dask scheduler %s (%d workers)", self.scheduler_address, n)
            if n:
                self.workers = n
        else:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None,
                                         silence_logs=logging.WARNING)
            self._client = Client(self._cluster)
            log.info("started a local Dask cluster with %d single-threaded workers",
                     self.workers)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any],
            initializer: Callable[..., None] | None = None,
            initargs: tuple[Any, ...] = (),
            ready: Callable[[int], Any] | None = None) -> Iterator[Outcome]:
        from distributed import as_completed

        client = self._connect()
        if initializer is not None:
            client.run(initializer, *initargs)
        attempts = [1] * len(items)
        futures = {client.submit(guarded_call, fn, item, pure=False): i
                   for i, item in enumerate(items)}
        pending = as_completed(list(futures))
        for future in pending:
            index = futures.pop(future)
            try:
                value = future.result()
            except Exception as exc:  # KilledWorker, lost connection, ...
                value = _Failed(f"{type(exc).__name__}: {exc}", False, "")
            future.release()
            outcome = self._settle(index, value, attempts[index])
            if outcome is None:
                delay = retry_delay(self.retry_backoff, attempts[index])
                attempts[index] += 1
                retry = client.submit(guarded_call, fn, items[index], delay, pure=False)
                futures[retry] = index
                pending.add(retry)
            else:
                yield outcome


def make_executor(name: str, workers: int | None = None, *,
                  scheduler_address: str | None = None, start_method: str | None = None,
                  preload: Sequence[str] = (),
                  max_retries: int = DEFAULT_MAX_RETRIES,
                  retry_backoff: float = DEFAULT_RETRY_BACKOFF) -> Executor:
    """Build the named executor.

    Args:
        name: ``iterative``, ``processes`` or ``dask``.
        workers: processes (default: the usable CPU cores); ignored by ``iterative`` and by
            ``dask`` with a scheduler address (the cluster decides).
        scheduler_address: ``tcp://host:port`` of an existing Dask scheduler.
        start_method: multiprocessing start method of the ``processes`` pool.
        preload: modules the ``forkserver`` imports once, before forking workers.
        max_retries: retries of a failed item (exceptions other than AGCError, transient
            network errors, dead workers).
        retry_backoff: seconds before the first retry, doubled for each further one.

    Raises:
        ConfigError: unknown executor or invalid option.
    """
    if name == "iterative":
        return IterativeExecutor(1, max_retries, retry_backoff)
    if name == "processes":
        return ProcessesExecutor(workers, max_retries, start_method, preload, retry_backoff)
    if name == "dask":
        return DaskExecutor(workers, max_retries, scheduler_address, retry_backoff)
    raise ConfigError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
