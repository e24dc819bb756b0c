"""File layouts: where a file's baskets are (:func:`file_layout`, recorded once by the planner),
and reading a chunk from it without parsing the file's TTree again (a local file's memory map,
a remote file's byte ranges through the byte cache)."""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from agc_core.io import remote
from agc_core.io.baskets import _KEY, _NeedsUproot, _read_jagged, _read_scalar, decode_basket
from agc_core.io.branches import _add_offsets, _branches, _check_range, _Plan, _plan
from agc_core.io.cache import byte_cache, file_key
from agc_core.io.chunk import Chunk
from agc_core.io.files import _drop_map_pages, _is_rntuple, _local_path, _opened, _tree

#: version of :func:`file_layout`'s records
LAYOUT_VERSION = 1


def _file_key(local: str) -> list[int]:
    st = os.stat(local)
    return [int(st.st_size), int(st.st_mtime_ns)]


def file_layout(path: str | os.PathLike[str], branches: Iterable[str], tree: str = "events"
                ) -> dict[str, Any] | None:
    """Where the baskets of ``branches`` are in a file: what :func:`read_chunk` needs to
    read it without uproot parsing the file's TTree (~25 ms for the AGC's ~50 branches of a
    local file, several round trips for a remote one; the planner records it once, the
    workers then skip it for every chunk).

    Returns:
        A JSON-ready record (the file's identity: size and modification time of a local file,
        fEND and ROOT UUID of a remote one; the tree's entries, per branch its decoding plan,
        basket entry boundaries and byte ranges), or None where it does not apply: RNTuple,
        embedded baskets, types the native decoders do not read.

    Raises:
        InputError: the file, tree or a branch cannot be read (as :func:`read_chunk`).
    """
    path = os.fspath(path)
    local = _local_path(path)
    names = list(dict.fromkeys(branches))
    with _opened(path) as handle:
        if local is not None:
            ident: list[Any] = _file_key(local)
        else:
            f = handle.directory.file
            ident = [int(f.fEND), f.uuid.hex]
        t = _tree(handle, tree)
        if _is_rntuple(t):
            return None
        out: dict[str, Any] = {}
        for name, b in zip(names, _branches(t, names, path, tree), strict=True):
            plan = _plan(b, path, tree)
            if plan.kind not in ("scalar", "jagged"):
                return None
            its = b.entries_to_ranges_or_baskets(0, t.num_entries)
            if any(not isinstance(r, tuple) for _, r in its):
                return None
            edges = [int(b.basket_entry_start_stop(num)[0]) for num, _ in its]
            edges.append(int(b.basket_entry_start_stop(its[-1][0])[1]) if its else 0)
            out[name] = {"name": b.name, "kind": plan.kind, "from": plan.from_dtype.str,
                         "to": plan.to_dtype.str, "header": int(plan.header), "entries": edges,
                         "ranges": [[int(r[0]), int(r[1])] for _, r in its]}
        return {"version": LAYOUT_VERSION, "file": ident, "remote": local is None,
                "tree": tree, "num_entries": int(t.num_entries), "branches": out}


class _StaleLayout(Exception):
    """A layout that does not describe the file (changed since) or the request."""


def _basket_key_name(raw: np.ndarray) -> bytes:
    """The ``fName`` of a basket's TKey (the branch's name, as ROOT and uproot write it)."""
    version = _KEY.unpack(raw[:_KEY.size].tobytes())[1]
    pos = _KEY.size + (16 if version > 1000 else 8)  # fSeekKey, fSeekPdir
    for _ in range(2):  # fClassName, then fName
        n = int(raw[pos])
        pos += 1
        if n == 255:
            n = int.from_bytes(raw[pos:pos + 4].tobytes(), "big")
            pos += 4
        value, pos = raw[pos:pos + n].tobytes(), pos + n
    return value


