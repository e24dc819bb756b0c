"""Warm remote runs start at once: a remote file whose plan and bytes a run already holds is
planned from them without a round trip, and confirmed unchanged while its chunks are processed.

Planning a remote file starts with one request for its header (size and ROOT UUID, its identity
for the caches): a round trip, 0.1-0.2 s at 100 ms RTT before the first chunk can start, and
the only network traffic of a second run over the same files. When the plan cache knows the
file's last identity under this URL (:meth:`agc_core.planning.EntriesCache.latest`) and the
byte cache holds every byte its chunks read, the planner assumes that identity
(:meth:`Speculation.assume`); the workers then read only cached bytes, never the network. The
probes go out while the chunks are processed (:meth:`Speculation.start`), and before the
outputs are written the runner asks :meth:`Speculation.changed`: a file that changed under its
URL, or whose probe failed, makes the run plan and process again without assumptions (the
usual probes, retries and error messages), so no result of a changed file is ever kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agc_core.io.cache import ByteCache

log = logging.getLogger(__name__)

#: probes in flight at once
PROBE_THREADS = 32


class Speculation:
    """Remote files planned from the caches, and their confirmation (see the module).

    Args:
        cache: the byte cache the workers read through.
        branches: the branches the chunks read.
    """

    def __init__(self, cache: ByteCache, branches: Sequence[str]) -> None:
        self.cache = cache
        self.branches = list(branches)
        #: path -> (size, UUID) assumed
        self.assumed: dict[str, tuple[int, bytes]] = {}
        self._changed: list[str] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def covers(self, path: str, layout: dict[str, Any],
               ranges: Sequence[tuple[int, int]]) -> bool:
        """Whether the byte cache holds every byte the chunks ``ranges`` of the file read."""
        from agc_core.io.layout import layout_byte_ranges, layout_cache_key
        from agc_core.io.remote import coalesce

        try:
            key = layout_cache_key(path, layout)
            if key is None:
                return False
            return all(self.cache.has(key, a, b) for start, stop in ranges
                       for a, b in coalesce(layout_byte_ranges(layout, self.branches, start,
                                                               stop)))
        except Exception as exc:  # a record that does not fit: planned the usual way
            log.debug("%s: not planned from the caches (%s)", path, exc)
            return False

    def assume(self, path: str, size: int, uuid: bytes) -> None:
        """``path`` is planned as the file of ``size`` bytes and ``uuid`` (to be confirmed)."""
        with self._lock:
            self.assumed[path] = (size, uuid)

    def start(self) -> None:
        """Probe the assumed files in the background."""
        if self.assumed and self._thread is None:
            self._thread = threading.Thread(target=self._confirm, name="agc-confirm",
                                            daemon=True)
            self._thread.start()

    def changed(self) -> list[str]:
        """Wait for the probes: the files that changed, or could not be confirmed, each as
        ``"<path>: <why>"`` (empty: every assumption held)."""
        self.start()
        if self._thread is not None:
            self._thread.join()
        return list(self._changed)

    def _confirm(self) -> None:
        def check(item: tuple[str, tuple[int, bytes]]) -> str | None:
            path, (size, uuid) = item
            from agc_core.io import remote

            try:
                now_size, now_uuid = remote.probe(path)
            except Exception as exc:
                return f"{path}: cannot be confirmed unchanged ({exc})"
            if (now_size, now_uuid) != (size, uuid):
                return (f"{path}: changed since it was planned (size {size} -> {now_size}, "
                        f"UUID {uuid.hex()} -> {now_uuid.hex()})")
            return None

        items = list(self.assumed.items())
        with ThreadPoolExecutor(min(PROBE_THREADS, len(items))) as pool:
            self._changed = [m for m in pool.map(check, items) if m is not None]
