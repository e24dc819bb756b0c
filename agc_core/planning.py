"""Plan a run: split every file of every sample into chunk tasks (entry counts cached)."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agc_core.errors import AGCError, ConfigError
from agc_core.fileset import SampleFiles, is_url
from agc_core.io.cache import format_bytes
from agc_core.results import ChunkFailure

log = logging.getLogger(__name__)

ENTRIES_CACHE_VERSION = 3  # 3: one record per file, keyed by its identity (with the UUID)
#: files planned at once: local files (CPU: TTree parsing) and remote ones (round trips)
PLAN_THREADS = 8
PLAN_THREADS_REMOTE = 32
#: remote files planned in processes (see _planning_processes) from this many on
PLAN_PROCESSES_MIN_FILES = 24


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: an entry range of one file of one sample.

    Attributes:
        index: stable task index (samples in config order, files in fileset order, ranges
            in file order); results are merged in this order.
    """

    index: int
    process: str
    variation: str
    sample_id: int
    file_id: int  # the file's identity (:func:`file_identity`), keys its JER draws
    path: str
    entry_start: int
    entry_stop: int
    xsec_weight: float
    compressed_bytes: int = 0
    #: where the file's baskets are (:func:`agc_core.io.file_layout`), so that the worker
    #: reads without parsing the TTree again; None: the usual reading
    layout: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``process/variation file <path> entries [start, stop)``."""
        return (f"{self.process}/{self.variation} file {self.path} entries "
                f"[{self.entry_start}, {self.entry_stop})")


def _local(path: str) -> str | None:
    """The local path of ``path``, None for a remote URL."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if is_url(path) else path


@dataclass(frozen=True)
class FileProbe:
    """Who a file is, learned cheaply (a stat and a header read, or one small remote request).

    Attributes:
        key: the plan cache's key: a digest of the path or URL, the tree, the size (``fEND``
            for a remote file), the ROOT UUID and, for a local file, its modification time.
        uuid: the file's ROOT UUID (``TFile::fUUID``, 16 bytes): it keys its JER draws.
    """

    key: str
    uuid: bytes
    size: int = 0
    #: a remote file's first bytes, when the probe asked for more than its header
    head: Any = field(default=None, repr=False, compare=False)


def probe_file(path: str, tree: str, head_bytes: int = 0) -> FileProbe:
    """The :class:`FileProbe` of a file: local (stat + its first bytes) or remote (one request
    for its header, or for its first ``head_bytes`` when more: :func:`agc_core.io.remote.probe`).

    Raises:
        InputError: missing or unreadable, not a ROOT file (network problems named, transient
            ones retried).
    """
    from agc_core.errors import InputError
    from agc_core.io import remote

    local = _local(path)
    head = None
    if local is None:
        size, uuid, first = remote.probe_head(path, max(head_bytes, remote.HEADER_BYTES))
        head = first if head_bytes > remote.HEADER_BYTES else None
        ident: list[Any] = [path, tree, size, uuid.hex()]
    else:
        from agc_core import io

        st = io.check_local_file(path)  # missing, empty, not ROOT, truncated: named
        try:
            with open(local, "rb") as fh:
                head = fh.read(remote.HEADER_BYTES)
        except OSError as exc:
            raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
        size, uuid = remote.parse_header(head, path)
        ident = [os.path.abspath(local), tree, st.st_size, uuid.hex(), st.st_mtime_ns]
    key = hashlib.blake2b(json.dumps(ident).encode(), digest_size=16).hexdigest()
    return FileProbe(key, uuid, size, head)


