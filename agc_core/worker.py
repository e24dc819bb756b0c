"""The worker side of a run: per-process setup, one chunk read and processed, fork-server warm-up.

Imported by every worker process (the fork server preloads it and warms the reader, the
kernels and the MLP once, see :func:`warm_up_from_env`); it knows its task and setup, never
the orchestrator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.classifier import ConstantClassifier, load_classifier
from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.errors import AGCError, ConfigError, ModelError
from agc_core.forkserver import (
    DEFAULT_PROCESSOR,
    WARMUP_ENV,
    exit_without_teardown,
    wait_for_instructions,
    write_instructions,
)
from agc_core.histograms import HistArray
from agc_core.io.remote import DEFAULT_IO_TIMEOUT, set_io_timeout
from agc_core.logs import LogSetup, setup_worker_logging
from agc_core.planning import ChunkTask

log = logging.getLogger(__name__)

#: chunk processors by name (``--backend``)
BACKENDS = {
    "kernels": DEFAULT_PROCESSOR,
    "reference": "agc_core.reference:process_chunk_reference",
}


@dataclass(frozen=True)
class ChunkResult:
    """What a worker returns for a task (the histogram is None in the I/O-only mode)."""

    index: int
    hist: HistArray | None
    n_events: int
    bytes_read: int
    t_read: float
    t_process: float
    cpu_time: float
    worker: str
    max_rss_mb: float
    input_warnings: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    #: bytes of remote inputs this chunk fetched from the network, and took from the byte cache
    #: that earlier runs filled
    bytes_network: int = 0
    bytes_cache: int = 0


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, loaded once per process (see :func:`init_worker`).

    ``classifier`` is the classifier loaded once in the main process (the MLP classifiers
    hold only numpy arrays and pickle cheaply), so workers neither read the weight files nor
    import torch; without it each worker loads ``inference`` itself.
    """

    config_path: str
    inference: str
    model_dir: str | None
    seed: int
    io_only: bool
    branches: tuple[str, ...]
    tree: str
    nominal_only: bool
    log: LogSetup
    processor: str = "agc_core.processor:process_chunk"
    classifier: Any = field(default=None, compare=False, repr=False)
    io_timeout: float = DEFAULT_IO_TIMEOUT
    #: the byte cache folder remote reads go through (None: none) and its bound
    cache_dir: str | None = None
    cache_max_bytes: int | None = None
    #: when the run started (``time.time()``): cache entries written since are its own
    run_started: float | None = None


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``.

    Raises:
        ConfigError: the module or the function does not exist.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load the chunk processor '{spec}': {exc}") from exc


@dataclass(frozen=True)
class _Sample:
    """The sample fields a chunk processor needs (``agc_core.processor.SampleInfo``)."""

    process: str
    variation: str
    sample_id: int
    file_id: int
    xsec_weight: float


def _sample_info(task: ChunkTask) -> Any:
    try:
        from agc_core.processor import SampleInfo
    except ImportError:
        return _Sample(task.process, task.variation, task.sample_id, task.file_id,
                       task.xsec_weight)
    return SampleInfo(task.process, task.variation, task.sample_id, task.file_id,
                      task.xsec_weight)


@dataclass
class _WorkerState:
    setup: WorkerSetup
    cfg: AnalysisConfig | None = None
    classifier: Any = None
    process: Callable[..., HistArray] | None = None
    error: AGCError | None = None


_STATE: _WorkerState | None = None
_WORKER_ID = ""


