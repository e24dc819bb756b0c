"""Run the analysis: plan chunks, process them on an executor, merge, write outputs, report.

The orchestrator of the pipeline: :mod:`agc_core.planning` splits the fileset into tasks,
:mod:`agc_core.worker` reads and processes each on an executor (:mod:`agc_core.executors`),
:mod:`agc_core.histograms` merges them, then the post-histogram stages (outputs, plots, ...)
run in order. Each stage module knows its inputs, never this module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boost_histogram as bh

from agc_core import executors, forkserver, mainguard, remote_inputs
from agc_core.accuracy import accuracy_by_process
from agc_core.classifier import INFERENCE_KINDS, load_classifier
from agc_core.compilation import compile_kernels, kernels_cached, start_background_compile
from agc_core.config import REGIONS, AnalysisConfig, load_analysis_config
from agc_core.errors import ConfigError, InputError
from agc_core.fileset import SampleFiles, is_url, load_fileset
from agc_core.histograms import HistArray, OrderedMerger, to_boost
from agc_core.io import cache as bytecache
from agc_core.io.remote import set_io_timeout
from agc_core.logs import LogSetup, setup_run_logging, teardown_run_logging
from agc_core.outputs import (
    FIT_FILE_NAME,
    FULL_FILE_NAME,
    FULL_UHI_FILE_NAME,
    save_full_histogram,
    save_uhi_histogram,
    write_fit_histograms,
)
from agc_core.planning import (
    ChunkTask,
    EntriesCache,
    even_ranges,
    plan_tasks,
    summarize_plan,
)
from agc_core.report import METRICS_FILE_NAME, build_metrics, write_metrics
from agc_core.results import (
    DEFAULT_CHUNKSIZE,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SEED,
    ChunkFailure,
    RunOptions,
    RunResult,
    SampleYield,
    WorkerStats,
)
from agc_core.resume import Journal, run_key
from agc_core.worker import (
    BACKENDS,
    ChunkResult,
    WorkerSetup,
    forkserver_warmup,
    init_worker,
    load_function,
    run_chunk,
)

__all__ = [
    "BACKENDS", "DEFAULT_CHUNKSIZE", "DEFAULT_OUTPUT_DIR", "DEFAULT_SEED", "ChunkFailure",
    "ChunkTask", "EntriesCache", "OrderedMerger", "RunOptions", "RunResult", "SampleYield",
    "even_ranges", "plan_tasks", "process_tasks", "run_analysis",
]

log = logging.getLogger(__name__)

SYSTEMATICS_CHOICES = ("all", "none")
IO_METRICS_FILE_NAME = "metrics_io.json"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class StageContext:
    """What a post-histogram stage gets: the merged histogram and where to write."""

    hist: bh.Histogram
    cfg: AnalysisConfig
    options: RunOptions
    output_dir: Path
    filled: tuple[tuple[str, str], ...]
    outputs: dict[str, Path]
    results: dict[str, Any] = field(default_factory=dict)  # stage results for RunResult
    plot_pool: Any = None  # agc_core.plots.PlotPool drawing in the background, or None


def _stage_plots(ctx: StageContext) -> dict[str, Path]:
    """Draw the seed's plots (skipped with ``plots=False``)."""
    if not ctx.options.plots:
        return {}
    from agc_core.plots import draw_all

    paths = draw_all(ctx.hist, ctx.cfg, ctx.output_dir / PLOTS_DIR,
                     classification=ctx.options.inference != "none", pool=ctx.plot_pool)
    return {f"plots/{p.name}": p for p in paths}  # with a pool: drawn by its finish()


def _stage_fit(ctx: StageContext) -> dict[str, Path]:
    """Workspace, fit, studies and fit plots (:func:`agc_core.inference.run_stage`;
    ``--no-fit``)."""
    from agc_core.inference.stage import run_stage

    return run_stage(ctx)


#: Stages run in order after histograms.root is written; each returns {output name: path}
#: and may leave results in ``ctx.results`` (copied into ``RunResult.stage_results``).
POST_STAGES: list[tuple[str, Callable[[StageContext], dict[str, Path]]]] = [
    ("plots", _stage_plots),
    ("fit", _stage_fit),
]


