"""Branches: the collection of a branch, how a branch is decoded (:class:`_Plan`), branches by
name, entry ranges, a collection's offsets, and a branch's baskets decoded for an entry range.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from agc_core.errors import InputError
from agc_core.io.baskets import _Basket, decode_basket
from agc_core.io.files import _is_rntuple
from agc_core.lazyimport import LazyModule

uproot: Any = LazyModule("uproot")  # a worker reading planned files never imports it


def collection_of(branch: str) -> str:
    """The collection a jagged branch belongs to: the name before the first ``_``.

    Args:
        branch: e.g. ``jet_pt``.

    Returns:
        e.g. ``jet`` (the whole name when it has no ``_``).
    """
    return branch.split("_", 1)[0]


class _Plan(NamedTuple):
    """How to decode a branch: ``kind`` is scalar, jagged (native decoders) or uproot."""

    kind: str
    from_dtype: np.dtype
    to_dtype: np.dtype
    header: int


def _is_plain(interp: Any) -> bool:
    return type(interp) is uproot.AsDtype and interp.from_dtype.shape == ()


def _plan(branch: Any, path: str, tree: str) -> _Plan:
    """Classify a branch's interpretation.

    Raises:
        InputError: the branch holds neither numbers nor variable-length lists of numbers.
    """
    interp = branch.interpretation
    if _is_plain(interp):
        return _Plan("scalar", interp.from_dtype, interp.to_dtype, 0)
    if isinstance(interp, uproot.AsJagged) and _is_plain(interp.content):
        c = interp.content
        return _Plan("jagged", c.from_dtype, c.to_dtype, interp.header_bytes)
    if isinstance(interp, uproot.interpretation.Interpretation) and not isinstance(
            interp, uproot.interpretation.identify.UnknownInterpretation):
        # strings, nested vectors, RVec, truncated floats...: uproot's own interpretation
        return _Plan("uproot", np.dtype(np.float64), np.dtype(np.float64), 0)
    raise InputError(f"{path}: tree '{tree}', branch '{branch.name}' of type "
                     f"{branch.typename} cannot be interpreted by uproot ({interp})")


def _branches(t: Any, names: Sequence[str], path: str, tree: str) -> list[Any]:
    """Look up branches by name.

    Raises:
        InputError: naming the first missing branch and close matches.
    """
    out = []
    keys = list(t.keys()) if _is_rntuple(t) else None
    for name in names:
        try:
            if keys is not None and name not in keys:  # RNTuple: fields by name
                raise KeyError(name)
            out.append(t[name])
        except KeyError:
            keys = keys if keys is not None else t.keys()
            close = difflib.get_close_matches(name, keys, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"{path}: tree '{tree}' has no branch '{name}'{hint}") from None
    return out


def _check_range(path: str, tree: str, n: int, start: Any, stop: Any) -> tuple[int, int]:
    """Validate an entry range against the tree's number of entries.

    Raises:
        InputError: non-integer bounds or a range outside [0, n].
    """
    try:
        a = 0 if start is None else int(start.__index__())
        b = n if stop is None else int(stop.__index__())
    except (AttributeError, TypeError):
        raise InputError(f"{path}: entry range [{start!r}, {stop!r}) must be integers") from None
    if not 0 <= a <= b <= n:
        raise InputError(f"{path}: entry range [{a}, {b}) is out of bounds: tree '{tree}' has "
                         f"{n} entries")
    return a, b


def _add_offsets(offsets: dict[str, np.ndarray], owner: dict[str, str], name: str,
                 off: np.ndarray, where: str, start: int, kind: str = "branches") -> None:
    """Keep a jagged column's offsets as its collection's, or check they are the same.

    Raises:
        InputError: two columns of one collection with different multiplicities.
    """
    coll = collection_of(name)
    if coll not in offsets:
        offsets[coll], owner[coll] = off, name
    elif not np.array_equal(offsets[coll], off):
        diff = np.flatnonzero(np.diff(offsets[coll]) != np.diff(off))
        raise InputError(f"{where}: {kind} '{owner[coll]}' and '{name}' of collection "
                         f"'{coll}' have different multiplicities (first at entry "
                         f"{start + int(diff[0])})")


def _pieces(branch: Any, its: list[tuple[int, Any]], raw: dict[tuple[int, int], np.ndarray],
            start: int, stop: int) -> list[tuple[_Basket, int, int]]:
    """Decode the baskets of one branch: (basket, first local entry, stop local entry) each."""
    out = []
    for num, r in its:
        if isinstance(r, tuple):
            key = (int(r[0]), int(r[1]))
            data = raw[key]
            if len(data) != key[1] - key[0]:
                raise ValueError(f"basket {num} at bytes [{key[0]}, {key[1]}) is cut: only "
                                 f"{len(data)} bytes could be read (truncated file?)")
            basket = decode_basket(data)
        else:  # embedded basket (file not closed properly), decoded by uproot
            bo = r.byte_offsets
            basket = _Basket(r.data, None if bo is None else bo.astype(np.int64), r.num_entries)
        b0, b1 = (int(x) for x in branch.basket_entry_start_stop(num))
        if basket.num_entries != b1 - b0:
            raise ValueError(f"basket {num} holds {basket.num_entries} entries, the branch "
                             f"metadata says {b1 - b0}")
        out.append((basket, max(start, b0) - b0, min(stop, b1) - b0))
    return out