class EntriesCache:
    """Entry counts, chunk ranges and basket layouts of files, kept between runs.

    One small JSON record per file in ``folder`` (the user's cache folder's ``plans/``, see
    :mod:`agc_core.io.cache`), keyed by the file's identity (:func:`probe_file`), so that a
    run into another output folder plans nothing again, and a file that changed (another size,
    UUID or modification time) is planned anew. Records are written atomically; concurrent
    runs at worst both write the same record.

    Args:
        folder: the records' folder; None keeps them in memory only (``--no-cache``).
    """

    def __init__(self, folder: Path | None) -> None:
        self.path = folder
        self.data: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._latest: dict[str, str] = {}  # remote URL + tree -> the key of its last probe
        self._seen: dict[str, str | None] = {}  # the same, as read from the folder
        self._lock = threading.Lock()

    @property
    def dirty(self) -> bool:
        """Whether records changed since the last :meth:`save`."""
        return bool(self._dirty)

    def _file(self, key: str) -> Path | None:
        return None if self.path is None else self.path / key[:2] / f"{key}.json"

    def _record(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self.data:
                return self.data[key]
        rec = None
        path = self._file(key)
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") == ENTRIES_CACHE_VERSION:
                    rec = raw.get("file")
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable plan cache record %s", path)
        with self._lock:
            if rec is not None:
                self.data.setdefault(key, rec)
            return self.data.get(key)

    def get(self, key: str, ranges_key: str
            ) -> tuple[int, list[tuple[int, int]], int, int] | None:
        """Cached (entries, ranges, identity, compressed bytes of the branches) or None."""
        rec = self._record(key)
        if (rec is None or ranges_key not in rec.get("ranges", {}) or "identity" not in rec
                or ranges_key not in rec.get("bytes", {})):
            return None
        return (int(rec["entries"]), [(int(a), int(b)) for a, b in rec["ranges"][ranges_key]],
                int(rec["identity"]), int(rec["bytes"][ranges_key]))

    def put(self, key: str, ranges_key: str, entries: int,
            ranges: list[tuple[int, int]], identity: int, nbytes: int = 0) -> None:
        """Remember a file's entries, ranges, identity and compressed bytes of the branches."""
        self._record(key)
        with self._lock:
            rec = self.data.setdefault(key, {"entries": entries, "ranges": {}})
            rec["entries"] = entries
            rec["identity"] = identity
            rec.setdefault("ranges", {})[ranges_key] = [list(r) for r in ranges]
            rec.setdefault("bytes", {})[ranges_key] = int(nbytes)
            self._dirty.add(key)

    def _latest_file(self, path: str, tree: str) -> Path | None:
        name = hashlib.blake2b(json.dumps([path, tree]).encode(), digest_size=16).hexdigest()
        return None if self.path is None else self.path / "latest" / f"{name}.json"

    def latest(self, path: str, tree: str) -> str | None:
        """The record key of the last probe of the remote file ``path`` (None: never seen):
        what :mod:`agc_core.speculation` plans a warm file from."""
        which = json.dumps([path, tree])
        with self._lock:
            if which in self._latest:
                return self._latest[which]
            if which in self._seen:
                return self._seen[which]
        file = self._latest_file(path, tree)
        key = None if file is None else self._on_disk(file)
        with self._lock:
            self._seen[which] = key
        return key

    @staticmethod
    def _on_disk(file: Path) -> str | None:
        try:
            return str(json.loads(file.read_text())["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_latest(self, path: str, tree: str, key: str) -> None:
        """Remember ``key`` as the last probe of the remote file ``path`` (on :meth:`save`)."""
        with self._lock:
            self._latest[json.dumps([path, tree])] = key
            self._seen[json.dumps([path, tree])] = key

    def get_layout(self, key: str, branches_key: str) -> dict[str, Any] | None:
        """The cached :func:`agc_core.io.file_layout` of a file's branches, or None."""
        rec = self._record(key)
        return None if rec is None else rec.get("layout", {}).get(branches_key)

    def put_layout(self, key: str, branches_key: str, layout: dict[str, Any]) -> None:
        """Remember a file's layout (of one branch set)."""
        with self._lock:
            rec = self.data.get(key)
            if rec is not None:
                rec.setdefault("layout", {})[branches_key] = layout
                self._dirty.add(key)

    def save(self) -> None:
        """Write the changed records (each atomically)."""
        if self.path is None:
            self._dirty.clear()
            return
        from agc_core.outputs import write_text_atomic

        with self._lock:
            todo = {k: self.data[k] for k in self._dirty if k in self.data}
            self._dirty.clear()
            latest, self._latest = self._latest, {}
        for which, key in latest.items():
            file = self._latest_file(*json.loads(which))
            assert file is not None
            if self._on_disk(file) != key:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(file, json.dumps({"key": key}))
                except OSError as exc:
                    log.warning("cannot write plan cache record %s: %s", file, exc)
        for key, rec in todo.items():
            path = self._file(key)
            assert path is not None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps({"version": ENTRIES_CACHE_VERSION,
                                                    "file": rec}))
            except OSError as exc:
                log.warning("cannot write plan cache record %s: %s", path, exc)


def identity_of_uuid(uuid: bytes) -> int:
    """A file's identity from its ROOT UUID: 63 bits of a hash (keys its JER draws)."""
    return int.from_bytes(hashlib.blake2b(uuid, digest_size=8).digest(), "little") >> 1


def file_identity(path: str) -> int:
    """A file's identity: 63 bits of a hash of its ROOT UUID (``TFile::fUUID``).

    It keys the file's JER draws, so the same file gives the same draws at any position in
    any fileset (a copy keeps its UUID; a rewritten file gets a new one).

    Raises:
        InputError: the file cannot be opened.
    """
    from agc_core import io

    return identity_of_uuid(io.file_uuid(path).bytes)  # the reader's handle (planning's)


def _inspect_file(path: str, branches: Sequence[str], chunksize: int, tree: str
                  ) -> tuple[int, list[tuple[int, int]], int, int]:
    """(entries, chunk ranges, :func:`file_identity`, compressed bytes of ``branches``) of one
    file, read with the reader."""
    from agc_core import io

    info = io.check_file(path, branches, tree)
    n = info.num_entries
    try:
        ranges = io.chunk_ranges(path, branches, chunksize, tree)
    except AGCError:
        raise
    except Exception as exc:  # be robust: even split
        log.debug("%s: no basket-aligned ranges (%s), splitting evenly", path, exc)
        ranges = even_ranges(n, chunksize)
    return n, ranges, file_identity(path), info.compressed_bytes


def even_ranges(n: int, chunksize: int) -> list[tuple[int, int]]:
    """Split ``n`` entries into ceil(n / chunksize) ranges of (almost) equal size."""
    if n <= 0:
        return []
    k = -(-n // chunksize)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(itertools.pairwise(bounds))


class _Retrier:
    """Per server, the one file that retries after a network error (the others wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def claim(self, server: str) -> threading.Event | None:
        """None: the caller retries for the server; else the event of the file that does."""
        with self._lock:
            ev = self._events.get(server)
            if ev is None:
                self._events[server] = threading.Event()
            return ev

    def release(self, server: str) -> None:
        """The retrying file is done (got through or gave up): the others go on."""
        with self._lock:
            ev = self._events.pop(server, None)
        if ev is not None:
            ev.set()


def _plan_file(path: str, branches: Sequence[str], chunksize: int, tree: str,
               cache: EntriesCache, processes: ProcessPoolExecutor | None = None,
               ) -> tuple[int, list[tuple[int, int]], int, int, dict[str, Any] | None]:
    """(entries, chunk ranges, identity, compressed bytes, basket layout) of one file: from
    the plan cache after a cheap :func:`probe_file`, else inspected (and remembered); a
    remote file in one of the planning ``processes`` when given."""
    remote_file = _local(path) is None
    # a remote file never planned: its first 64 kB with the probe (its planning reads them)
    from agc_core.io.source import METADATA_BYTES, fetch_metadata

    new = remote_file and cache.latest(path, tree) is None
    probe = probe_file(path, tree, METADATA_BYTES if new else 0)
    ranges_key = f"{chunksize}|{','.join(branches)}"
    branches_key = ",".join(branches)
    if remote_file:
        cache.set_latest(path, tree, probe.key)
    hit = cache.get(probe.key, ranges_key)
    if hit is not None:
        return (*hit, cache.get_layout(probe.key, branches_key) if hit[1] else None)
    if _local(path) is not None:
        n, ranges, identity, nbytes, layout = _inspect_with_layout(path, branches, chunksize,
                                                                   tree)
    elif processes is not None:
        from agc_core.io.remote import io_timeout

        held = fetch_metadata(path, probe.size, probe.head)  # fetched here, parsed there
        try:
            n, ranges, identity, nbytes, layout = processes.submit(
                _inspect_remote, path, tuple(branches), chunksize, tree, probe.size,
                io_timeout(), held).result()
        except BrokenExecutor:  # a planning process died: this thread plans the file
            n, ranges, identity, nbytes, layout = _inspect_remote(
                path, branches, chunksize, tree, probe.size, held=held)
    else:
        n, ranges, identity, nbytes, layout = _inspect_remote(
            path, branches, chunksize, tree, probe.size,
            held=fetch_metadata(path, probe.size, probe.head))
    cache.put(probe.key, ranges_key, n, ranges, identity, nbytes)
    if layout is not None:
        cache.put_layout(probe.key, branches_key, layout)
    return n, ranges, identity, nbytes, layout


def _assumed_plan(path: str, branches: Sequence[str], chunksize: int, tree: str,
                  cache: EntriesCache, speculation: Any
                  ) -> tuple[int, list[tuple[int, int]], int, int, dict[str, Any]] | None:
    """:func:`_plan_file`'s result for a remote file from its last probe's record, without a
    request, where the byte cache holds all its chunks' bytes (confirmed later: see
    :mod:`agc_core.speculation`); None: plan it the usual way."""
    key = cache.latest(path, tree)
    hit = None if key is None else cache.get(key, f"{chunksize}|{','.join(branches)}")
    if key is None or hit is None or not hit[1]:
        return None
    layout = cache.get_layout(key, ",".join(branches))
    if layout is None or not layout.get("remote") or not speculation.covers(path, layout,
                                                                             hit[1]):
        return None
    size, uuid_hex = layout["file"]
    speculation.assume(path, int(size), bytes.fromhex(uuid_hex))
    return (*hit, layout)


def _inspect_with_layout(path: str, branches: Sequence[str], chunksize: int, tree: str
                         ) -> tuple[int, list[tuple[int, int]], int, int, dict[str, Any] | None]:
    """:func:`_inspect_file` and the file's basket layout (None where it has none)."""
    from agc_core import io

    n, ranges, identity, nbytes = _inspect_file(path, branches, chunksize, tree)
    layout = None
    if ranges:
        try:  # the file is still open from its inspection: no new reads
            layout = io.file_layout(path, branches, tree)
        except Exception as exc:  # the worker reads it the usual way (and names problems)
            log.debug("%s: no basket layout (%s)", path, exc)
    return n, ranges, identity, nbytes, layout


def _inspect_remote(path: str, branches: Sequence[str], chunksize: int, tree: str, size: int,
                    timeout: float | None = None, held: Any = None,
                    ) -> tuple[int, list[tuple[int, int]], int, int, dict[str, Any] | None]:
    """:func:`_inspect_with_layout` of a remote file whose metadata (its first and last
    64 kB: ``held``, or fetched now in one round trip; uproot would take three); in a
    planning process (with the run's ``timeout``) or in a planning thread."""
    from agc_core.io.source import metadata_prefetched

    child = multiprocessing.parent_process() is not None
    if timeout is not None and child:
        from agc_core.io.remote import set_io_timeout

        set_io_timeout(timeout)
    try:
        with metadata_prefetched(path, size, held):
            return _inspect_with_layout(path, branches, chunksize, tree)
    finally:
        if child:  # a planning process keeps no file open
            from agc_core import io

            io.close_files()


def _planning_processes(n_remote: int) -> ProcessPoolExecutor | None:
    """Processes forked from the running fork server that parse remote files' metadata, when
    there are at least :data:`PLAN_PROCESSES_MIN_FILES` of them: uproot's parsing of a TTree
    (~22 ms of CPU a file) holds the GIL, so the planning threads overlap the round trips
    (they fetch the metadata) but not the parsing (the processes do, from those bytes). None
    when no fork server runs (one started here would lack the workers' preloaded modules) or
    on one core."""
    from multiprocessing import forkserver

    if n_remote < PLAN_PROCESSES_MIN_FILES or getattr(
            forkserver._forkserver, "_forkserver_pid", None) is None:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    if cores < 2:
        return None
    return ProcessPoolExecutor(min(cores, max(2, n_remote // 16)),
                               mp_context=multiprocessing.get_context("forkserver"))


def _inspect_with_retries(path: str, branches: Sequence[str], chunksize: int, tree: str,
                          max_retries: int, retry_backoff: float,
                          down: dict[str, str] | None = None,
                          cache: EntriesCache | None = None,
                          retrier: _Retrier | None = None,
                          processes: ProcessPoolExecutor | None = None,
                          ) -> tuple[Any, int]:
    """:func:`_plan_file`, retrying transient (network) errors: (result or error, attempts).

    Every file is tried at once. After a transient error only one file of the server retries
    (``retrier``); the others wait for its outcome: when it gives up, ``down`` (server ->
    error) makes them give up too, so a server that is down costs one file's retries, not
    every file's; when it got through, they retry at once.
    """
    from agc_core.io.remote import TransientInputError, is_remote, server_of
    from agc_core.retry import is_retryable, retry_delay

    server = server_of(path) if is_remote(path) else None
    attempts = 0
    leading = False
    try:
        while True:
            if down is not None and server in down:
                return TransientInputError(f"{path}: given up, {server} failed for another "
                                           f"file ({down[server]})"), attempts
            attempts += 1
            try:
                result = _plan_file(path, branches, chunksize, tree,
                                    cache or EntriesCache(None), processes), attempts
                if down is not None and server is not None:
                    down.pop(server, None)
                return result
            except Exception as exc:
                if not is_retryable(exc) or attempts > max_retries:
                    if down is not None and server is not None and is_retryable(exc):
                        down.setdefault(server, str(exc).split(": ", 1)[-1])
                    return exc, attempts
                if server is not None and retrier is not None and not leading:
                    other = retrier.claim(server)
                    if other is not None:  # another file of this server retries: its outcome
                        other.wait()
                        continue
                    leading = True
                delay = retry_delay(retry_backoff, attempts)
                log.warning("%s: %s (attempt %d of %d), retrying in %.1f s", path, exc,
                            attempts, max_retries + 1, delay)
                time.sleep(delay)
    finally:
        if leading and retrier is not None and server is not None:
            retrier.release(server)


def plan_tasks(samples: Sequence[SampleFiles], branches: Sequence[str], chunksize: int,
               tree: str = "events", cache: EntriesCache | None = None,
               max_retries: int = 0, retry_backoff: float = 1.0, speculation: Any = None,
               on_planned: Callable[[int], Any] | None = None,
               ) -> tuple[list[ChunkTask], list[ChunkFailure]]:
    """Split every file of every sample into chunk tasks.

    Args:
        samples: the samples to process, in order.
        branches: the branches the tasks read (chunks end on their basket boundaries).
        chunksize: target entries per chunk.
        tree: the TTree name.
        cache: entry counts and ranges known from earlier runs (updated).
        max_retries: retries of a file whose inspection failed on a transient network error.
        retry_backoff: seconds before the first retry, doubled for each further one.
        speculation: a :class:`agc_core.speculation.Speculation`: remote files whose plan and
            bytes the caches hold are planned without a request (and recorded in it).
        on_planned: called with the number of files just planned (or failed), as they are
            (a progress bar's ``update``).

    Returns:
        (tasks with stable indices, failures of files that could not be inspected).
    """
    if chunksize < 1:
        raise ConfigError(f"--chunksize must be at least 1, got {chunksize}")
    cache = cache or EntriesCache(None)
    files = [(s, f) for s in samples for f in s.files]
    known: dict[int, Any] = {}
    tries: dict[int, int] = {}
    down: dict[str, str] = {}  # servers that failed for good (dict ops are thread-safe)
    retrier = _Retrier()

    if speculation is not None:
        for i, (_s, f) in enumerate(files):
            if _local(f.path) is None:
                assumed = _assumed_plan(f.path, branches, chunksize, tree, cache, speculation)
                if assumed is not None:
                    known[i], tries[i] = assumed, 0
    if on_planned is not None and known:
        on_planned(len(known))
    todo = [i for i in range(len(files)) if i not in known]
    remote_files = sum(1 for i in todo if _local(files[i][1].path) is None)
    processes = _planning_processes(remote_files)

    def plan_one(i: int) -> tuple[int, Any, int]:
        return i, *_inspect_with_retries(files[i][1].path, branches, chunksize, tree,
                                         max_retries, retry_backoff, down, cache, retrier,
                                         processes)

    try:
        if todo:
            threads = ((2 if processes is not None else 1) * PLAN_THREADS_REMOTE
                       if remote_files else PLAN_THREADS)
            with ThreadPoolExecutor(min(threads, len(todo))) as pool:
                for i, res, n_tries in pool.map(plan_one, todo):
                    known[i] = res
                    tries[i] = n_tries
                    if on_planned is not None:
                        on_planned(1)
    finally:
        if processes is not None:
            processes.shutdown(wait=False, cancel_futures=True)
    tasks: list[ChunkTask] = []
    failures: list[ChunkFailure] = []
    for i, (s, f) in enumerate(files):
        res = known[i]
        if isinstance(res, Exception):
            msg = str(res) if isinstance(res, AGCError) else f"{type(res).__name__}: {res}"
            failures.append(ChunkFailure(s.process, s.variation, f.path, None, None, msg,
                                         tries.get(i, 1)))
            log.error("cannot plan %s/%s file %s: %s", s.process, s.variation, f.path, msg)
            continue
        n, ranges, identity, nbytes, layout = res
        if n == 0:
            log.warning("%s: no entries in tree '%s' (file skipped)", f.path, tree)
        elif n != f.expected_entries:
            declared = "entries" if f.entries is not None else "nevts"
            log.warning("%s: %d entries, but the fileset declares %s = %d (normalization "
                        "uses the fileset's nevts)", f.path, n, declared, f.expected_entries)
        for a, b in ranges:
            share = nbytes * b // n - nbytes * a // n if n else 0  # (adds up exactly)
            tasks.append(ChunkTask(len(tasks), s.process, s.variation, s.sample_id, identity,
                                   f.path, a, b, s.xsec_weight, share, layout))
    return tasks, failures


@dataclass(frozen=True)
class PlanSummary:
    """What a run will read: files, events, compressed bytes (of the branches read), chunks."""

    files: int
    events: int
    compressed_bytes: int
    chunks: int

    def describe(self) -> str:
        """``9 files, 18,000 events, 12.3 MB compressed, 27 chunks``."""
        return (f"{self.files:,} files, {self.events:,} events, "
                f"{format_bytes(self.compressed_bytes)} compressed, {self.chunks:,} chunks")


def summarize_plan(tasks: Sequence[ChunkTask]) -> PlanSummary:
    """The :class:`PlanSummary` of planned tasks."""
    return PlanSummary(len({t.path for t in tasks}), sum(t.entry_stop - t.entry_start
                                                         for t in tasks),
                       sum(t.compressed_bytes for t in tasks), len(tasks))