def init_worker(setup: WorkerSetup) -> None:
    """Per-process initialization: logging, configuration, classifier, chunk processor.

    Never raises (a pool whose initializer raises is unusable): an error is kept and every
    task of this process then fails with it, named.
    """
    global _STATE, _WORKER_ID
    if _STATE is not None and _STATE.setup == setup:
        return
    _WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
    if not _is_main_process():
        setup_worker_logging(setup.log)
        keep_freed_memory()
    state = _WorkerState(setup)
    try:
        set_io_timeout(setup.io_timeout)
        from agc_core import io
        from agc_core.io.cache import ByteCache

        io.set_byte_cache(None if setup.cache_dir is None
                          else ByteCache(setup.cache_dir, setup.cache_max_bytes,
                                         setup.run_started))
        state.cfg = load_analysis_config(setup.config_path)
        if not setup.io_only:
            state.classifier = (setup.classifier if setup.classifier is not None
                                else load_classifier(setup.inference, setup.model_dir,
                                                    state.cfg))
            state.process = load_function(setup.processor)
    except AGCError as exc:
        state.error = exc
    except Exception as exc:
        state.error = ModelError(f"worker initialization failed: {type(exc).__name__}: {exc}")
    _STATE = state
    if state.error is not None:
        log.error("worker %s cannot work: %s", _WORKER_ID, state.error)
    else:
        log.log(logging.DEBUG if _is_main_process() else logging.INFO, "worker %s ready (%s)",
                _WORKER_ID, "I/O only" if setup.io_only else f"inference {setup.inference}")


#: glibc malloc in a worker: allocations up to this size come from the heap (glibc's maximum)
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024
#: ... and freed heap memory up to this much is kept for the next chunk
MALLOC_TRIM_THRESHOLD = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse a chunk's freed buffers for the next chunk.

    By default the decompression buffers and column arrays of a chunk (0.1-30 MB each) are
    mapped fresh and unmapped when freed, so every chunk page-faults (and the kernel zeroes)
    all of its memory again: 80 % of a worker's page faults, ~12 % of its reading CPU, and
    more with two workers faulting at once (kernel time +25 % here). With these settings the
    heap keeps them; the peak resident memory stays what the largest chunk needs. Returns
    whether the settings were applied (glibc only).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


_MAIN_PID = os.getpid()


def _is_main_process() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is None and os.getpid() == _MAIN_PID


