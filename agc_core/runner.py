"""Run the analysis: plan chunks, process them on an executor, merge, write outputs, report."""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import boost_histogram as bh
import numpy as np

from agc_core import executors
from agc_core.cli import HelpFormatter
from agc_core.config import REGIONS, AnalysisConfig, load_analysis_config
from agc_core.errors import AGCError, ConfigError, InputError, ModelError
from agc_core.fileset import SampleFiles, is_url, load_fileset
from agc_core.histograms import HistArray, to_boost
from agc_core.logs import LogSetup, setup_run_logging, setup_worker_logging, teardown_run_logging
from agc_core.outputs import (
    FIT_FILE_NAME,
    FULL_FILE_NAME,
    save_full_histogram,
    write_fit_histograms,
)
from agc_core.report import (
    METRICS_FILE_NAME,
    accuracy_by_process,
    build_metrics,
    format_summary,
    write_metrics,
)

log = logging.getLogger(__name__)

DEFAULT_CHUNKSIZE = 500_000
DEFAULT_SEED = 0
DEFAULT_OUTPUT_DIR = Path("agc_output")
INFERENCE_KINDS = ("numba", "torch", "none")
SYSTEMATICS_CHOICES = ("all", "none")
IO_METRICS_FILE_NAME = "metrics_io.json"
ENTRIES_CACHE_NAME = "entries_cache.json"
ENTRIES_CACHE_VERSION = 1
PLOTS_DIR = "plots"
PLAN_THREADS = 8
#: chunk processors by name (``--backend``)
BACKENDS = {
    "kernels": "agc_core.processor:process_chunk",
    "reference": "agc_core.reference:process_chunk_reference",
}


# ---------------------------------------------------------------------------------------------
# options and results


@dataclass(frozen=True)
class RunOptions:
    """Everything a run can be told (the CLI flags of ``python -m agc_core run``).

    Attributes:
        fileset: AGC fileset JSON; None uses the embedded synthetic dataset (generated once).
        n_files_max_per_sample: files per sample (-1: all).
        systematics: ``all`` or ``none`` (only nominal samples and histograms).
        seed: seed of the keyed JER draws.
        workers: worker processes (None: the usable CPU cores; iterative: 1).
        executor: ``iterative``, ``processes`` or ``dask``.
        scheduler_address: ``tcp://host:port`` of an existing Dask scheduler.
        chunksize: entries per chunk (target; chunks end on basket boundaries).
        inference: ``numba`` (default), ``torch`` or ``none`` (every event classified 0).
        model_dir: folder with the MLP weights (``mlp_<region>.pt``, ``scaler_<region>.json``,
            as ``python -m agc_core train`` writes them); None: the weights shipped in
            ``models/``.
        output_dir: where the outputs go (created).
        allow_partial: a run with failed chunks still exits 0 (the result says incomplete).
        config: analysis YAML (None: the packaged ``configs/analysis.yaml``).
        io_only: only read the branch set of ``io_file_percent`` and report the read rate.
        io_file_percent: 4, 15, 25 or 50 (keys of ``cfg.io_branch_sets``).
        max_retries: retries of a failing chunk (exceptions other than bad input; dead workers).
        plots: draw the PNG plots.
        progress: show a progress bar (None: when stderr is a terminal).
        start_method: multiprocessing start method of the process pool (None: forkserver on
            Linux, spawn elsewhere).
        tree: the TTree name in the input files.
        log_level: level of the shared log file (INFO, or DEBUG for ``--verbose``).
        processor: the chunk processor: ``kernels`` (the numba kernels, default),
            ``reference`` (the awkward reference of the seed: the same histograms, slowly; an
            end-to-end cross-check) or any ``module:function`` with the same signature.
    """

    fileset: str | Path | None = None
    n_files_max_per_sample: int = -1
    systematics: str = "all"
    seed: int = DEFAULT_SEED
    workers: int | None = None
    executor: str = "processes"
    scheduler_address: str | None = None
    chunksize: int = DEFAULT_CHUNKSIZE
    inference: str = "numba"
    model_dir: str | Path | None = None
    output_dir: str | Path = DEFAULT_OUTPUT_DIR
    allow_partial: bool = False
    config: str | Path | None = None
    io_only: bool = False
    io_file_percent: int = 4
    max_retries: int = executors.DEFAULT_MAX_RETRIES
    plots: bool = True
    progress: bool | None = None
    start_method: str | None = None
    tree: str = "events"
    log_level: int = logging.INFO
    processor: str = "kernels"


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: an entry range of one file of one sample.

    Attributes:
        index: stable task index (samples in config order, files in fileset order, ranges
            in file order); results are merged in this order.
    """

    index: int
    process: str
    variation: str
    sample_id: int
    file_id: int
    path: str
    entry_start: int
    entry_stop: int
    xsec_weight: float

    @property
    def name(self) -> str:
        """``process/variation file <path> entries [start, stop)``."""
        return (f"{self.process}/{self.variation} file {self.path} entries "
                f"[{self.entry_start}, {self.entry_stop})")


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


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk (or a whole file, when it could not even be opened) that failed for good."""

    process: str
    variation: str
    path: str
    entry_start: int | None
    entry_stop: int | None
    error: str
    attempts: int

    def describe(self) -> str:
        """One line naming sample, file, entry range and error."""
        where = ("whole file" if self.entry_start is None
                 else f"entries [{self.entry_start}, {self.entry_stop})")
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.process}/{self.variation} {self.path} {where}{tries}: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class WorkerStats:
    """Per worker process: chunks, events, time busy, CPU time, peak resident memory."""

    worker: str
    chunks: int
    events: int
    busy_s: float
    cpu_s: float
    max_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the worker's event rate while busy."""
        d = asdict(self)
        d["event_rate_hz"] = self.events / self.busy_s if self.busy_s > 0 else 0.0
        return d


