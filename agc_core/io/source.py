"""Opening a remote file with uproot from bytes fetched ahead: its metadata in one round trip.

uproot opens a ROOT file by reading its header, then its keys, then the TTree's metadata
(a round trip each, and ROOT writes the keys and the TTree near the end of the file, uproot
near its start). The planner fetches the file's first and last :data:`METADATA_BYTES` at once
(:func:`metadata_prefetched`) and uproot then reads them from memory
(:class:`PrefetchedSource`); anything outside them is fetched as uproot would.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from uproot.source.chunk import Chunk
from uproot.source.fsspec import FSSpecSource
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


class PrefetchedSource(FSSpecSource):
    """uproot's fsspec source, serving the byte ranges that :func:`metadata_prefetched`
    holds from memory (``num_requests`` counts only what went to the network)."""

    def __init__(self, file_path: str, **options: Any) -> None:
        with _lock:
            self._held = dict(_prefetched.get(file_path, {}))
        super().__init__(file_path, **options)

    def _held_range(self, start: int, stop: int) -> np.ndarray | None:
        for (a, b), data in self._held.items():
            if a <= start and stop <= b and stop - a <= len(data):
                return data[start - a:stop - a]
        return None

    def chunk(self, start: int, stop: int) -> Chunk:
        """The bytes [start, stop): from memory when held, else from the network."""
        data = self._held_range(start, stop)
        if data is None:
            return super().chunk(start, stop)
        return Chunk(self, start, stop, TrivialFuture(data))

    def chunks(self, ranges: list[tuple[int, int]], notifications: Any) -> list[Chunk]:
        """The byte ranges: from memory when all are held, else as uproot fetches them."""
        if not all(self._held_range(a, b) is not None for a, b in ranges):
            return super().chunks(ranges, notifications)
        out = []
        for a, b in ranges:
            chunk = self.chunk(a, b)
            notifications.put(chunk)
            out.append(chunk)
        return out
