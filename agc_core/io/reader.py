"""The columnar reader: branches of one ROOT file's entry range into flat numpy arrays plus
offsets (:func:`read_chunk`), and what planning asks of a file (entries, a check, chunk ranges).
"""

from __future__ import annotations

import logging
import os
import queue
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig
from agc_core.errors import ConfigError, InputError
from agc_core.io import remote
from agc_core.io.baskets import _NeedsUproot, _read_jagged, _read_scalar
from agc_core.io.branches import _add_offsets, _branches, _check_range, _pieces, _Plan, _plan
from agc_core.io.cache import byte_cache, file_key
from agc_core.io.chunk import Chunk, FileInfo
from agc_core.io.fallback import _read_rntuple, _read_with_uproot
from agc_core.io.files import (
    _drop_pages,
    _fail,
    _first_line,
    _forget,
    _Handle,
    _is_rntuple,
    _opened,
    _source_class,
    _tree,
)
from agc_core.io.layout import _read_laid_out

log = logging.getLogger(__name__)


def read_chunk(path: str | os.PathLike[str], branches: Iterable[str], entry_start: int = 0,
               entry_stop: int | None = None, tree: str = "events",
               layout: dict[str, Any] | None = None) -> Chunk:
    """Read branches of one entry range of a file into flat arrays plus per-collection offsets.

    Works for any local path or URL uproot opens, for ``std::vector<T>`` branches written by
    ROOT (AGC ntuples) and for ``T[]`` leaves with a counter written by uproot alike. Baskets
    are fetched in one request, decompressed straight into numpy buffers and copied once into
    the output (converting big-endian to native); no awkward arrays or Python objects per event.

    Args:
        path: local file path or URL (``https://``, ``root://``).
        branches: branch names, e.g. ``cfg.analysis_branches``.
        entry_start: first entry to read.
        entry_stop: one past the last entry; None reads to the end.
        tree: the TTree name.
        layout: the file's :func:`file_layout` (from planning): read without parsing the
            TTree when it still describes the file, else (changed file, a basket that does
            not decode) the usual way, with its messages.

    Returns:
        The :class:`Chunk`.

    Raises:
        InputError: missing or unreadable file, truncated or corrupt file, missing tree or branch,
            entry range out of bounds, inconsistent multiplicities within a collection. Each
            message names the file (and tree, branch, entry range where they matter).
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    if layout is not None:
        try:
            return _read_laid_out(path, layout, names, entry_start, entry_stop, tree)
        except (MemoryError, InputError):  # a network problem is named as it is (retried)
            raise
        except Exception:  # stale, or a bad basket: the usual path reads it, or names it
            pass
    with _opened(path) as handle:
        return _read(handle, path, names, entry_start, entry_stop, tree)


def _read(handle: _Handle, path: str, names: list[str], entry_start: Any, entry_stop: Any,
          tree: str) -> Chunk:
    """:func:`read_chunk` on a held handle."""
    t = _tree(handle, tree)
    start, stop = _check_range(path, tree, t.num_entries, entry_start, entry_stop)
    objs = _branches(t, names, path, tree)
    if _is_rntuple(t):
        return _read_rntuple(t, path, names, start, stop, tree)
    plans = [_plan(b, path, tree) for b in objs]
    n = stop - start
    where = f"{path}: tree '{tree}', entries [{start}, {stop})"
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    current = ""
    try:
        if n == 0:
            items, raw, nbytes = [[] for _ in objs], {}, 0
        else:
            items, raw, nbytes = _fetch(handle, objs, start, stop)
        for name, b, plan, its in zip(names, objs, plans, items, strict=True):
            current = f", branch '{name}'"
            columns[name], off = _read_branch(b, plan, its, raw, start, stop, where)
            _drop_pages(b.file.source, its)
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, start)
    except (InputError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, f"tree '{tree}', entries [{start}, {stop}){current}: cannot read",
                    f"{where}{current}: cannot read, truncated or corrupt file?") from exc
    return Chunk(n, start, stop, columns, offsets, nbytes)


def _fetch(handle: _Handle, branches: list[Any], start: int, stop: int
           ) -> tuple[list[list[tuple[int, Any]]], dict[tuple[int, int], np.ndarray], int]:
    """Request every basket overlapping [start, stop) of ``branches`` in one source call.

    Returns:
        per branch the (basket number, byte range or embedded basket) list, the raw bytes per
        byte range, and the total compressed bytes.
    """
    items = [b.entries_to_ranges_or_baskets(start, stop) for b in branches]
    ranges = []
    nbytes = 0
    for b, its in zip(branches, items, strict=True):
        for num, r in its:
            if isinstance(r, tuple):
                ranges.append((int(r[0]), int(r[1])))
                nbytes += int(r[1]) - int(r[0])
            else:
                nbytes += int(b.basket_compressed_bytes(num))
    raw: dict[tuple[int, int], np.ndarray] = {}
    source = branches[0].file.source if ranges else None
    fsspec_source = _source_class("uproot.source.fsspec", "FSSpecSource")
    if fsspec_source is not None and isinstance(source, fsspec_source):  # remote: keep cause
        f = branches[0].file
        raw = remote.read_ranges(handle.path, ranges, byte_cache(),
                                 file_key(handle.path, int(f.fEND), f.uuid.bytes))
    elif source is not None:
        for c in source.chunks(ranges, notifications=queue.Queue()):
            data = c.raw_data
            raw[(c.start, c.stop)] = (data if isinstance(data, np.ndarray)
                                      else np.frombuffer(data, np.uint8))
    return items, raw, nbytes


def _read_branch(b: Any, plan: _Plan, its: list[tuple[int, Any]],
                 raw: dict[tuple[int, int], np.ndarray], start: int, stop: int, where: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """One branch's (content, offsets or None): native decoders, else uproot's own reading.

    A decoding problem of the native decoders (a layout they misparse) is retried with uproot
    before the data is called corrupt; only when uproot fails too is the native error raised.
    """
    if plan.kind == "uproot":
        return _read_with_uproot(b, start, stop)
    n = stop - start
    try:
        pieces = _pieces(b, its, raw, start, stop)
        if plan.kind == "scalar":
            return _read_scalar(pieces, plan, n), None
        return _read_jagged(pieces, plan, n, start)
    except _NeedsUproot:
        return _read_with_uproot(b, start, stop)
    except (ValueError, IndexError, TypeError, struct.error) as native:
        try:
            out = _read_with_uproot(b, start, stop)
        except Exception:
            raise native from None
        log.warning("%s, branch '%s': the native decoder failed (%s: %s); read with uproot",
                    where, b.name, type(native).__name__, _first_line(native))
        return out


def num_entries(path: str | os.PathLike[str], tree: str = "events") -> int:
    """Number of entries of a file's tree.

    Args:
        path: local file path or URL.
        tree: the TTree name.

    Returns:
        The number of entries.

    Raises:
        InputError: missing, unreadable, truncated file or missing tree.
    """
    path = os.fspath(path)
    with _opened(path) as handle:
        return int(_tree(handle, tree).num_entries)


def check_file(path: str | os.PathLike[str], branches: Iterable[str] = (),
               tree: str = "events") -> FileInfo:
    """Check once that a file can be read: it opens, has the tree, the branches, readable types.

    Args:
        path: local file path or URL.
        branches: the branches that will be read.
        tree: the TTree name.

    Returns:
        The :class:`FileInfo` (entries, branch names, compressed size of ``branches``).

    Raises:
        InputError: missing, unreadable or truncated file, missing tree, missing branch or a
            branch that is not numeric.
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    with _opened(path) as handle:
        t = _tree(handle, tree)
        objs = _branches(t, names, path, tree)
        if _is_rntuple(t):  # uproot reads every field type it knows; sizes not summed
            return FileInfo(path, tree, int(t.num_entries), tuple(t.keys()), 0)
        for b in objs:
            _plan(b, path, tree)
        return FileInfo(path, tree, int(t.num_entries), tuple(t.keys()),
                        int(sum(int(b.compressed_bytes) for b in objs)))