@dataclass(frozen=True)
class SampleYield:
    """Selected events of one sample per region (own variation, both classifications).

    ``raw`` is the number of selected events (the weighted sum divided by the sample's
    constant event weight, rounded), ``weighted`` the sum of weights (xsec * lumi / N).
    """

    process: str
    variation: str
    n_events: int
    raw: dict[str, int]
    weighted: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class RunResult:
    """The result of :func:`run_analysis`.

    Attributes:
        options: the options of the run.
        complete: every chunk succeeded.
        failures: the chunks (or files) that failed for good.
        n_chunks: planned chunks (failed files count as one each).
        n_events: events read (successful chunks).
        bytes_read: compressed bytes read.
        walltime: seconds of the processing stage (first submission to last result).
        total_walltime: seconds of the whole call.
        processtime: seconds the workers spent reading and processing, summed over chunks.
        cputime: worker CPU seconds, summed over chunks.
        stage_times: seconds per stage (plan, startup, read, process, merge, write, plots...).
        num_workers: workers used.
        workers: per-worker statistics.
        columns: the branches read.
        yields: selected events per sample and region (analysis mode).
        accuracy: MLP accuracy per region and process (analysis mode, nominal).
        hist: the merged 5-axis boost-histogram (None in the I/O-only mode).
        output_dir: the output folder.
        outputs: output name -> path.
        fileset: the fileset used.
        dataset_source: ``local`` or the URL scheme of the first file.
        inference: the classifier used.
        stage_results: what the post-histogram stages returned (e.g. a fit result).
        input_warnings: suspicious input values found by the chunk checks (NaN/inf, negative
            pt or energy), one message per chunk and branch, in task order.
        metrics: the metrics.json record.
    """

    options: RunOptions
    complete: bool
    failures: tuple[ChunkFailure, ...]
    n_chunks: int
    n_events: int
    bytes_read: int
    walltime: float
    total_walltime: float
    processtime: float
    cputime: float
    stage_times: dict[str, float]
    num_workers: int
    workers: tuple[WorkerStats, ...]
    columns: tuple[str, ...]
    yields: tuple[SampleYield, ...]
    accuracy: dict[str, dict[str, float]]
    hist: bh.Histogram | None
    output_dir: Path
    outputs: dict[str, Path]
    fileset: Path
    dataset_source: str
    inference: str
    stage_results: dict[str, Any] = field(default_factory=dict)
    input_warnings: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def event_rate(self) -> float:
        """Events per second of the processing stage (all workers)."""
        return self.n_events / self.walltime if self.walltime > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when complete (or incomplete but ``allow_partial``), else 1."""
        return 0 if self.complete or self.options.allow_partial else 1


# ---------------------------------------------------------------------------------------------
# planning


def _file_key(path: str, tree: str) -> str:
    """Cache key of a file: path, tree, size and mtime (local) or path and tree (URL)."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if is_url(path) and not path.startswith("file://"):
        return json.dumps([path, tree])
    try:
        st = os.stat(local)
    except OSError:
        return json.dumps([path, tree, None, None])
    return json.dumps([os.path.abspath(local), tree, st.st_size, st.st_mtime_ns])


class EntriesCache:
    """Entry counts and chunk ranges of files, kept in a JSON file between runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") == ENTRIES_CACHE_VERSION:
                    self.data = raw.get("files", {})
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable entries cache %s", path)

    def get(self, key: str, ranges_key: str) -> tuple[int, list[tuple[int, int]]] | None:
        """Cached (entries, ranges) or None."""
        rec = self.data.get(key)
        if rec is None or ranges_key not in rec.get("ranges", {}):
            return None
        return int(rec["entries"]), [(int(a), int(b)) for a, b in rec["ranges"][ranges_key]]

    def put(self, key: str, ranges_key: str, entries: int,
            ranges: list[tuple[int, int]]) -> None:
        """Remember a file's entries and ranges."""
        rec = self.data.setdefault(key, {"entries": entries, "ranges": {}})
        rec["entries"] = entries
        rec["ranges"][ranges_key] = [list(r) for r in ranges]
        self.dirty = True

    def save(self) -> None:
        """Write the cache (atomically) if it changed."""
        if self.path is None or not self.dirty:
            return
        from agc_core.outputs import write_text_atomic

        try:
            write_text_atomic(self.path, json.dumps(
                {"version": ENTRIES_CACHE_VERSION, "files": self.data}))
        except OSError as exc:
            log.warning("cannot write entries cache %s: %s", self.path, exc)


