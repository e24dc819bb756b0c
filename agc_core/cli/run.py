"""``python -m agc_core run``: process a fileset into histograms, fit, write the report
(:func:`agc_core.runner.run_analysis`)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agc_core.cli.formatting import HelpFormatter, size


def options_from_args(args: argparse.Namespace) -> Any:
    """Build :class:`agc_core.results.RunOptions` from the parsed ``run`` arguments."""
    from agc_core.results import RunOptions

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
        retry_backoff=args.retry_backoff,
        io_timeout=args.io_timeout,
        resume=args.resume,
        plots=not args.no_plots,
        progress=False if quiet else None,
        start_method=args.start_method,
        log_level=logging.DEBUG if verbose else logging.INFO,
        processor=args.backend,
        fit=not args.no_fit,
        fit_config=args.fit_config,
        split_by_classification=args.split_by_classification,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        read_ahead=not args.no_read_ahead,
    )


def run_command(args: argparse.Namespace) -> int:
    """``python -m agc_core run``: run, print the summary, exit 0 only when complete."""
    from agc_core.report import format_summary
    from agc_core.runner import run_analysis

    options = options_from_args(args)
    if args.scheduler_address and args.executor != "dask":
        options = replace(options, executor="dask")
    result = run_analysis(options)
    if not getattr(args, "quiet", False) or not result.complete:
        print(format_summary(result))
    if not result.complete:
        skipped = len(getattr(result, "skipped_events", ()))
        print(f"agc_core run: {len(result.failures)} chunk(s) failed"
              + (f", {skipped} event(s) skipped" if skipped else "") + ", the results are "
              "incomplete" + (" (--allow-partial: exit code 0)" if options.allow_partial
                               else ""), file=sys.stderr)
    return result.exit_code


def add_parser(subparsers: Any) -> None:
    """Register the ``run`` subcommand."""
    from agc_core import executors, retry
    from agc_core.classifier import INFERENCE_KINDS
    from agc_core.config import load_analysis_config
    from agc_core.io.remote import DEFAULT_IO_TIMEOUT
    from agc_core.results import DEFAULT_CHUNKSIZE, DEFAULT_OUTPUT_DIR, DEFAULT_SEED
    from agc_core.runner import SYSTEMATICS_CHOICES
    from agc_core.worker import BACKENDS

    parser = subparsers.add_parser(
        "run", help="process a fileset into histograms, fit ttbar_norm, write the report",
        description="Run the AGC ttbar analysis: chunked processing on a process pool (or in "
                    "process, or on Dask), histograms for the fit (histograms.root), the full "
                    "histogram (histograms_full.npz), metrics.json, plots, the pyhf workspace "
                    "(workspace.json) and its fit (fit_results.json), report.html. Exit code 0 "
                    "only when every chunk succeeded (or --allow-partial) and the fit "
                    "converged.",
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
                   help="folder with MLP weights written by 'python -m agc_core train', "
                        "or with the seed's trained_model_4j1b.pt / trained_model_4j2b.pt "
                        "state_dicts (run on raw features) (default: the weights shipped in "
                        "models/)")
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
    g.add_argument("--max-retries", type=int, default=retry.DEFAULT_MAX_RETRIES,
                   help="retries of a chunk whose worker died or raised, or whose remote "
                        "read failed on a network error (not for bad input)")
    g.add_argument("--retry-backoff", type=float, default=retry.DEFAULT_RETRY_BACKOFF,
                   help="seconds before the first retry, doubled for each further one")
    g.add_argument("--io-timeout", type=float, default=DEFAULT_IO_TIMEOUT,
                   help="seconds a remote read (https, http, root://) may wait for a "
                        "connection or the next bytes before it fails and is retried")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="the cache of remote inputs (plans and fetched bytes; default: "
                        "$AGC_CORE_CACHE or ~/.cache/agc-core); see `python -m agc_core cache`")
    g.add_argument("--no-cache", action="store_true",
                   help="remote inputs: neither read nor write the cache (plan every file, "
                        "fetch every byte; read-ahead goes through a spool deleted at the end)")
    g.add_argument("--cache-size", type=size, default=None, metavar="SIZE",
                   help="bound of the byte cache, e.g. 50GB (default: $AGC_CORE_CACHE_SIZE or "
                        "20GB); the least recently used ranges go first")
    g.add_argument("--no-read-ahead", action="store_true",
                   help="remote inputs: each worker fetches its chunk when it starts it, "
                        "instead of the next chunks being fetched while the workers compute")
    g.add_argument("--start-method", choices=("forkserver", "spawn", "fork"), default=None,
                   help="multiprocessing start method of the process pool (default: "
                        "forkserver on Linux)")
    g.add_argument("--resume", action="store_true",
                   help="after an interrupted run (Ctrl-C, SIGTERM, a crash): process only the "
                        "chunks it did not finish (same --output-dir and settings)")
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
    g = parser.add_argument_group("fit")
    g.add_argument("--no-fit", action="store_true",
                   help="stop at the histograms (no workspace, fit or fit plots)")
    g.add_argument("--fit-config", type=Path, default=None,
                   help="fit configuration YAML (default: the packaged fit.yaml)")
    g.add_argument("--split-by-classification", action="store_true",
                   help="fit each region as two channels by MLP classification")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug output (also in agc.log)")
    parser.set_defaults(func=run_command)
