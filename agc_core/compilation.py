"""First-run compilation of the numba kernels, done before processing and reported apart.

numba compiles the kernels on their first call (about 10 s for the fused chunk loop, the MLP,
the fill and the input checks) and caches the machine code on disk. A first run that compiled
inside its workers would report an event rate several times too low; so when the cache is
missing the runner compiles them once in the main process, before the processing stage
(workers then load the cache), and the summary says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from agc_core.config import AnalysisConfig

log = logging.getLogger(__name__)

#: cache entries of the largest kernels: the fused chunk loop, and the MLP
_PROBES = {"chunk": "chunk.analyse_events-*.nbi", "mlp": "mlp.mlp_classify-*.nbi"}


def kernels_cached(mlp: bool = True) -> bool:
    """Whether numba's on-disk cache holds the fused chunk kernel (and the numba MLP)."""
    import agc_core.kernels

    user_dir = os.environ.get("NUMBA_CACHE_DIR")  # numba then caches there only
    folder = Path(user_dir) if user_dir else Path(agc_core.kernels.__file__).parent / "__pycache__"
    probes = [_PROBES["chunk"], *([_PROBES["mlp"]] if mlp else [])]
    return folder.is_dir() and all(next(folder.rglob(p), None) is not None for p in probes)


def compile_kernels(cfg: AnalysisConfig, classifier: Any) -> None:
    """Compile (and cache) every kernel a chunk needs: run a tiny synthetic chunk through the
    input checks and the processor of a nominal W+jets sample (all its variations)."""
    from agc_core.fixtures import random_chunk
    from agc_core.processor import SampleInfo, check_chunk, process_chunk

    chunk = random_chunk(200, 0, mean_jets=7.0, mean_leptons=0.6, cfg=cfg)
    process, variation = cfg.systematics.wjets_process, "nominal"
    sample = SampleInfo(process, variation, cfg.samples.index((process, variation)), 0, 1.0)
    check_chunk(chunk, cfg)
    process_chunk(chunk, sample, cfg, classifier, 0)