def chunk_ranges(path: str | os.PathLike[str], branches: Iterable[str], step: int,
                 tree: str = "events") -> list[tuple[int, int]]:
    """Split a file's entries into chunks of about ``step`` that end on basket boundaries.

    A chunk ends at the first entry >= ``start + step`` where every one of ``branches`` starts a
    new basket, so no basket is decompressed twice; when the next such boundary lies beyond
    ``start + 2 * step`` the chunk is cut at ``start + step`` instead (bounded memory).

    Args:
        path: local file path or URL.
        branches: the branches that will be read.
        step: target number of entries per chunk (>= 1).
        tree: the TTree name.

    Returns:
        (entry_start, entry_stop) pairs covering all entries in order; empty for an empty tree.

    Raises:
        InputError: as :func:`check_file`.
        ConfigError: ``step`` < 1.
    """
    if step < 1:
        raise ConfigError(f"chunk size must be a positive number of entries, got {step}")
    path = os.fspath(path)
    with _opened(path) as handle:
        t = _tree(handle, tree)
        n = int(t.num_entries)
        common: set[int] | None = None
        objs = _branches(t, list(dict.fromkeys(branches)), path, tree)
        if _is_rntuple(t):  # clusters instead of baskets
            common = {int(c.num_first_entry) for c in t.cluster_summaries}
            objs = []
        for b in objs:
            edges = {int(x) for x in b.entry_offsets}
            common = edges if common is None else common & edges
    bounds = sorted(x for x in (common or set()) if 0 < x < n)
    out = []
    start = 0
    i = 0
    while start < n:
        while i < len(bounds) and bounds[i] < start + step:
            i += 1
        stop = bounds[i] if i < len(bounds) else n
        if stop > start + 2 * step:
            stop = start + step
        out.append((start, stop))
        start = stop
    return out


def branch_set(cfg: AnalysisConfig, name_or_percent: str | int) -> tuple[str, ...]:
    """The branches to read: the analysis set or an AGC I/O benchmark set.

    Args:
        cfg: the analysis configuration.
        name_or_percent: ``"analysis"``, or a percentage of ``cfg.io_branch_sets``
            (``4``, ``"15"``, ``"25%"``, ...).

    Returns:
        The branch names.

    Raises:
        ConfigError: unknown set.
    """
    if isinstance(name_or_percent, str) and name_or_percent.strip().lower() == "analysis":
        return tuple(cfg.analysis_branches)
    text = str(name_or_percent).strip().rstrip("%")
    if text.isdigit() and int(text) in cfg.io_branch_sets:
        return tuple(cfg.io_branch_sets[int(text)])
    choices = ", ".join(["analysis", *(str(k) for k in sorted(cfg.io_branch_sets))])
    raise ConfigError(f"unknown branch set {name_or_percent!r} (choose from {choices}; "
                      f"see io_branch_sets in {cfg.path})")