def _write_report(result: RunResult) -> None:
    """report.html of the run (a failure to write it is logged: the results are on disk)."""
    from agc_core.report_html import REPORT_FILE_NAME, write_report

    plots = [p for name, p in result.outputs.items() if name.startswith("plots/")]
    try:
        write_report(result.output_dir / REPORT_FILE_NAME,
                     result.stage_results.get("fit_result"), result, result.metrics, plots)
    except (OSError, ValueError) as exc:
        log.error("report.html not written: %s", exc)


def _resolve_fileset(options: RunOptions, cfg: AnalysisConfig,
                     status: Callable[[], str] | None = None) -> Path:
    if options.fileset is not None:
        return Path(options.fileset)
    from agc_core.synthetic import ensure_dataset

    log.info("no --fileset: using the embedded synthetic dataset")
    return Path(ensure_dataset(cfg=cfg, status=status))


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
    if not options.io_timeout > 0:
        raise ConfigError(f"--io-timeout must be a positive number of seconds, got "
                          f"{options.io_timeout}")
    starts_processes = (options.executor == "processes" and (options.start_method or
                        executors.DEFAULT_START_METHOD) != "fork") or (
        options.executor == "dask" and not options.scheduler_address)
    if starts_processes:
        where = mainguard.unguarded_call_site()
        if where is not None:
            raise ConfigError(mainguard.unguarded_message(where, options.executor))


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
    """The chunks' bar: in a terminal or a notebook by default (:mod:`agc_core.progress`)."""
    from agc_core.progress import progress_bar

    return progress_bar(total, enabled, unit="chunk", dynamic_ncols=True, desc="chunks",
                        leave=False)


def process_tasks(tasks: Sequence[ChunkTask], setup: WorkerSetup, options: RunOptions,
                  journal: Journal | None = None, early: Path | None = None,
                  ) -> tuple[OrderedMerger, list[ChunkResult], list[ChunkFailure], float, int,
                             float, Any]:
    """Run the tasks on the chosen executor, merging histograms in task order.

    A ``KeyboardInterrupt`` (or SIGTERM) stops the processing but keeps what was computed: the
    chunks not done are reported as failed (``interrupted``) and the run goes on to write its
    outputs. With a ``journal`` every finished chunk is recorded at once, and the chunks it
    already holds (``--resume``) are taken from it instead of being processed again.
    ``early``: the warm-up file of a fork server started by :func:`forkserver.start`.

    Returns:
        (merger, successful results without histograms, failures in task order, processing
        wall time, workers used, start-up seconds: until the first chunk began, the
        read-ahead's :class:`agc_core.io.prefetch.PrefetchStats` or None).
    """
    from agc_core.progress import redirect_logging

    merger = OrderedMerger(tasks)
    results: list[ChunkResult] = []
    failures: list[ChunkFailure] = []
    done: set[int] = set()
    recorded = journal.load(ChunkResult) if journal is not None and options.resume else {}
    for index in sorted(i for i in recorded if i < len(tasks)):
        merger.add(index, recorded[index].hist)
        results.append(replace(recorded[index], hist=None))
        done.add(index)
    if done:
        log.info("--resume: %d of %d chunks were done before, processing the other %d",
                 len(done), len(tasks), len(tasks) - len(done))
    todo = [t for t in tasks if t.index not in done]
    fn = functools.partial(run_chunk, setup)
    workers = 1 if options.executor == "iterative" else options.workers
    executor = executors.make_executor(
        options.executor, workers, scheduler_address=options.scheduler_address,
        start_method=options.start_method, max_retries=options.max_retries,
        retry_backoff=options.retry_backoff,
        preload=forkserver.preload(None if setup.io_only else setup.processor))
    bar = _progress_bar(len(todo), options.progress)
    events = 0
    first: float | None = None
    n_workers = executor.workers
    t0 = time.perf_counter()
    read_ahead = None
    try:
        redirect = redirect_logging(bar)
        warm = (forkserver_warmup(todo, setup, Path(options.output_dir), early)
                if options.executor == "processes" else contextlib.nullcontext())
        read_ahead = remote_inputs.prefetcher(todo, setup, options, executor.workers)
        ready = read_ahead.wait if read_ahead is not None and read_ahead.active else None
        with executor, redirect, warm, _sigterm_interrupts(), read_ahead or \
                contextlib.nullcontext():
            for outcome in executor.run(fn, todo, init_worker, (setup,), ready=ready):
                task = todo[outcome.index]
                done.add(task.index)
                if read_ahead is not None:
                    read_ahead.finished(outcome.index, outcome.value.t_read
                                        + outcome.value.t_process if outcome.ok else 0.0)
                if outcome.ok:
                    r: ChunkResult = outcome.value
                    if journal is not None:
                        journal.record(r)
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
    return (merger, results, failures, time.perf_counter() - t0, n_workers, first or 0.0,
            None if read_ahead is None else read_ahead.stats)


