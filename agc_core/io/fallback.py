"""uproot's own reading: branches the native decoders do not handle (strings, nested vectors,
...) and RNTuples, flattened into the reader's arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from agc_core.errors import InputError
from agc_core.io.branches import _add_offsets
from agc_core.io.chunk import Chunk
from agc_core.io.files import _fail, _forget


def _read_rntuple(t: Any, path: str, names: list[str], start: int, stop: int, tree: str
                  ) -> Chunk:
    """:func:`read_chunk` of an RNTuple: uproot reads the fields, we flatten them.

    ``bytes_read`` is 0: uproot does not say which pages it fetched.
    """
    where = f"{path}: RNTuple '{tree}', entries [{start}, {stop})"
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    try:
        arrays = t.arrays(names, entry_start=start, entry_stop=stop) if names else {}
        for name in names:
            columns[name], off = _from_awkward(arrays[name])
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, start, "fields")
    except (InputError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, f"RNTuple '{tree}', entries [{start}, {stop}): cannot read",
                    f"{where}: cannot read, truncated or corrupt file?") from exc
    return Chunk(stop - start, start, stop, columns, offsets, 0)


def _numeric(arr: Any) -> np.ndarray | None:
    """A flat awkward array of numbers as an owned contiguous numpy array, else None."""
    import awkward as ak

    try:
        out = ak.to_numpy(arr)
    except (ValueError, TypeError):
        return None
    if out.dtype.kind not in "biuf" or out.ndim != 1:
        return None
    return np.array(out, copy=True, order="C")  # never a view of a file's memory map


def _read_with_uproot(branch: Any, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a branch with uproot's own interpretation: (flat content, offsets or None).

    Numbers and lists of numbers come back as for the native decoders; anything else uproot
    reads (strings, nested vectors, ...) as one Python object per event (``dtype=object``,
    no offsets).
    """
    return _from_awkward(branch.array(entry_start=start, entry_stop=stop, library="ak",
                                      array_cache=None))


def _from_awkward(arr: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """An awkward array of one branch or field as (flat content, offsets or None)."""
    import awkward as ak

    if arr.ndim == 1:
        flat = _numeric(arr)
        if flat is not None:
            return flat, None
    elif arr.ndim == 2:
        content = _numeric(ak.flatten(arr, axis=1))
        if content is not None:
            offsets = np.zeros(len(arr) + 1, np.int64)
            np.cumsum(ak.to_numpy(ak.num(arr, axis=1)), out=offsets[1:])
            return content, offsets
    out = np.empty(len(arr), dtype=object)
    for i, value in enumerate(arr.to_list()):
        out[i] = value
    return out, None