def _layout_baskets(layout: dict[str, Any], names: list[str], a: int, b: int
                    ) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per branch the baskets of entries [a, b) in a :func:`file_layout` record:
    (first entry, stop entry, byte start, byte stop) each."""
    recs = layout["branches"]
    out = {}
    for name in names:
        rec = recs[name]
        edges = rec["entries"]
        first = max(0, bisect.bisect_right(edges, a) - 1)
        found = []
        for k in range(first, len(edges) - 1 if b > a else first):
            e0, e1 = int(edges[k]), int(edges[k + 1])
            if e0 >= b:
                break
            if e1 <= a:
                continue
            lo, hi = rec["ranges"][k]
            found.append((e0, e1, int(lo), int(hi)))
        out[name] = found
    return out


def layout_byte_ranges(layout: dict[str, Any], branches: Iterable[str], entry_start: int,
                       entry_stop: int) -> list[tuple[int, int]]:
    """The byte ranges of the baskets that :func:`read_chunk` reads for entries
    [entry_start, entry_stop) of a file with this :func:`file_layout` (what a read-ahead
    fetches)."""
    baskets = _layout_baskets(layout, list(dict.fromkeys(branches)), entry_start, entry_stop)
    return sorted({(lo, hi) for found in baskets.values() for _, _, lo, hi in found})


def layout_cache_key(path: str, layout: dict[str, Any]) -> str | None:
    """The byte-cache key of a remote file described by ``layout`` (None for a local one)."""
    if not layout.get("remote"):
        return None
    size, uuid_hex = layout["file"]
    return file_key(path, int(size), bytes.fromhex(uuid_hex))


def _read_laid_out(path: str, layout: dict[str, Any], names: list[str], start: Any,
                   stop: Any, tree: str) -> Chunk:
    """:func:`read_chunk` from a :func:`file_layout` record: the baskets straight from a
    memory map of a local file, or fetched at once (through the byte cache) for a remote one,
    decoded as :func:`_read` decodes them.

    Raises:
        _StaleLayout: the layout does not fit (the caller reads the file the usual way).
        ValueError: a basket does not decode (idem: the usual path reports it, or uproot
            reads it).
        InputError: a remote file could not be read (network; named, transient ones retried).
    """
    local = _local_path(path)
    recs = layout.get("branches", {})
    is_remote = bool(layout.get("remote"))
    if (layout.get("version") != LAYOUT_VERSION or layout.get("tree") != tree
            or any(n not in recs for n in names) or is_remote != (local is None)
            or (local is not None and _file_key(local) != layout.get("file"))):
        raise _StaleLayout
    n_entries = int(layout["num_entries"])
    a, b = _check_range(path, tree, n_entries, start, stop)
    n = b - a
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    nbytes = 0
    where = f"{path}: tree '{tree}', entries [{a}, {b})"
    baskets = _layout_baskets(layout, names, a, b)
    mm = None
    if is_remote:
        wanted = sorted({(lo, hi) for found in baskets.values() for _, _, lo, hi in found})
        raw = remote.read_ranges(path, wanted, byte_cache(), layout_cache_key(path, layout))
        size = int(layout["file"][0])

        def take(lo: int, hi: int) -> np.ndarray:
            return raw[(lo, hi)]
    else:
        assert local is not None
        with open(local, "rb") as fh:
            # closed when the last view of it goes (the columns are copies: none escapes)
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = np.frombuffer(mm, np.uint8)
        size = len(mm)

        def take(lo: int, hi: int) -> np.ndarray:
            return view[lo:hi]
    try:
        for name in names:
            rec = recs[name]
            plan = _Plan(rec["kind"], np.dtype(rec["from"]), np.dtype(rec["to"]),
                         int(rec["header"]))
            key_name = str(rec["name"]).encode()
            pieces = []
            used = []
            for e0, e1, lo, hi in baskets[name]:
                data = take(lo, hi)
                if hi > size or len(data) != hi - lo or _basket_key_name(data) != key_name:
                    raise _StaleLayout  # not this branch's basket: not this file's layout
                basket = decode_basket(data)
                if basket.num_entries != e1 - e0:
                    raise ValueError(f"basket holds {basket.num_entries} entries, the "
                                     f"layout says {e1 - e0}")
                pieces.append((basket, max(a, e0) - e0, min(b, e1) - e0))
                used.append((lo, hi))
                nbytes += hi - lo
            if plan.kind == "scalar":
                columns[name], off = _read_scalar(pieces, plan, n), None
            else:
                columns[name], off = _read_jagged(pieces, plan, n, a)
            if mm is not None:
                _drop_map_pages(mm, used)
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, a)
    except _NeedsUproot:
        raise _StaleLayout from None
    return Chunk(n, a, b, columns, offsets, nbytes)