def _inspect_file(path: str, branches: Sequence[str], chunksize: int, tree: str
                  ) -> tuple[int, list[tuple[int, int]]]:
    """(entries, chunk ranges) of one file, read with the reader."""
    from agc_core import io

    n = io.num_entries(path, tree)
    try:
        ranges = io.chunk_ranges(path, branches, chunksize, tree)
    except AGCError:
        raise
    except Exception as exc:  # be robust: even split
        log.debug("%s: no basket-aligned ranges (%s), splitting evenly", path, exc)
        ranges = even_ranges(n, chunksize)
    return n, ranges


def even_ranges(n: int, chunksize: int) -> list[tuple[int, int]]:
    """Split ``n`` entries into ceil(n / chunksize) ranges of (almost) equal size."""
    if n <= 0:
        return []
    k = -(-n // chunksize)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(itertools.pairwise(bounds))


def plan_tasks(samples: Sequence[SampleFiles], branches: Sequence[str], chunksize: int,
               tree: str = "events", cache: EntriesCache | None = None
               ) -> tuple[list[ChunkTask], list[ChunkFailure]]:
    """Split every file of every sample into chunk tasks.

    Args:
        samples: the samples to process, in order.
        branches: the branches the tasks read (chunks end on their basket boundaries).
        chunksize: target entries per chunk.
        tree: the TTree name.
        cache: entry counts and ranges known from earlier runs (updated).

    Returns:
        (tasks with stable indices, failures of files that could not be inspected).
    """
    if chunksize < 1:
        raise ConfigError(f"--chunksize must be at least 1, got {chunksize}")
    cache = cache or EntriesCache(None)
    ranges_key = f"{chunksize}|{','.join(branches)}"
    files = [(s, f) for s in samples for f in s.files]
    keys = [_file_key(f.path, tree) for _, f in files]
    known: dict[int, tuple[int, list[tuple[int, int]]] | Exception] = {}
    missing = []
    for i, key in enumerate(keys):
        hit = cache.get(key, ranges_key)
        if hit is None:
            missing.append(i)
        else:
            known[i] = hit
    if missing:
        log.info("reading entry counts of %d files", len(missing))

        def inspect(i: int) -> tuple[int, Any]:
            try:
                return i, _inspect_file(files[i][1].path, branches, chunksize, tree)
            except Exception as exc:
                return i, exc

        with ThreadPoolExecutor(min(PLAN_THREADS, len(missing))) as pool:
            for i, res in pool.map(inspect, missing):
                known[i] = res
                if not isinstance(res, Exception):
                    cache.put(keys[i], ranges_key, *res)
    tasks: list[ChunkTask] = []
    failures: list[ChunkFailure] = []
    for i, (s, f) in enumerate(files):
        res = known[i]
        if isinstance(res, Exception):
            msg = str(res) if isinstance(res, AGCError) else f"{type(res).__name__}: {res}"
            failures.append(ChunkFailure(s.process, s.variation, f.path, None, None, msg, 1))
            log.error("cannot plan %s/%s file %s: %s", s.process, s.variation, f.path, msg)
            continue
        n, ranges = res
        if n == 0:
            log.warning("%s: no entries in tree '%s' (file skipped)", f.path, tree)
        elif n != f.nevts:
            log.warning("%s: %d entries, but the fileset declares nevts = %d (normalization "
                        "uses the fileset)", f.path, n, f.nevts)
        for a, b in ranges:
            tasks.append(ChunkTask(len(tasks), s.process, s.variation, s.sample_id, f.file_id,
                                   f.path, a, b, s.xsec_weight))
    return tasks, failures


# ---------------------------------------------------------------------------------------------
# the worker side


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


class ConstantClassifier:
    """``--inference none``: every event is classified as ``value`` (0: background)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """An array of ``value`` with one entry per feature row."""
        return np.full(len(features), self.value, dtype=np.int64)


def load_run_classifier(kind: str, cfg: AnalysisConfig,
                        model_dir: str | Path | None = None) -> Any:
    """The classifier of ``--inference``: ``numba``/``torch`` MLP (weights from ``model_dir``,
    default the shipped ones) or none.

    Raises:
        ConfigError: unknown kind.
        ModelError: missing or mismatched weights.
    """
    if kind not in INFERENCE_KINDS:
        raise ConfigError(f"unknown --inference '{kind}' (choose from "
                          f"{', '.join(INFERENCE_KINDS)})")
    if kind == "none":
        return ConstantClassifier(0)
    from agc_core.classifier import load_classifier

    return load_classifier(kind=kind, model_dir=model_dir, cfg=cfg)


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
    state = _WorkerState(setup)
    try:
        state.cfg = load_analysis_config(setup.config_path)
        if not setup.io_only:
            state.classifier = (setup.classifier if setup.classifier is not None
                                else load_run_classifier(setup.inference, state.cfg,
                                                        setup.model_dir))
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
    c0 = time.process_time()
    t0 = time.perf_counter()
    chunk = io.read_chunk(task.path, setup.branches, task.entry_start, task.entry_stop,
                          setup.tree)
    t1 = time.perf_counter()
    hist = None
    warnings: tuple[str, ...] = ()
    if not setup.io_only:
        from agc_core.processor import check_chunk

        assert state.process is not None
        try:
            warnings = tuple(f"{task.name}: {m}" for m in check_chunk(chunk, state.cfg))
            for message in warnings:
                log.warning("suspicious input: %s", message)
            hist = state.process(chunk, _sample_info(task), state.cfg, state.classifier,
                                 setup.seed)
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
                       time.process_time() - c0, _WORKER_ID, _max_rss_mb(), warnings)


# ---------------------------------------------------------------------------------------------
# warming the fork server


WARMUP_ENV = "AGC_CORE_WARMUP"
WARMUP_ENTRIES = 64


@contextlib.contextmanager
def forkserver_warmup(tasks: Sequence[ChunkTask], setup: WorkerSetup, folder: Path
                      ) -> Any:
    """Let the process pool's fork server warm the reader, the kernels and the MLP once.

    Numba loads compiled kernels on their first call (~0.3 s each for the reader and the MLP);
    done once in the fork server (which imports this module, see :func:`warm_up_from_env`),
    every worker forked from it starts warm. The instructions travel in the environment
    variable :data:`WARMUP_ENV` (the fork server inherits the environment when it starts),
    the classifier in a temporary pickle file; both are removed afterwards.
    """
    if not tasks or os.environ.get(WARMUP_ENV):
        yield
        return
    import pickle
    import tempfile

    clf_file = None
    if setup.classifier is not None:
        fd, clf_file = tempfile.mkstemp(prefix=".classifier.", suffix=".pkl", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(setup.classifier, fh)
    task = tasks[0]
    os.environ[WARMUP_ENV] = json.dumps({
        "path": task.path, "branches": list(setup.branches), "tree": setup.tree,
        "stop": min(task.entry_stop, task.entry_start + WARMUP_ENTRIES),
        "start": task.entry_start, "config": setup.config_path,
        "processor": None if setup.io_only else setup.processor, "classifier": clf_file})
    try:
        yield
    finally:
        os.environ.pop(WARMUP_ENV, None)
        if clf_file:
            with contextlib.suppress(OSError):
                os.unlink(clf_file)


def warm_up_from_env() -> None:
    """In a fork server (or spawned worker): run one tiny chunk as :data:`WARMUP_ENV` says.

    Best effort: any failure only means the workers warm up on their first chunk.
    """
    spec = os.environ.get(WARMUP_ENV)  # set only while the main process starts its pool
    if not spec:
        return
    try:
        import pickle

        from agc_core import io

        w = json.loads(spec)
        chunk = io.read_chunk(w["path"], w["branches"], w["start"], w["stop"], w["tree"])
        if w["processor"]:
            cfg = load_analysis_config(w["config"])
            sample = _Sample(cfg.signal_process, "nominal", 0, 0, 1.0)
            load_function(w["processor"])(chunk, sample, cfg, ConstantClassifier(), 0)
            if w["classifier"]:
                with open(w["classifier"], "rb") as fh:
                    classifier = pickle.load(fh)
                for region in cfg.regions:
                    classifier.classify(region.name,
                                        np.zeros((4, len(region.features)), np.float32))
        io.close_files()
    except Exception as exc:  # never let a warm-up break the pool
        log.debug("warm-up skipped: %s: %s", type(exc).__name__, exc)


# ---------------------------------------------------------------------------------------------
# merging


class OrderedMerger:
    """Adds chunk histograms per sample strictly in task-index order, whatever the arrival.

    Results that arrive early wait in a buffer (bounded by how far completion runs ahead).
    """

    def __init__(self, tasks: Sequence[ChunkTask]) -> None:
        self.tasks = tasks
        self.next = 0
        self.pending: dict[int, HistArray | None] = {}
        self.sums: dict[int, HistArray] = {}  # sample_id -> sum

    def add(self, index: int, hist: HistArray | None) -> None:
        """Accept the result of task ``index`` (None: failed or no histogram)."""
        self.pending[index] = hist
        while self.next in self.pending:
            h = self.pending.pop(self.next)
            if h is not None:
                sid = self.tasks[self.next].sample_id
                self.sums[sid] = h if sid not in self.sums else self.sums[sid] + h
            self.next += 1

    @property
    def done(self) -> bool:
        """Every task has been accepted."""
        return self.next == len(self.tasks)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class StageContext:
    """What a post-histogram stage gets: the merged histogram and where to write."""

    hist: bh.Histogram
    cfg: AnalysisConfig
    options: RunOptions
    output_dir: Path
    filled: tuple[tuple[str, str], ...]
    outputs: dict[str, Path]


def _stage_plots(ctx: StageContext) -> dict[str, Path]:
    """Draw the seed's plots (skipped with ``plots=False``)."""
    if not ctx.options.plots:
        return {}
    from agc_core.plots import draw_all

    paths = draw_all(ctx.hist, ctx.cfg, ctx.output_dir / PLOTS_DIR,
                     classification=ctx.options.inference != "none")
    return {f"plots/{p.name}": p for p in paths}


#: Stages run in order after histograms.root is written; each returns {output name: path}.
#: The workspace + fit stage of a later issue is appended here.
POST_STAGES: list[tuple[str, Callable[[StageContext], dict[str, Path]]]] = [
    ("plots", _stage_plots),
]


def _resolve_fileset(options: RunOptions, cfg: AnalysisConfig) -> Path:
    if options.fileset is not None:
        return Path(options.fileset)
    from agc_core.synthetic import ensure_dataset

    log.info("no --fileset: using the embedded synthetic dataset")
    return Path(ensure_dataset(cfg=cfg))


def _validate(options: RunOptions, cfg: AnalysisConfig) -> None:
    if options.systematics not in SYSTEMATICS_CHOICES:
        raise ConfigError(f"unknown --systematics '{options.systematics}' (choose from "
                          f"{', '.join(SYSTEMATICS_CHOICES)})")
    if options.inference not in INFERENCE_KINDS:
        raise ConfigError(f"unknown --inference '{options.inference}' (choose from "
                          f"{', '.join(INFERENCE_KINDS)})")
    if options.executor not in executors.EXECUTORS:
        raise ConfigError(f"unknown --executor '{options.executor}' (choose from "
                          f"{', '.join(executors.EXECUTORS)})")
    if options.io_only and options.io_file_percent not in cfg.io_branch_sets:
        raise ConfigError(f"--io-file-percent must be one of "
                          f"{sorted(cfg.io_branch_sets)}, got {options.io_file_percent}")
    if options.chunksize < 1:
        raise ConfigError(f"--chunksize must be at least 1, got {options.chunksize}")
    if options.processor not in BACKENDS and ":" not in options.processor:
        raise ConfigError(f"unknown --backend '{options.processor}' (choose from "
                          f"{', '.join(BACKENDS)} or give module:function)")
    if not options.io_only:
        load_function(BACKENDS.get(options.processor, options.processor))
    if options.scheduler_address and options.executor != "dask":
        raise ConfigError("a Dask scheduler address needs the dask executor")
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {options.workers}")


def _yields(samples: Sequence[SampleFiles], sums: dict[int, HistArray],
            events: dict[int, int]) -> tuple[SampleYield, ...]:
    out = []
    for s in samples:
        h = sums.get(s.sample_id)
        raw: dict[str, int] = {}
        weighted: dict[str, float] = {}
        for ir, region in enumerate(REGIONS):
            w = 0.0
            if h is not None and s.variation in h.variations:
                w = float(h.sumw[h.variation_index(s.variation), ir].sum())
            weighted[region] = w
            raw[region] = round(w / s.xsec_weight) if s.xsec_weight > 0 else 0
        out.append(SampleYield(s.process, s.variation, events.get(s.sample_id, 0), raw,
                               weighted))
    return tuple(out)


def _worker_stats(results: Iterable[ChunkResult]) -> tuple[WorkerStats, ...]:
    acc: dict[str, list[float]] = {}
    for r in results:
        a = acc.setdefault(r.worker, [0, 0, 0.0, 0.0, 0.0])
        a[0] += 1
        a[1] += r.n_events
        a[2] += r.t_read + r.t_process
        a[3] += r.cpu_time
        a[4] = max(a[4], r.max_rss_mb)
    return tuple(WorkerStats(w, int(a[0]), int(a[1]), a[2], a[3], a[4])
                 for w, a in sorted(acc.items()))


def _dataset_source(samples: Sequence[SampleFiles]) -> str:
    for s in samples:
        for f in s.files:
            return f.path.split("://", 1)[0] if is_url(f.path) else "local"
    return "none"


def _progress_bar(total: int, enabled: bool | None) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, unit="chunk", disable=disable, dynamic_ncols=True,
                desc="chunks", leave=False)


