"""Opening a remote file with uproot from bytes fetched ahead: its metadata in one round trip.

uproot opens a ROOT file by reading its header, then its keys, then the TTree's metadata
(a round trip each, and ROOT writes the keys and the TTree near the end of the file, uproot
near its start). The planner fetches the file's first and last :data:`METADATA_BYTES` at once
(:func:`metadata_prefetched`) and uproot then reads them from memory
(:class:`PrefetchedSource`); anything outside them is fetched as the workers fetch baskets.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from uproot.source.chunk import Chunk, Source
from uproot.source.futures import TrivialFuture

from agc_core.io import remote

#: bytes fetched at each end of a remote file before uproot opens it for planning
METADATA_BYTES = 64 * 1024

_lock = threading.Lock()
_prefetched: dict[str, dict[tuple[int, int], np.ndarray]] = {}


def metadata_spans(size: int, n: int = METADATA_BYTES) -> list[tuple[int, int]]:
    """The file's first and last ``n`` bytes as (start, stop) spans (one span when they meet)."""
    if size <= 2 * n:
        return [(0, size)]
    return [(0, n), (size - n, size)]


def fetch_metadata(url: str, size: int, head: np.ndarray | None = None
                   ) -> dict[tuple[int, int], np.ndarray]:
    """The first and last :data:`METADATA_BYTES` of ``url`` (of ``size`` bytes: its
    ``fEND``), fetched at once: (start, stop) -> bytes. ``head``: the file's first bytes
    already fetched (by its probe): only what they do not hold is fetched.

    Raises:
        InputError: the fetch failed (network problems named, transient ones retried).
    """
    spans = metadata_spans(size)
    known = 0 if head is None else min(len(head), spans[0][1])  # spans[0] starts at 0
    todo = [(max(a, known), b) for a, b in spans if b > known]
    got = dict(zip(todo, remote.fetch_spans(url, todo), strict=True)) if todo else {}
    held = {}
    for a, b in spans:
        if a == 0 and known:
            rest = got.get((known, b))
            held[(a, b)] = head[:known] if rest is None else np.concatenate([head[:known], rest])
        else:
            held[(a, b)] = got[(a, b)]
    return held


@contextlib.contextmanager
def metadata_prefetched(url: str, size: int,
                        held: dict[tuple[int, int], np.ndarray] | None = None
                        ) -> Iterator[None]:
    """Within the block, uproot opens ``url`` (of ``size`` bytes: its ``fEND``) from its first
    and last bytes: ``held`` (:func:`fetch_metadata`'s), or fetched now in one round trip.

    Raises:
        InputError: the fetch failed (network problems named, transient ones retried).
    """
    if held is None:
        held = fetch_metadata(url, size)
    with _lock:
        _prefetched[url] = dict(held)
    try:
        yield
    finally:
        with _lock:
            _prefetched.pop(url, None)


def is_prefetched(url: str) -> bool:
    """Whether :func:`metadata_prefetched` holds bytes of ``url`` now."""
    with _lock:
        return url in _prefetched


class PrefetchedSource(Source):
    """An uproot source of a remote file that :func:`metadata_prefetched` holds bytes of:
    those ranges from memory, any other through :func:`agc_core.io.remote.fetch_spans` (its
    retries, timeouts and named errors; ``num_requests`` counts these only).

    Unlike uproot's fsspec source it starts no event-loop thread and creates no fsspec file
    system (for http(s): aiohttp, ~0.15 CPU-s to import) for the few milliseconds uproot
    parses a TTree.
    """

    def __init__(self, file_path: str, **options: Any) -> None:
        super().__init__()
        with _lock:
            self._held = dict(_prefetched.get(file_path, {}))
        self._file_path = file_path
        ends = [b for _a, b in self._held]
        self._num_bytes = max(ends) if ends else None  # held spans end at the file's end
        self._closed = False

    def __enter__(self) -> PrefetchedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _held_range(self, start: int, stop: int) -> np.ndarray | None:
        for (a, b), data in self._held.items():
            if a <= start and stop <= b and stop - a <= len(data):
                return data[start - a:stop - a]
        return None

    def _fetch(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        self._num_requests += 1
        self._num_requested_chunks += len(ranges)
        self._num_requested_bytes += sum(b - a for a, b in ranges)
        return remote.fetch_spans(self._file_path, ranges)

    def _data(self, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        """The bytes of each range: those held from memory, the others in one fetch."""
        if self._closed:
            raise OSError(f"file {self._file_path!r} is closed")
        datas = [self._held_range(a, b) for a, b in ranges]
        missing = [r for r, d in zip(ranges, datas, strict=True) if d is None]
        fetched = iter(self._fetch(missing) if missing else [])
        return [next(fetched) if d is None else d for d in datas]

    def chunk(self, start: int, stop: int) -> Chunk:
        """The bytes [start, stop): from memory when held, else from the network."""
        return Chunk(self, start, stop, TrivialFuture(self._data([(start, stop)])[0]))

    def chunks(self, ranges: list[tuple[int, int]], notifications: Any) -> list[Chunk]:
        """The byte ranges: those held from memory, the others in one fetch."""
        out = []
        for (a, b), data in zip(ranges, self._data(ranges), strict=True):
            chunk = Chunk(self, a, b, TrivialFuture(data))
            notifications.put(chunk)
            out.append(chunk)
        return out