@contextlib.contextmanager
def _sigterm_interrupts() -> Any:
    """While processing, SIGTERM stops the run as Ctrl-C does (outputs and records kept)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
       the branches read, :func:`agc_core.io.chunk_ranges`) and basket layout, remembered in the
       user's cache folder (``plans/``, :class:`agc_core.planning.EntriesCache`) keyed by path
       or URL, size, ROOT UUID (and mtime); remote files are planned concurrently. Remote chunks
       are read ahead into the byte cache (:mod:`agc_core.io.prefetch`). A task is (sample, file,
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
       stages are listed in :data:`POST_STAGES` (plots, then workspace + fit + fit plots);
       ``report.html`` comes last.

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


def _prepare_fit(options: RunOptions) -> threading.Thread | None:
    """:func:`agc_core.inference.prepare` in a thread while the workers start and process (this
    process only waits then); best effort: a failure only leaves the loading to the fit."""
    if not options.fit or options.io_only:
        return None

    def prepare() -> None:
        try:
            from agc_core.inference.stage import prepare

            prepare()
        except Exception as exc:  # the fit stage loads (and reports) it again
            log.debug("fit warm-up skipped: %s: %s", type(exc).__name__, exc)

    thread = threading.Thread(target=prepare, name="fit-warm-up", daemon=True)
    thread.start()
    return thread


def _run(options: RunOptions, cfg: AnalysisConfig, out: Path, log_setup: LogSetup,
         t_start: float) -> RunResult:
    early = forkserver.take_early()  # python -m agc_core run started it first thing
    if early is None and options.executor == "processes" and (
            options.start_method or executors.DEFAULT_START_METHOD) == "forkserver":
        # the fork server starts (imports) while this process loads, checks and plans
        early = forkserver.start_for_run(BACKENDS.get(options.processor, options.processor),
                                         options.io_only, str(cfg.path), out)
    try:
        return _run_with(options, cfg, out, log_setup, t_start, early)
    finally:
        if early is not None:
            early.unlink(missing_ok=True)


def _plan(samples: Sequence[SampleFiles], branches: tuple[str, ...], options: RunOptions,
          cache: EntriesCache, speculation: Any) -> tuple[list[ChunkTask], list[ChunkFailure]]:
    """:func:`plan_tasks` with the run's options (a bar of the files once it takes more than a
    second: thousands of new remote files take a while); the plan cache saved, files closed."""
    from agc_core import io
    from agc_core.progress import progress_bar

    bar = progress_bar(sum(len(s.files) for s in samples), options.progress, unit="file",
                       desc="planning", delay=1.0, leave=False)
    try:
        planned = plan_tasks(samples, branches, options.chunksize, options.tree, cache,
                             options.max_retries, options.retry_backoff, speculation,
                             bar.update)
    finally:
        bar.close()
    cache.save()
    io.close_files()
    if speculation is not None:
        speculation.start()  # the assumed files probed while their chunks are processed
    return planned


def _journal(out: Path, tasks: Sequence[ChunkTask], options: RunOptions, setup: WorkerSetup,
             cfg: AnalysisConfig) -> Journal | None:
    """The records of the chunks this run finishes (None in the I/O-only mode)."""
    if options.io_only:
        return None
    model_dir = None if options.model_dir is None else str(options.model_dir)
    return Journal(out, run_key(tasks, {
        "seed": options.seed, "inference": options.inference, "model_dir": model_dir,
        "systematics": options.systematics, "config": cfg.path.read_text(),
        "processor": setup.processor, "branches": setup.branches, "tree": options.tree}),
        options.resume)


def _run_with(options: RunOptions, cfg: AnalysisConfig, out: Path, log_setup: LogSetup,
              t_start: float, early: Path | None) -> RunResult:
    stage_times: dict[str, float] = {}
    t = time.perf_counter()
    run_started = time.time()
    # loaded once here (fails early on missing weights) and handed to the workers
    classifier = None if options.io_only else load_classifier(options.inference, options.model_dir,
                                                                 cfg)
    compile_first = not options.io_only and options.processor == "kernels" and not kernels_cached(
        mlp=options.inference == "numba")
    # first run: compile in a forked process while the dataset is generated and planned
    background = start_background_compile(cfg, classifier) if compile_first else None
    fileset = _resolve_fileset(options, cfg, background.describe if background else None)
    samples = load_fileset(fileset, cfg, options.n_files_max_per_sample)
    if options.systematics == "none":
        samples = [s for s in samples if s.variation == "nominal"]
    branches = (tuple(cfg.io_branch_sets[options.io_file_percent]) if options.io_only
                else tuple(cfg.analysis_branches))
    cache_root = bytecache.cache_folder(options.cache_dir)
    cache = EntriesCache(cache_root / bytecache.PLANS_DIR if options.cache else None)
    byte_dir, spool = remote_inputs.byte_cache_dir(samples, options, cache_root, out)
    model_dir = None if options.model_dir is None else str(options.model_dir)
    setup = WorkerSetup(str(cfg.path), options.inference, model_dir, options.seed,
                        options.io_only,
                        branches, options.tree, options.systematics == "none", log_setup,
                        BACKENDS.get(options.processor, options.processor), classifier,
                        options.io_timeout, byte_dir, options.cache_size, run_started)
    early, clf_file = remote_inputs.release_fork_server(early, samples, setup, out)
    set_io_timeout(options.io_timeout)  # here and (inherited, and in init_worker) in workers
    speculation = remote_inputs.speculation(options, setup)  # warm remote files: no probe
    tasks, plan_failures = _plan(samples, branches, options, cache, speculation)
    stage_times["plan"] = time.perf_counter() - t
    log.info("plan: %s: %d samples, %s to read (chunks of up to %d entries), executor %s",
             fileset, len(samples), summarize_plan(tasks).describe(), options.chunksize,
             options.executor)
    if compile_first:
        t = time.perf_counter()
        if background is not None and background.wait():
            stage_times["compile"] = background.seconds  # overlapped with generation, planning
            stage_times["compile_wait"] = time.perf_counter() - t
        else:
            log.info("compiling the numba kernels (first run; cached for later runs)")
            compile_kernels(cfg, classifier)
            stage_times["compile"] = time.perf_counter() - t  # not in the processing wall time
    prepared = _prepare_fit(options)
    walltime = 0.0
    try:
        while True:  # twice only when a file was not as its cached plan assumed
            journal = _journal(out, tasks, options, setup, cfg)
            merger, results, failures, seconds, n_workers, first, prefetched = process_tasks(
                tasks, setup, options, journal, early)
            t = time.perf_counter()
            changed = [] if speculation is None else speculation.changed()
            walltime += seconds + time.perf_counter() - t  # outputs wait for the confirmation
            if not changed:
                break
            log.warning("%d remote file(s) not as their cached plan assumed, planning and "
                        "processing again:\n  %s", len(changed), "\n  ".join(changed[:20]))
            t = time.perf_counter()
            speculation = early = None  # nothing of the assumed plan is kept
            tasks, plan_failures = _plan(samples, branches, options, cache, None)
            stage_times["plan"] += time.perf_counter() - t
    finally:
        remote_inputs.close_byte_cache(byte_dir, spool, options, clf_file)
    if prepared is not None:
        prepared.join()
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
        plot_pool = None
        if done and options.plots:  # plots drawn in the background while the fit runs
            from agc_core.plots import PlotPool

            plot_pool = PlotPool.background()
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
            outputs[FULL_UHI_FILE_NAME] = save_uhi_histogram(hist, out / FULL_UHI_FILE_NAME)
        else:
            log.error("no chunk succeeded: no histograms written")
        stage_times["write"] = time.perf_counter() - t
        if done:
            ctx = StageContext(hist, cfg, options, out, filled, outputs, plot_pool=plot_pool)
            try:
                for name, stage in POST_STAGES:
                    t = time.perf_counter()
                    stage_outputs = stage(ctx)
                    outputs.update(stage_outputs)
                    stage_results[name] = stage_outputs
                    stage_times[name] = time.perf_counter() - t
                fit_result = ctx.results.get("fit_result")
                waited = getattr(fit_result, "seconds", {}).get("plots", 0.0)
                if plot_pool is not None and waited and "fit" in stage_times:
                    # the fit stage's wait for the plot processes counts as plots, not fit
                    stage_times["fit"] -= waited
                    stage_times["plots"] = stage_times.get("plots", 0.0) + waited
                if plot_pool is not None:  # the plots still being drawn; failed ones dropped
                    t = time.perf_counter()
                    plot_pool.finish()
                    for failed in plot_pool.failed:
                        outputs.pop(f"plots/{failed}", None)
                        for stage_outputs in stage_results.values():
                            stage_outputs.pop(f"plots/{failed}", None)
                    stage_times["plots"] = (stage_times.get("plots", 0.0)
                                            + time.perf_counter() - t)
            finally:
                if plot_pool is not None:
                    plot_pool.close()
            stage_results.update(ctx.results)

    metrics_name = IO_METRICS_FILE_NAME if options.io_only else METRICS_FILE_NAME
    outputs[metrics_name] = out / metrics_name
    outputs["log"] = Path(log_setup.log_file) if log_setup.log_file else out
    if not options.io_only:
        from agc_core.report_html import REPORT_FILE_NAME

        outputs[REPORT_FILE_NAME] = out / REPORT_FILE_NAME  # written after metrics.json
    ordered = sorted(results, key=lambda r: r.index)
    skipped = tuple(m for r in ordered for m in r.skipped)
    result = RunResult(
        options=options,
        complete=not failures and not skipped,
        failures=tuple(failures),
        n_chunks=len(tasks) + len(plan_failures),
        n_events=sum(r.n_events for r in results),
        bytes_read=sum(r.bytes_read for r in results),
        bytes_from_network=sum(r.bytes_network for r in results) + (
            prefetched.bytes_network if prefetched is not None else 0),
        bytes_from_cache=sum(r.bytes_cache for r in results),
        prefetch=prefetched.as_dict() if prefetched is not None else None,
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
        input_warnings=tuple(m for r in ordered for m in r.input_warnings) + skipped,
        skipped_events=skipped,
    )
    result = replace(result, total_walltime=time.perf_counter() - t_start)
    if journal is not None and result.complete:
        journal.clear()  # nothing left to resume
    metrics = build_metrics(result)
    metrics["events_skipped"] = len(skipped)  # absurd multiplicities: named in input_warnings
    metrics["skipped_events"] = list(skipped)
    write_metrics(metrics, out / metrics_name)
    result = replace(result, metrics=metrics)
    if not options.io_only:
        _write_report(result)
    level = logging.INFO if result.complete else logging.ERROR
    log.log(level, "run %s: %d events, %d chunks (%d failed), %.2f s, %.0f events/s",
            "complete" if result.complete else "INCOMPLETE", result.n_events, result.n_chunks,
            len(result.failures), walltime, result.event_rate)
    return result