def process_tasks(tasks: Sequence[ChunkTask], setup: WorkerSetup, options: RunOptions,
                  ) -> tuple[OrderedMerger, list[ChunkResult], list[ChunkFailure], float, int,
                             float]:
    """Run the tasks on the chosen executor, merging histograms in task order.

    A ``KeyboardInterrupt`` stops the processing but keeps what was computed: the chunks not
    done are reported as failed (``interrupted``) and the run goes on to write its outputs.

    Returns:
        (merger, successful results without histograms, failures in task order, processing
        wall time, workers used, start-up seconds: until the first chunk began).
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    merger = OrderedMerger(tasks)
    results: list[ChunkResult] = []
    failures: list[ChunkFailure] = []
    done: set[int] = set()
    fn = functools.partial(run_chunk, setup)
    workers = 1 if options.executor == "iterative" else options.workers
    executor = executors.make_executor(
        options.executor, workers, scheduler_address=options.scheduler_address,
        start_method=options.start_method, max_retries=options.max_retries,
        preload=["agc_core.runner"] + ([] if setup.io_only
                                       else [setup.processor.partition(":")[0]]))
    bar = _progress_bar(len(tasks), options.progress)
    events = 0
    first: float | None = None
    n_workers = executor.workers
    t0 = time.perf_counter()
    try:
        redirect = (logging_redirect_tqdm(loggers=[logging.getLogger()]) if not bar.disable
                    else contextlib.nullcontext())
        warm = (forkserver_warmup(tasks, setup, Path(options.output_dir))
                if options.executor == "processes" else contextlib.nullcontext())
        with executor, redirect, warm:
            for outcome in executor.run(fn, tasks, init_worker, (setup,)):
                task = tasks[outcome.index]
                done.add(task.index)
                if outcome.ok:
                    r: ChunkResult = outcome.value
                    merger.add(task.index, r.hist)
                    results.append(replace(r, hist=None))
                    events += r.n_events
                else:
                    merger.add(task.index, None)
                    failures.append(ChunkFailure(task.process, task.variation, task.path,
                                                 task.entry_start, task.entry_stop,
                                                 outcome.error or "", outcome.attempts))
                    log.error("chunk failed: %s", failures[-1].describe())
                    if outcome.detail:
                        log.debug("traceback of %s:\n%s", task.name, outcome.detail)
                if first is None:
                    first = time.perf_counter() - t0
                    if outcome.ok:  # the pool's start-up: before the first chunk began
                        first -= outcome.value.t_read + outcome.value.t_process
                bar.update(1)
                elapsed = time.perf_counter() - t0
                bar.set_postfix_str(f"{events / elapsed / 1e3:.0f} kevents/s", refresh=False)
            n_workers = executor.workers
    except KeyboardInterrupt:
        log.error("interrupted: keeping the %d chunks done, writing the outputs", len(done))
        for task in tasks:
            if task.index not in done:
                merger.add(task.index, None)
                failures.append(ChunkFailure(task.process, task.variation, task.path,
                                             task.entry_start, task.entry_stop,
                                             "interrupted", 0))
    finally:
        bar.close()
    order = {(t.path, t.entry_start): t.index for t in tasks}
    failures.sort(key=lambda f: order.get((f.path, f.entry_start), -1))  # task order
    return merger, results, failures, time.perf_counter() - t0, n_workers, first or 0.0


def run_analysis(options: RunOptions | None = None) -> RunResult:
    """Run the whole analysis (or the I/O-only read) and write every output.

    Everything ``python -m agc_core run`` does is one call, :func:`run_analysis`, with a
    :class:`RunOptions` and a :class:`RunResult` back, so a notebook can do the same::

        from agc_core.runner import RunOptions, run_analysis
        result = run_analysis(RunOptions(n_files_max_per_sample=1, workers=2))
        result.hist          # the seed's 5-axis boost-histogram
        result.outputs       # {"histograms.root": Path, ...}

    Stages:

    1. Plan: the fileset's samples (``--systematics none``: only the nominal samples), each file's
       entry count and chunk ranges (about ``chunksize`` entries, ending on basket boundaries of
       the branches read, :func:`agc_core.io.chunk_ranges`), cached in
       ``<output_dir>/entries_cache.json`` keyed by path, size and mtime. A task is (sample, file,
       entry range) with a stable index (samples in config order, files in fileset order, ranges
       in file order). A file that cannot be opened becomes a failed task named by its path.
    2. Process: each task reads its chunk (:func:`agc_core.io.read_chunk`) and fills the
       histograms (:func:`agc_core.processor.process_chunk`) in a worker that loaded the
       configuration and the classifier once (:func:`init_worker`). Executors: ``iterative``,
       ``processes`` (default), ``dask`` (:mod:`agc_core.executors`).
    3. Merge: per sample, the chunks' histograms are added in task-index order as they arrive, so
       the sums (and the histograms, bit for bit) do not depend on completion order, executor or
       number of workers; then :func:`agc_core.histograms.to_boost` builds the seed's histogram.
    4. Outputs (all written atomically): ``histograms.root`` (for the fit, cabinetry names),
       ``histograms_full.npz`` (lossless, :func:`agc_core.outputs.load_full_histogram`),
       ``metrics.json``, ``plots/*.png``, ``agc.log`` (shared by all workers). The post-histogram
       stages are listed in :data:`POST_STAGES` (plots today; the workspace and fit go there).

    ``--systematics none`` processes only each process's nominal sample and keeps only its
    ``nominal`` histogram (no weight or jet-energy variations, no ttbar modelling samples), so
    ``histograms.root`` has the nominal histograms only and no pseudodata (its inputs are the
    ttbar ME/PS samples).

    ``--io-only`` (the seed's ``DISABLE_PROCESSING``): tasks only read the branch set of
    ``--io-file-percent`` (``cfg.io_branch_sets``) and the run reports the read rate; the record
    goes to ``metrics_io.json`` (the analysis outputs of an earlier run stay untouched).

    Args:
        options: what to run (default: everything at its default).

    Returns:
        The :class:`RunResult` (also summarized in ``metrics.json``).

    Raises:
        ConfigError: invalid options or configuration.
        InputError: unreadable fileset (a bad ROOT file only fails its chunks).
        ModelError: missing or mismatched classifier weights.
    """
    options = options or RunOptions()
    t_start = time.perf_counter()
    cfg = load_analysis_config(options.config)
    _validate(options, cfg)
    out = Path(options.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc})") from exc
    log_setup = setup_run_logging(out, options.log_level, console=False)
    try:
        return _run(options, cfg, out, log_setup, t_start)
    finally:
        teardown_run_logging()


def _run(options: RunOptions, cfg: AnalysisConfig, out: Path, log_setup: LogSetup,
         t_start: float) -> RunResult:
    stage_times: dict[str, float] = {}
    t = time.perf_counter()
    fileset = _resolve_fileset(options, cfg)
    samples = load_fileset(fileset, cfg, options.n_files_max_per_sample)
    if options.systematics == "none":
        samples = [s for s in samples if s.variation == "nominal"]
    branches = (tuple(cfg.io_branch_sets[options.io_file_percent]) if options.io_only
                else tuple(cfg.analysis_branches))
    # loaded once here (fails early on missing weights) and handed to the workers
    classifier = None if options.io_only else load_run_classifier(options.inference, cfg,
                                                                     options.model_dir)
    cache = EntriesCache(out / ENTRIES_CACHE_NAME)
    tasks, plan_failures = plan_tasks(samples, branches, options.chunksize, options.tree, cache)
    cache.save()
    from agc_core import io

    io.close_files()
    stage_times["plan"] = time.perf_counter() - t
    log.info("%s: %d samples, %d chunks of up to %d entries, executor %s",
             fileset, len(samples), len(tasks), options.chunksize, options.executor)

    model_dir = None if options.model_dir is None else str(options.model_dir)
    setup = WorkerSetup(str(cfg.path), options.inference, model_dir, options.seed,
                        options.io_only,
                        branches, options.tree, options.systematics == "none", log_setup,
                        BACKENDS.get(options.processor, options.processor), classifier)
    merger, results, failures, walltime, n_workers, first = process_tasks(tasks, setup,
                                                                          options)
    failures = plan_failures + failures
    stage_times["worker_startup"] = max(0.0, first)
    stage_times["read"] = sum(r.t_read for r in results)
    stage_times["process"] = sum(r.t_process for r in results)
    events_by_sample: dict[int, int] = {}
    for r in results:
        sid = tasks[r.index].sample_id
        events_by_sample[sid] = events_by_sample.get(sid, 0) + r.n_events

    hist = None
    outputs: dict[str, Path] = {}
    yields: tuple[SampleYield, ...] = ()
    accuracy: dict[str, dict[str, float]] = {}
    stage_results: dict[str, Any] = {}
    if not options.io_only:
        t = time.perf_counter()
        done = [s for s in samples if s.sample_id in merger.sums]
        hist = to_boost([(s.process, merger.sums[s.sample_id]) for s in done], cfg)
        filled = tuple((s.process, v) for s in done for v in merger.sums[s.sample_id].variations)
        yields = _yields(samples, merger.sums, events_by_sample)
        if options.inference != "none":
            accuracy = {r: accuracy_by_process(hist, r, cfg.signal_process) for r in REGIONS}
        stage_times["merge"] = time.perf_counter() - t
        t = time.perf_counter()
        if done:
            write_fit_histograms(hist, cfg, out / FIT_FILE_NAME, filled)
            outputs[FIT_FILE_NAME] = out / FIT_FILE_NAME
            outputs[FULL_FILE_NAME] = save_full_histogram(hist, out / FULL_FILE_NAME)
        else:
            log.error("no chunk succeeded: no histograms written")
        stage_times["write"] = time.perf_counter() - t
        if done:
            ctx = StageContext(hist, cfg, options, out, filled, outputs)
            for name, stage in POST_STAGES:
                t = time.perf_counter()
                stage_outputs = stage(ctx)
                outputs.update(stage_outputs)
                stage_results[name] = stage_outputs
                stage_times[name] = time.perf_counter() - t

    metrics_name = IO_METRICS_FILE_NAME if options.io_only else METRICS_FILE_NAME
    outputs[metrics_name] = out / metrics_name
    outputs["log"] = Path(log_setup.log_file) if log_setup.log_file else out
    result = RunResult(
        options=options,
        complete=not failures,
        failures=tuple(failures),
        n_chunks=len(tasks) + len(plan_failures),
        n_events=sum(r.n_events for r in results),
        bytes_read=sum(r.bytes_read for r in results),
        walltime=walltime,
        total_walltime=0.0,
        processtime=stage_times["read"] + stage_times["process"],
        cputime=sum(r.cpu_time for r in results),
        stage_times=stage_times,
        num_workers=n_workers,
        workers=_worker_stats(results),
        columns=branches,
        yields=yields,
        accuracy=accuracy,
        hist=hist,
        output_dir=out,
        outputs=outputs,
        fileset=fileset,
        dataset_source=_dataset_source(samples),
        inference="none" if options.io_only else options.inference,
        stage_results=stage_results,
        input_warnings=tuple(m for r in sorted(results, key=lambda r: r.index)
                             for m in r.input_warnings),
    )
    result = replace(result, total_walltime=time.perf_counter() - t_start)
    metrics = build_metrics(result)
    write_metrics(metrics, out / metrics_name)
    result = replace(result, metrics=metrics)
    level = logging.INFO if result.complete else logging.ERROR
    log.log(level, "run %s: %d events, %d chunks (%d failed), %.2f s, %.0f events/s",
            "complete" if result.complete else "INCOMPLETE", result.n_events, result.n_chunks,
            len(result.failures), walltime, result.event_rate)
    return result


# ---------------------------------------------------------------------------------------------
# CLI


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Build :class:`RunOptions` from the parsed ``run`` arguments."""
    verbose = bool(getattr(args, "verbose", False))
    quiet = bool(getattr(args, "quiet", False))
    return RunOptions(
        fileset=args.fileset,
        n_files_max_per_sample=args.n_files_max_per_sample,
        systematics=args.systematics,
        seed=args.seed,
        workers=args.workers,
        executor=args.executor,
        scheduler_address=args.scheduler_address,
        chunksize=args.chunksize,
        inference=args.inference,
        model_dir=args.model_dir,
        output_dir=args.output_dir,
        allow_partial=args.allow_partial,
        config=args.config,
        io_only=args.io_only,
        io_file_percent=args.io_file_percent,
        max_retries=args.max_retries,
        plots=not args.no_plots,
        progress=False if quiet else None,
        start_method=args.start_method,
        log_level=logging.DEBUG if verbose else logging.INFO,
        processor=args.backend,
    )


def _cli_run(args: argparse.Namespace) -> int:
    """``python -m agc_core run``: run, print the summary, exit 0 only when complete."""
    options = options_from_args(args)
    if args.scheduler_address and args.executor != "dask":
        options = replace(options, executor="dask")
    result = run_analysis(options)
    if not getattr(args, "quiet", False) or not result.complete:
        print(format_summary(result))
    if not result.complete:
        print(f"agc_core run: {len(result.failures)} chunk(s) failed, the results are "
              f"incomplete" + (" (--allow-partial: exit code 0)" if options.allow_partial
                               else ""), file=sys.stderr)
    return result.exit_code


def add_cli(subparsers: Any) -> None:
    """Register the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run", help="process a fileset into histograms, metrics and plots",
        description="Run the AGC ttbar analysis: chunked processing on a process pool (or in "
                    "process, or on Dask), histograms for the fit (histograms.root), the full "
                    "histogram (histograms_full.npz), metrics.json, plots. Exit code 0 only "
                    "when every chunk succeeded (or --allow-partial).",
        formatter_class=HelpFormatter)
    io_sets = sorted(load_analysis_config().io_branch_sets)
    g = parser.add_argument_group("input")
    g.add_argument("--fileset", type=Path, default=None,
                   help="AGC fileset JSON (default: the embedded synthetic dataset, generated "
                        "on first use)")
    g.add_argument("--n-files-max-per-sample", type=int, default=-1,
                   help="use at most this many files per sample (-1: all)")
    g.add_argument("--config", type=Path, default=None,
                   help="analysis configuration YAML (default: the packaged analysis.yaml)")
    g = parser.add_argument_group("analysis")
    g.add_argument("--systematics", choices=SYSTEMATICS_CHOICES, default="all",
                   help="'none': only nominal samples and nominal histograms")
    g.add_argument("--inference", choices=INFERENCE_KINDS, default="numba",
                   help="MLP classifier backend ('none': every event classified 0)")
    g.add_argument("--model-dir", type=Path, default=None,
                   help="folder with MLP weights written by 'python -m agc_core train' "
                        "(default: the weights shipped in models/)")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the JER draws")
    g.add_argument("--backend", choices=tuple(BACKENDS), default="kernels",
                   help="chunk processor: the numba kernels, or the awkward reference of the "
                        "seed (same histograms, slower: an end-to-end cross-check)")
    g = parser.add_argument_group("execution")
    g.add_argument("--executor", choices=executors.EXECUTORS, default="processes",
                   help="where chunks run")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the usable CPU cores)")
    g.add_argument("--scheduler-address", default=None,
                   help="tcp://host:port of an existing Dask scheduler (implies --executor "
                        "dask)")
    g.add_argument("--chunksize", type=int, default=DEFAULT_CHUNKSIZE,
                   help="entries per chunk (chunks end on basket boundaries)")
    g.add_argument("--max-retries", type=int, default=executors.DEFAULT_MAX_RETRIES,
                   help="retries of a chunk whose worker died or raised (not for bad input)")
    g.add_argument("--start-method", choices=("forkserver", "spawn", "fork"), default=None,
                   help="multiprocessing start method of the process pool (default: "
                        "forkserver on Linux)")
    g.add_argument("--allow-partial", action="store_true",
                   help="exit 0 even when chunks failed (the outputs say incomplete)")
    g = parser.add_argument_group("I/O benchmark")
    g.add_argument("--io-only", action="store_true",
                   help="only read the branches of --io-file-percent and report the read rate")
    g.add_argument("--io-file-percent", type=int, choices=io_sets, default=io_sets[0],
                   help="branch set of --io-only (share of the file read)")
    g = parser.add_argument_group("output")
    g.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                   help="output folder")
    g.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="only warnings and errors (no progress bar, no summary)")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug output (also in agc.log)")
    parser.set_defaults(func=_cli_run)


warm_up_from_env()
