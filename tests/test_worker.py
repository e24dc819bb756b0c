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


NO_UPROOT = """
import json, sys
from agc_core import io, worker
from agc_core.config import DEFAULT_ANALYSIS_CONFIG
layout = json.loads(sys.argv[2])
worker._prewarm({"config": str(DEFAULT_ANALYSIS_CONFIG), "processor": worker.BACKENDS["kernels"]})
chunk = io.read_chunk(sys.argv[1], list(layout["branches"]), 0, 10, "events", layout)
print(chunk.n_events, sorted(m for m in ("uproot", "awkward") if m in sys.modules))
"""


def test_a_worker_of_planned_files_never_imports_uproot(small_dataset, cfg):
    """The fork server's warm-up and a read of a planned file load neither uproot nor awkward
    (0.25 s a process, plus numba's awkward extension)."""
    import json

    from agc_core import io
    from agc_core.fileset import load_fileset

    path = load_fileset(small_dataset, cfg)[0].files[0].path
    layout = io.file_layout(path, cfg.analysis_branches)
    done = subprocess.run([sys.executable, "-c", NO_UPROOT, path, json.dumps(layout)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["10", "[]"]
