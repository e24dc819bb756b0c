"""The reader's benchmark: :func:`agc_core.io.read_chunk` against plain uproot on the same
branches (``python -m agc_core bench reader``)."""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from agc_core.io.baskets import zlib_backend
from agc_core.io.files import close_files
from agc_core.io.reader import chunk_ranges, num_entries, read_chunk
from agc_core.lazyimport import LazyModule

uproot: Any = LazyModule("uproot")  # a worker reading planned files never imports it
log = logging.getLogger(__name__)


def _read_uproot_ak(path: str, branches: list[str], ranges: list[tuple[int, int]],
                    tree: str) -> None:
    """Plain uproot: open the file and read the branches into awkward arrays."""
    with uproot.open(path) as f:
        t = f[tree]
        for a, b in ranges:
            t.arrays(branches, entry_start=a, entry_stop=b, library="ak")


def _read_agc(path: str, branches: list[str], ranges: list[tuple[int, int]], tree: str) -> int:
    """Our reader, from a closed file as uproot starts; returns the compressed bytes read."""
    close_files()
    return sum(read_chunk(path, branches, a, b, tree).bytes_read for a, b in ranges)


def benchmark_read(path: str, branches: Sequence[str], repeats: int = 5, tree: str = "events",
                   step: int | None = None) -> dict[str, Any]:
    """Time :func:`read_chunk` against plain uproot (``library="ak"``) on the same branches.

    Both read the whole file (in chunks of ``step`` entries if given, aligned to baskets by
    :func:`chunk_ranges`), opening it anew on every repeat, in this process (one core; uproot's
    default source may use a helper thread for I/O, counted in its CPU time). Runs alternate
    between the two readers after one warm-up each (warm page cache).

    Args:
        path: the ROOT file.
        branches: branches to read, e.g. ``branch_set(cfg, "analysis")``.
        repeats: timed runs per reader (the best and the median are reported).
        tree: the TTree name.
        step: entries per chunk; None reads the file in one chunk.

    Returns:
        ``{"path", "tree", "branches", "n_events", "compressed_bytes", "uncompressed_bytes",
        "zlib_backend", "repeats", "agc_core": stats, "uproot_ak": stats, "speedup"}`` where
        stats = ``{"best_s", "median_s", "cpu_s", "events_per_s", "mb_per_s",
        "events_per_cpu_s", "mb_per_cpu_s"}`` (rates from the best wall time, and from the best
        process CPU time, which a busy machine disturbs less; MB = compressed MB read) and
        speedup = agc_core / uproot_ak events per second (wall).

    Raises:
        InputError: as :func:`read_chunk`.
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    n = num_entries(path, tree)
    ranges = chunk_ranges(path, names, step, tree) if step else [(0, n)]
    whole = read_chunk(path, names, 0, n, tree)
    uncompressed = sum(a.nbytes for a in whole.columns.values())
    uncompressed += sum(a.nbytes for a in whole.offsets.values())
    del whole
    runners: dict[str, Callable[[], Any]] = {
        "agc_core": lambda: _read_agc(path, names, ranges, tree),
        "uproot_ak": lambda: _read_uproot_ak(path, names, ranges, tree),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpus: dict[str, list[float]] = {k: [] for k in runners}
    nbytes = 0
    for k, run in runners.items():  # warm-up (page cache, numba compilation)
        res = run()
        if k == "agc_core":
            nbytes = int(res)
    for _ in range(max(1, repeats)):
        for k, run in runners.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)

    def stats(k: str) -> dict[str, float]:
        best, cpu = min(times[k]), min(cpus[k])
        return {"best_s": best, "median_s": statistics.median(times[k]), "cpu_s": cpu,
                "events_per_s": n / best, "mb_per_s": nbytes / best / 1e6,
                "events_per_cpu_s": n / cpu, "mb_per_cpu_s": nbytes / cpu / 1e6}

    result = {"path": path, "tree": tree, "branches": names, "n_events": n,
              "compressed_bytes": nbytes, "uncompressed_bytes": int(uncompressed),
              "zlib_backend": zlib_backend(), "repeats": repeats,
              "agc_core": stats("agc_core"), "uproot_ak": stats("uproot_ak")}
    result["speedup"] = result["agc_core"]["events_per_s"] / result["uproot_ak"]["events_per_s"]
    log.info("read %s: agc_core %.0f ev/s (%.1f MB/s), uproot ak %.0f ev/s (%.1f MB/s)", path,
             result["agc_core"]["events_per_s"], result["agc_core"]["mb_per_s"],
             result["uproot_ak"]["events_per_s"], result["uproot_ak"]["mb_per_s"])
    return result
