"""What a run is told and what it returns: small frozen containers (no behaviour of the run)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boost_histogram as bh

from agc_core.io.remote import DEFAULT_IO_TIMEOUT
from agc_core.retry import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BACKOFF

DEFAULT_CHUNKSIZE = 500_000
DEFAULT_SEED = 0
DEFAULT_OUTPUT_DIR = Path("agc_output")


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
        max_retries: retries of a failing chunk (exceptions other than bad input, transient
            network errors, dead workers).
        retry_backoff: seconds before the first retry of a chunk, doubled for each further one.
        io_timeout: seconds a remote read (http(s), root://) may wait for a connection or for
            the next bytes of an answer before it fails (and is retried).
        resume: take the chunks an interrupted run with the same plan and settings finished
            (recorded in ``output_dir/resume/``) and process only the others.
        plots: draw the PNG plots.
        progress: show a progress bar (None: in a terminal or a Jupyter notebook).
        start_method: multiprocessing start method of the process pool (None: forkserver on
            Linux, spawn elsewhere).
        tree: the TTree name in the input files.
        log_level: level of the shared log file (INFO, or DEBUG for ``--verbose``).
        processor: the chunk processor: ``kernels`` (the numba kernels, default),
            ``reference`` (the awkward reference of the seed: the same histograms, slowly; an
            end-to-end cross-check) or any ``module:function`` with the same signature.
        fit: build the workspace and fit it after the histograms (``--no-fit``: stop there).
        fit_config: fit YAML (None: the packaged ``configs/fit.yaml``).
        split_by_classification: fit each region as two channels by MLP classification.
        fit_ranking: rank the nuisance parameters by impact (None: when plots are drawn).
        fit_scan: profile-likelihood scan of the POI (None: when plots are drawn).
        cache: keep what remote inputs cost to fetch in the user's cache folder: their plans
            (entries, basket layouts) and the bytes of their baskets (``--no-cache``: neither
            is read or written; read-ahead still works, through a spool deleted at the end).
        cache_dir: the cache folder (None: ``$AGC_CORE_CACHE``, else ``~/.cache/agc-core``).
        read_ahead: fetch the next remote chunks' baskets while the workers process the
            current ones (:mod:`agc_core.io.prefetch`); ``--no-read-ahead``: each worker fetches
            its own chunk when it starts it.
        cache_size: the byte cache's bound in bytes (None: ``$AGC_CORE_CACHE_SIZE``, else
            :data:`agc_core.io.cache.DEFAULT_MAX_BYTES`); the least recently used go first.
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
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    io_timeout: float = DEFAULT_IO_TIMEOUT
    resume: bool = False
    plots: bool = True
    progress: bool | None = None
    start_method: str | None = None
    tree: str = "events"
    log_level: int = logging.INFO
    processor: str = "kernels"
    fit: bool = True
    fit_config: str | Path | None = None
    split_by_classification: bool = False
    fit_ranking: bool | None = None
    fit_scan: bool | None = None
    cache: bool = True
    cache_dir: str | Path | None = None
    cache_size: int | None = None
    read_ahead: bool = True


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


@dataclass(frozen=True, repr=False)
class RunResult:
    """The result of :func:`run_analysis` (shown as a few lines, or a small table in a notebook:
    :mod:`agc_core.display`).

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
        stage_times: seconds per stage (plan, startup, read, process, merge, write, fit: its
            own work, plots: the plot processes waited for...).
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
            pt or energy), one message per chunk and branch, in task order; and one message per
            skipped event.
        skipped_events: events skipped for an absurd multiplicity (file, entry, collection,
            count), in task order; a run with skipped events is not complete.
        metrics: the metrics.json record.
        bytes_from_network: bytes of remote inputs fetched from their servers (planning's
            header probes not included; the read-ahead's fetches included).
        bytes_from_cache: bytes of remote inputs the workers took from the byte cache that
            earlier runs had filled (what this run's own read-ahead fetched is not counted).
        prefetch: what the read-ahead did (:class:`agc_core.io.prefetch.PrefetchStats`), None
            without remote inputs.
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
    skipped_events: tuple[str, ...] = ()
    bytes_from_network: int = 0
    bytes_from_cache: int = 0
    prefetch: dict[str, Any] | None = None

    @property
    def event_rate(self) -> float:
        """Events per second of the processing stage (all workers)."""
        return self.n_events / self.walltime if self.walltime > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when complete (or incomplete but ``allow_partial``) and the fit (if any)
        converged, else 1."""
        if self.stage_results.get("fit_error"):
            return 1
        return 0 if self.complete or self.options.allow_partial else 1

    def __repr__(self) -> str:
        """A few lines: state, events, rates, the fit, the histogram's axes, the outputs."""
        from agc_core.display import run_text

        return run_text(self)

    def _repr_html_(self) -> str:
        """The same as a small HTML table (what a notebook shows)."""
        from agc_core.display import run_html

        return run_html(self)