def _max_rss_mb() -> float:
    """Peak resident memory of this process in MB (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 1024 / 1024


def run_chunk(setup: WorkerSetup, task: ChunkTask) -> ChunkResult:
    """Read and process one chunk (runs in a worker).

    Raises:
        AGCError: bad input (named) or a failed worker initialization.
    """
    from agc_core import io

    init_worker(setup)
    state = _STATE
    assert state is not None
    if state.error is not None:
        raise type(state.error)(str(state.error))
    from agc_core.io import remote

    cache = io.byte_cache()
    net0 = remote.network_bytes(this_thread=True)
    hit0 = cache.stats.bytes_from_cache - cache.stats.bytes_fresh if cache is not None else 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    chunk = io.read_chunk(task.path, setup.branches, task.entry_start, task.entry_stop,
                          setup.tree, getattr(task, "layout", None))
    t1 = time.perf_counter()
    bytes_network = remote.network_bytes(this_thread=True) - net0
    bytes_cache = (cache.stats.bytes_from_cache - cache.stats.bytes_fresh
                   if cache is not None else 0) - hit0
    hist = None
    warnings: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    if not setup.io_only:
        from agc_core.processor import check_chunk

        assert state.process is not None and state.cfg is not None
        try:
            pieces, skipped = split_absurd_events(chunk, state.cfg, task.path)
            for message in skipped:
                log.warning("event skipped: %s", message)
            found: list[str] = []
            for piece in pieces:
                found += [f"{task.name}: {m}" for m in check_chunk(piece, state.cfg)]
                h = state.process(piece, _sample_info(task), state.cfg, state.classifier,
                                  setup.seed)
                hist = h if hist is None else hist + h
            if hist is None:  # every event skipped
                hist = HistArray.empty(state.cfg.fill_variations(task.process, task.variation),
                                       state.cfg)
            warnings = tuple(found)
            for message in warnings:
                log.warning("suspicious input: %s", message)
        except AGCError as exc:
            raise type(exc)(f"{task.name}: {exc}") from exc
        if setup.nominal_only and hist.variations != ("nominal",):
            i = hist.variation_index("nominal")
            hist = HistArray(("nominal",), hist.sumw[i:i + 1].copy(), hist.sumw2[i:i + 1].copy())
    t2 = time.perf_counter()
    n_events = chunk.n_events
    bytes_read = chunk.bytes_read
    del chunk
    return ChunkResult(task.index, hist, n_events, bytes_read, t1 - t0, t2 - t1,
                       time.process_time() - c0, _WORKER_ID, _max_rss_mb(), warnings, skipped,
                       bytes_network, bytes_cache)


def split_absurd_events(chunk: Any, cfg: AnalysisConfig, path: str
                        ) -> tuple[list[Any], tuple[str, ...]]:
    """Cut the events with an absurd multiplicity out of a chunk.

    An event with more objects of one collection than ``input_checks.max_objects_per_event``
    is taken for corrupt input: it is skipped, and the rest of the chunk is processed as the
    contiguous entry ranges around it (each keeps its global entry numbers, so the keyed JER
    draws of the other events do not change).

    Args:
        chunk: the chunk read (``agc_core.io.Chunk``).
        cfg: the analysis configuration.
        path: the file (for the messages).

    Returns:
        (the chunk pieces to process, in order; one message per skipped event naming the file,
        the entry, the collection and its count).
    """
    from agc_core.kernels.kinematics import max_multiplicity

    limit = cfg.input_checks.max_objects_per_event
    bad: dict[int, str] = {}
    for coll, offsets in chunk.offsets.items():
        if max_multiplicity(offsets) <= limit:
            continue
        counts = np.diff(offsets)
        for i in np.flatnonzero(counts > limit):
            bad.setdefault(int(i), f"{path} entry {chunk.entry_start + int(i)}: "
                                   f"{int(counts[i])} objects in 'number{coll}' (more than "
                                   f"input_checks.max_objects_per_event = {limit}): event "
                                   f"skipped")
    if not bad:
        return [chunk], ()
    pieces = []
    lo = 0
    for i in [*sorted(bad), chunk.n_events]:
        if i > lo:
            pieces.append(slice_chunk(chunk, lo, i))
        lo = i + 1
    return pieces, tuple(bad[i] for i in sorted(bad))


def slice_chunk(chunk: Any, lo: int, hi: int) -> Any:
    """Events [lo, hi) of a chunk (local indices) as a chunk of their own (copies)."""
    from agc_core.io import Chunk, collection_of

    offsets = {c: (o[lo:hi + 1] - o[lo]) for c, o in chunk.offsets.items()}
    columns = {}
    for name, values in chunk.columns.items():
        o = chunk.offsets.get(collection_of(name))
        if o is not None and len(values) == o[-1]:  # jagged: its collection's content
            columns[name] = values[o[lo]:o[hi]].copy()
        else:
            columns[name] = values[lo:hi].copy()
    return Chunk(hi - lo, chunk.entry_start + lo, chunk.entry_start + hi, columns, offsets,
                 chunk.bytes_read if lo == 0 else 0)


# ---------------------------------------------------------------------------------------------
# warming the fork server


WARMUP_ENTRIES = 64


def warmup_spec(task: ChunkTask | None, setup: WorkerSetup, folder: Path
                ) -> tuple[dict[str, Any], str | None]:
    """The fork server's warm-up instructions: the reader and the chunk processor on the
    first entries of ``task`` (None: none; a remote file would cost the fork server a fetch of
    whole baskets that the read-ahead fetches too, to save each worker ~7 ms), and the MLP;
    and the temporary pickle file of the classifier (to remove afterwards), if any."""
    import pickle
    import tempfile

    clf_file = None
    if setup.classifier is not None:
        fd, clf_file = tempfile.mkstemp(prefix=".classifier.", suffix=".pkl", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(setup.classifier, fh)
    spec: dict[str, Any] = {"path": None, "config": setup.config_path, "classifier": clf_file,
                            "processor": None if setup.io_only else setup.processor}
    if task is not None:
        spec.update({"path": task.path, "branches": list(setup.branches), "tree": setup.tree,
                     "stop": min(task.entry_stop, task.entry_start + WARMUP_ENTRIES),
                     "start": task.entry_start, "layout": getattr(task, "layout", None)})
    return spec, clf_file


@contextlib.contextmanager
def forkserver_warmup(tasks: Sequence[ChunkTask], setup: WorkerSetup, folder: Path,
                      early: Path | None = None) -> Any:
    """Let the process pool's fork server warm the reader, the kernels and the MLP once.

    Numba loads compiled kernels on their first call (~0.3 s each for the reader and the MLP);
    done once in the fork server (which imports this module, see :func:`warm_up_from_env`),
    every worker forked from it starts warm. The instructions (:func:`warmup_spec`: the first
    local task) travel in the file ``early`` that a fork server started by
    :func:`agc_core.forkserver.start` waits for, else in the environment variable
    :data:`WARMUP_ENV` (the fork server inherits it when it starts); the classifier goes in a
    temporary pickle file; all are removed afterwards.
    """
    from agc_core.io.remote import is_remote

    task = next((t for t in tasks if not is_remote(t.path)), None)
    if (task is None and setup.classifier is None) or (early is None and os.environ.get(
            WARMUP_ENV)):
        if early is not None:
            write_instructions(early, {})
        yield
        return
    spec, clf_file = warmup_spec(task, setup, folder)
    if early is not None:
        write_instructions(early, spec)
    else:
        os.environ[WARMUP_ENV] = json.dumps(spec)
    try:
        yield
    finally:
        os.environ.pop(WARMUP_ENV, None)
        for name in (clf_file, early):
            if name:
                with contextlib.suppress(OSError):
                    os.unlink(name)


def skip_numba_extensions() -> None:
    """Keep numba from loading its extensions at its first compilation: the one installed is
    awkward's, whose loading imports awkward (with the scan of every package's entry points,
    ~0.2 s). Done in the fork server of the default chunk processor only, whose kernels take
    numpy arrays (its workers inherit it), never in the user's process, where awkward arrays
    may meet numba."""
    from numba.core import entrypoints

    entrypoints._already_initialized = True


def _prewarm(w: dict[str, Any]) -> None:
    """Numba's start-up (its first call imports its registries and SciPy's BLAS, ~0.3 s)
    and the chunk kernels, on :data:`WARMUP_ENTRIES` random events (most with four jets and
    a lepton, so that every kernel runs): what the warm-up needs no file for."""
    if not w.get("processor"):
        return
    if w["processor"] == DEFAULT_PROCESSOR:
        skip_numba_extensions()
    from agc_core.fixtures import random_chunk

    cfg = load_analysis_config(w["config"])
    chunk = random_chunk(WARMUP_ENTRIES, 0, mean_jets=7.0, mean_leptons=0.6, cfg=cfg)
    sample = _Sample(cfg.signal_process, "nominal", 0, 0, 1.0)
    load_function(w["processor"])(chunk, sample, cfg, ConstantClassifier(), 0)


def warm_up_from_env() -> None:
    """In a fork server (or spawned worker): run one tiny chunk as :data:`WARMUP_ENV` says
    (or, for an early-started fork server, as the file it names says once it exists).

    Best effort: any failure only means the workers warm up on their first chunk.
    """
    spec = os.environ.get(WARMUP_ENV)  # set only while the main process starts its pool
    if not spec:
        return
    try:
        import pickle

        from agc_core import io

        w = json.loads(spec)
        if "wait_for" in w:  # the fork server of agc_core.forkserver.start
            exit_without_teardown()
            _prewarm(w)
            w = wait_for_instructions(w)
            if not w:
                return
        if w.get("path"):  # the reader and the processor on a local file's first entries
            chunk = io.read_chunk(w["path"], w["branches"], w["start"], w["stop"], w["tree"],
                                  w.get("layout"))
            if w["processor"]:
                cfg = load_analysis_config(w["config"])
                sample = _Sample(cfg.signal_process, "nominal", 0, 0, 1.0)
                load_function(w["processor"])(chunk, sample, cfg, ConstantClassifier(), 0)
            io.close_files()
        if w["processor"] and w.get("classifier"):
            cfg = load_analysis_config(w["config"])
            with open(w["classifier"], "rb") as fh:
                classifier = pickle.load(fh)
            for region in cfg.regions:
                classifier.classify(region.name,
                                    np.zeros((4, len(region.features)), np.float32))
    except Exception as exc:  # never let a warm-up break the pool
        log.debug("warm-up skipped: %s: %s", type(exc).__name__, exc)


warm_up_from_env()
