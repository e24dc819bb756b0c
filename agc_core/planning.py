"""Plan a run: split every file of every sample into chunk tasks (entry counts cached)."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agc_core.errors import AGCError, ConfigError
from agc_core.fileset import SampleFiles, is_url

log = logging.getLogger(__name__)

ENTRIES_CACHE_NAME = "entries_cache.json"
ENTRIES_CACHE_VERSION = 2  # 2: each file's identity (JER key) from its ROOT UUID
PLAN_THREADS = 8


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


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk (or a whole file, when it could not even be opened) that failed for good."""

    process: str
    variation: str
    path: str
    entry_start: int | None
    entry_stop: int | None
    error: str
    attempts: int

    def describe(self) -> str:
        """One line naming sample, file, entry range and error."""
        where = ("whole file" if self.entry_start is None
                 else f"entries [{self.entry_start}, {self.entry_stop})")
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.process}/{self.variation} {self.path} {where}{tries}: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)



def _file_key(path: str, tree: str) -> str:
    """Cache key of a file: path, tree, size and mtime (local) or path and tree (URL)."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if is_url(path) and not path.startswith("file://"):
        return json.dumps([path, tree])
    try:
        st = os.stat(local)
    except OSError:
        return json.dumps([path, tree, None, None])
    return json.dumps([os.path.abspath(local), tree, st.st_size, st.st_mtime_ns])


class EntriesCache:
    """Entry counts and chunk ranges of files, kept in a JSON file between runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") == ENTRIES_CACHE_VERSION:
                    self.data = raw.get("files", {})
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable entries cache %s", path)

    def get(self, key: str, ranges_key: str
            ) -> tuple[int, list[tuple[int, int]], int, int] | None:
        """Cached (entries, ranges, identity, compressed bytes of the branches) or None."""
        rec = self.data.get(key)
        if (rec is None or ranges_key not in rec.get("ranges", {}) or "identity" not in rec
                or ranges_key not in rec.get("bytes", {})):
            return None
        return (int(rec["entries"]), [(int(a), int(b)) for a, b in rec["ranges"][ranges_key]],
                int(rec["identity"]), int(rec["bytes"][ranges_key]))

    def put(self, key: str, ranges_key: str, entries: int,
            ranges: list[tuple[int, int]], identity: int, nbytes: int = 0) -> None:
        """Remember a file's entries, ranges, identity and compressed bytes of the branches."""
        rec = self.data.setdefault(key, {"entries": entries, "ranges": {}})
        rec["entries"] = entries
        rec["identity"] = identity
        rec["ranges"][ranges_key] = [list(r) for r in ranges]
        rec.setdefault("bytes", {})[ranges_key] = int(nbytes)
        self.dirty = True

    def get_layout(self, key: str, branches_key: str) -> dict[str, Any] | None:
        """The cached :func:`agc_core.io.file_layout` of a file's branches, or None."""
        return self.data.get(key, {}).get("layout", {}).get(branches_key)

    def put_layout(self, key: str, branches_key: str, layout: dict[str, Any]) -> None:
        """Remember a file's layout (of one branch set)."""
        rec = self.data.get(key)
        if rec is not None:
            rec.setdefault("layout", {})[branches_key] = layout
            self.dirty = True

    def save(self) -> None:
        """Write the cache (atomically) if it changed."""
        if self.path is None or not self.dirty:
            return
        from agc_core.outputs import write_text_atomic

        try:
            write_text_atomic(self.path, json.dumps(
                {"version": ENTRIES_CACHE_VERSION, "files": self.data}))
        except OSError as exc:
            log.warning("cannot write entries cache %s: %s", self.path, exc)


def file_identity(path: str) -> int:
    """A file's identity: 63 bits of a hash of its ROOT UUID (``TFile::fUUID``).

    It keys the file's JER draws, so the same file gives the same draws at any position in
    any fileset (a copy keeps its UUID; a rewritten file gets a new one).

    Raises:
        InputError: the file cannot be opened.
    """
    from agc_core import io

    uuid = io.file_uuid(path)  # the reader's cached handle (opened for the entries)
    return int.from_bytes(hashlib.blake2b(uuid.bytes, digest_size=8).digest(), "little") >> 1


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


