"""Tests of agc_core.worker that need no run (the runs: tests/test_runner.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
from agc_core.worker import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a chunk's buffers: allocated together, filled, freed together
    arrays = [np.empty(size << 20, np.uint8) for size in (6, 14, 9, 3, 12, 8, 5)]
    for a in arrays:
        a[:] = 1
    del arrays, a
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_keep_freed_memory_stops_the_page_faults_of_each_chunk():
    """With the worker's malloc settings a chunk's freed buffers (57 MB) are reused by the
    next chunk, instead of being unmapped and faulted in again (10 chunks)."""
    out = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True,
                              text=True, check=True)
        applied, faults = done.stdout.split()
        out[mode] = (applied == "True", int(faults))
    assert out["keep"][0] and not out["default"][0]
    # (measured: 42,900 page faults by default, 3,300 kept; transparent huge pages and
    # glibc's adaptive threshold make the default's count vary)
    assert out["keep"][1] * 5 < out["default"][1]
