"""Numba kernels of the AGC ttbar analysis on flat arrays plus offsets (numpy + numba only).

numba's on-disk cache (``cache=True``) is keyed on the source of the module that defines a
function, not on the modules it calls: after an edit of ``trijet.py`` the fused loop in
``chunk.py`` would still load its old machine code (with the old ``trijet_avg_dr`` inlined).
So on import the cache of this package is dropped whenever any of its sources changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_STAMP = "kernels-sources.sha256"


def _drop_stale_cache() -> None:
    """Delete this package's numba cache files if its sources differ from the recorded hash."""
    here = Path(__file__).resolve().parent
    cache = here / "__pycache__"
    try:
        digest = hashlib.sha256()
        for path in sorted(here.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        stamp = cache / _STAMP
        if stamp.is_file() and stamp.read_text() == digest.hexdigest():
            return
        for path in cache.glob("*.nb[ic]"):
            path.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        tmp = cache / f"{_STAMP}.{os.getpid()}.tmp"
        tmp.write_text(digest.hexdigest())
        tmp.replace(stamp)
    except OSError:  # read-only installation: numba then caches elsewhere or not at all
        pass


_drop_stale_cache()