def _inspect_with_retries(path: str, branches: Sequence[str], chunksize: int, tree: str,
                          max_retries: int, retry_backoff: float,
                          down: dict[str, str] | None = None,
                          ) -> tuple[tuple[int, list[tuple[int, int]], int, int] | Exception,
                                     int]:
    """:func:`_inspect_file`, retrying transient (network) errors: (result or error, attempts).

    ``down`` (server -> error, shared by the planning threads) remembers the servers whose
    files failed for good on a network error: their other files fail at once, so a server that
    is down costs one file's retries, not every file's.
    """
    from agc_core.executors import is_retryable, retry_delay
    from agc_core.remote import TransientInputError, is_remote, server_of

    server = server_of(path) if is_remote(path) else None
    attempts = 0
    while True:
        if down is not None and server in down:
            return TransientInputError(f"{path}: given up, {server} failed for another file "
                                       f"({down[server]})"), attempts
        attempts += 1
        try:
            result = _inspect_file(path, branches, chunksize, tree), attempts
            if down is not None and server is not None:
                down.pop(server, None)
            return result
        except Exception as exc:
            if not is_retryable(exc) or attempts > max_retries:
                if down is not None and server is not None and is_retryable(exc):
                    down.setdefault(server, str(exc).split(": ", 1)[-1])
                return exc, attempts
            delay = retry_delay(retry_backoff, attempts)
            log.warning("%s: %s (attempt %d of %d), retrying in %.1f s", path, exc, attempts,
                        max_retries + 1, delay)
            time.sleep(delay)


def plan_tasks(samples: Sequence[SampleFiles], branches: Sequence[str], chunksize: int,
               tree: str = "events", cache: EntriesCache | None = None,
               max_retries: int = 0, retry_backoff: float = 1.0,
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

    Returns:
        (tasks with stable indices, failures of files that could not be inspected).
    """
    if chunksize < 1:
        raise ConfigError(f"--chunksize must be at least 1, got {chunksize}")
    cache = cache or EntriesCache(None)
    ranges_key = f"{chunksize}|{','.join(branches)}"
    files = [(s, f) for s in samples for f in s.files]
    keys = [_file_key(f.path, tree) for _, f in files]
    known: dict[int, tuple[int, list[tuple[int, int]], int, int] | Exception] = {}
    tries: dict[int, int] = {}
    missing = []
    for i, key in enumerate(keys):
        hit = cache.get(key, ranges_key)
        if hit is None:
            missing.append(i)
        else:
            known[i] = hit
    if missing:
        log.info("reading entry counts of %d files", len(missing))

        down: dict[str, str] = {}  # servers that failed for good (dict ops are thread-safe)

        def inspect(i: int) -> tuple[int, Any, int]:
            return i, *_inspect_with_retries(files[i][1].path, branches, chunksize, tree,
                                             max_retries, retry_backoff, down)

        with ThreadPoolExecutor(min(PLAN_THREADS, len(missing))) as pool:
            for i, res, n_tries in pool.map(inspect, missing):
                known[i] = res
                tries[i] = n_tries
                if not isinstance(res, Exception):
                    cache.put(keys[i], ranges_key, *res)
    tasks: list[ChunkTask] = []
    failures: list[ChunkFailure] = []
    branches_key = ",".join(branches)
    for i, (s, f) in enumerate(files):
        res = known[i]
        if isinstance(res, Exception):
            msg = str(res) if isinstance(res, AGCError) else f"{type(res).__name__}: {res}"
            failures.append(ChunkFailure(s.process, s.variation, f.path, None, None, msg,
                                         tries.get(i, 1)))
            log.error("cannot plan %s/%s file %s: %s", s.process, s.variation, f.path, msg)
            continue
        n, ranges, identity, nbytes = res
        if n == 0:
            log.warning("%s: no entries in tree '%s' (file skipped)", f.path, tree)
        elif n != f.expected_entries:
            declared = "entries" if f.entries is not None else "nevts"
            log.warning("%s: %d entries, but the fileset declares %s = %d (normalization "
                        "uses the fileset's nevts)", f.path, n, declared, f.expected_entries)
        layout = _layout(f.path, branches, tree, cache, keys[i], branches_key) if ranges \
            else None
        for a, b in ranges:
            share = nbytes * b // n - nbytes * a // n if n else 0  # (adds up exactly)
            tasks.append(ChunkTask(len(tasks), s.process, s.variation, s.sample_id, identity,
                                   f.path, a, b, s.xsec_weight, share, layout))
    return tasks, failures


def _layout(path: str, branches: Sequence[str], tree: str, cache: EntriesCache, key: str,
            branches_key: str) -> dict[str, Any] | None:
    """A local file's basket layout: cached, or read now (the file is usually still open from
    its inspection); None for remote files or when it cannot be had (the worker then reads
    the usual way)."""
    from agc_core import io

    if is_url(path) and not path.startswith("file://"):
        return None
    layout = cache.get_layout(key, branches_key)
    if layout is None:
        try:
            layout = io.file_layout(path, branches, tree)
        except Exception as exc:  # the worker reads it the usual way (and reports problems)
            log.debug("%s: no basket layout (%s)", path, exc)
            return None
        if layout is not None:
            cache.put_layout(key, branches_key, layout)
    return layout


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


def format_bytes(n: float) -> str:
    """Bytes in decimal units: ``3.44 TB``, ``12.3 MB``, ``512 B``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
