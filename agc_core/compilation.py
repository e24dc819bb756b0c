"""First-run compilation of the numba kernels, done before processing and reported apart.

numba compiles the kernels on their first call (about 10 s for the fused chunk loop, the MLP,
the fill and the input checks) and caches the machine code on disk. A first run that compiled
inside its workers would report an event rate several times too low; so when the cache is
missing the runner compiles them once before the processing stage (workers then load the
cache), in a forked process started before the embedded dataset is generated and the chunks
planned (:func:`start_background_compile`), and the summary says so.
"""

from __future__ import annotations

import logging
import os
import time
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


def _compile_in_child(cfg: AnalysisConfig, classifier: Any) -> None:
    """Body of the background compilation process (exit code 0 when the cache is written)."""
    compile_kernels(cfg, classifier)


class BackgroundCompile:
    """:func:`compile_kernels` in a forked process, while this one does something else (the
    first run generates the embedded dataset and plans meanwhile); numba's on-disk cache is
    what it leaves behind, which the workers then load.

    Use :func:`start_background_compile`; :meth:`describe` is the state in a few words (shown
    beside the dataset progress bar), :meth:`wait` joins it.
    """

    def __init__(self, process: Any) -> None:
        self._process = process
        self._t0 = time.perf_counter()
        self._t1: float | None = None

    @property
    def seconds(self) -> float:
        """Time the compilation took (so far, while it runs)."""
        return (self._t1 if self._t1 is not None else time.perf_counter()) - self._t0

    def _poll(self) -> bool:
        """Whether it has finished (and record when)."""
        if self._t1 is None and not self._process.is_alive():
            self._t1 = time.perf_counter()
        return self._t1 is not None

    def describe(self) -> str:
        """``kernels: compiling (4 s)`` or ``kernels: compiled in 9.8 s``."""
        if self._poll():
            ok = self._process.exitcode == 0
            return f"kernels: compiled in {self.seconds:.1f} s" if ok else "kernels: failed"
        return f"kernels: compiling ({self.seconds:.0f} s)"

    def wait(self, progress: bool | None = None) -> bool:
        """Wait for the compilation (a spinner line on a terminal while it runs).

        Returns:
            Whether it succeeded (else the caller compiles in its own process).
        """
        if progress is None:  # a terminal or a notebook
            from agc_core.progress import shown

            progress = shown(None)
        if not self._poll():
            from tqdm import tqdm  # a text line (a spinner), in a notebook too

            with tqdm(desc="compiling numba kernels (first run)", bar_format="{desc}: {elapsed}",
                      disable=not progress) as bar:
                while not self._poll():
                    self._process.join(0.2)
                    bar.refresh()
        self._process.join()
        if self._process.exitcode != 0:
            log.warning("background kernel compilation failed (exit code %s); compiling here",
                        self._process.exitcode)
            return False
        log.info("numba kernels compiled in %.1f s, in the background", self.seconds)
        return True


def start_background_compile(cfg: AnalysisConfig, classifier: Any) -> BackgroundCompile | None:
    """Start :func:`compile_kernels` in a forked process (None where ``fork`` is missing:
    compile in this process then).

    Call it before this process starts threads of its own (a forked copy of a running thread's
    locks could hang the child).
    """
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    process = multiprocessing.get_context("fork").Process(
        target=_compile_in_child, args=(cfg, classifier), name="agc-compile", daemon=True)
    process.start()
    return BackgroundCompile(process)
