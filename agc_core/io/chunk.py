"""What the reader returns: :class:`Chunk` (the branches of a file's entry range as flat
arrays plus offsets) and :class:`FileInfo` (what :func:`agc_core.io.check_file` learned)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Chunk(NamedTuple):
    """The branches of one file's entry range, as flat arrays.

    Attributes:
        n_events: ``entry_stop - entry_start``.
        entry_start: first entry read (global index in the file).
        entry_stop: one past the last entry read.
        columns: branch name -> flat contiguous array in the stored dtype, native byte order
            (``float32`` for float branches). For a jagged branch, the content of all its
            events; for a per-event scalar (``met_pt``), one value per event. Other types
            uproot reads (strings, nested vectors): one Python object per event
            (``dtype=object``) and no offsets.
        offsets: collection name (the branch-name part before the first ``_``: ``jet`` for
            ``jet_pt``) -> ``int64`` offsets of length ``n_events + 1`` starting at 0, shared
            by every jagged branch of the collection. Scalars have none.
        bytes_read: compressed bytes of the baskets read (whole baskets including their key
            headers, as stored in the file: ``fBasketBytes``), i.e. what came from storage; a
            basket that straddles two chunks counts in both.
    """

    n_events: int
    entry_start: int
    entry_stop: int
    columns: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    bytes_read: int


@dataclass(frozen=True)
class FileInfo:
    """What :func:`check_file` learned about a file.

    Attributes:
        path: the file (as given).
        tree: the tree name.
        num_entries: number of entries (events) of the tree.
        branches: every branch name of the tree.
        compressed_bytes: compressed size (all baskets, ``fZipBytes``) of the checked branches.
    """

    path: str
    tree: str
    num_entries: int
    branches: tuple[str, ...]
    compressed_bytes: int
