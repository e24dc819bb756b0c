"""Run report: the metrics.json record and the printed summary of a run."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agc_core.outputs import write_text_atomic

if TYPE_CHECKING:
    from agc_core.results import RunResult

log = logging.getLogger(__name__)

METRICS_FILE_NAME = "metrics.json"
METRICS_VERSION = 1

# distributions whose versions go into metrics.json
PACKAGES = ("agc-core", "numpy", "numba", "uproot", "awkward", "boost-histogram", "torch",
            "pyhf", "iminuit", "matplotlib", "dask", "distributed", "lz4", "zstandard")

# the fields metrics.json always has (see :func:`build_metrics`)
METRICS_FIELDS = (
    "metrics_version", "timestamp", "complete", "mode",
    # the seed's own metric names (coffea's savemetrics plus the notebook's additions)
    "walltime", "processtime", "entries", "bytesread", "chunks", "columns", "num_workers",
    "use_dask", "systematics", "n_files_max_per_sample", "pipeline", "cores_per_worker",
    "chunksize", "disable_processing", "io_file_percent", "dataset_source", "af",
    # ours
    "executor", "scheduler_address", "inference", "seed", "fileset", "output_dir",
    "total_walltime", "cputime", "event_rate_hz", "event_rate_per_worker_hz",
    "event_rate_processtime_hz", "event_rate_steady_hz", "event_rate_cputime_hz",
    "read_rate_mb_s", "stage_times_s", "workers",
    "chunks_failed", "bytes_from_network", "bytes_from_cache", "prefetch",
    "failed_chunks", "input_warnings", "yields", "accuracy", "outputs", "fit",
    "versions",
    "git_commit", "host",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter for the results (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the source checkout (with ``-dirty`` when modified), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def accuracy_data(result: RunResult) -> str:
    """Whether the MLP accuracy of a run is measured on the networks' training events.

    The shipped networks are trained on synthetic events of another generator seed than the
    embedded dataset's (their scaler files record ``data_seed`` and ``generator``), so on the
    embedded dataset the accuracy is a held-out one.
    """
    from agc_core.config import load_analysis_config
    from agc_core.models.weights import load_all_weights

    try:
        cfg = load_analysis_config(result.options.config)
        meta = next(iter(load_all_weights(cfg, result.options.model_dir).values())).metadata
    except Exception:  # the note is informative only; the run itself loaded the weights
        return "training data unknown"
    seed, trained_on = meta.get("data_seed"), meta.get("dataset", "unknown data")
    if result.options.fileset is None and seed is not None:
        if seed == cfg.dataset.seed:
            return f"on the training events: trained on the embedded dataset's seed {seed}"
        return (f"held out: trained on generator seed {seed}, this is the embedded dataset, "
                f"seed {cfg.dataset.seed}")
    if result.options.fileset is not None and trained_on == Path(result.fileset).name:
        return f"on the training fileset {trained_on}"
    return f"networks trained on {trained_on}"


def build_metrics(result: RunResult) -> dict[str, Any]:
    """The metrics.json record of a run (every key of :data:`METRICS_FIELDS`).

    Seed names: ``walltime`` (s, the processing stage: from submitting the first chunk to
    receiving the last), ``processtime`` (s, summed over chunks of the time workers spent
    reading and processing), ``entries`` (events), ``bytesread`` (compressed bytes read),
    ``chunks``, ``columns`` (branches read), ``num_workers``, ``chunksize``, ...
    Ours: ``total_walltime`` (s, the whole call), ``cputime`` (s, worker CPU time),
    ``event_rate_hz`` (entries / walltime), ``event_rate_per_worker_hz`` (that / workers),
    ``event_rate_processtime_hz`` (entries / processtime: the rate of one busy worker),
    ``event_rate_steady_hz`` (entries / (walltime - worker start-up before the first chunk)),
    ``event_rate_cputime_hz`` (entries / cputime: events per CPU second),
    ``read_rate_mb_s`` (bytesread / walltime, 1 MB = 1e6 B), ``stage_times_s`` (read and
    process time summed over chunks), ``workers`` (per worker: chunks, events, busy time,
    CPU time, peak RSS in MB, rate), ``failed_chunks`` (sample, file, entry range, error),
    ``input_warnings`` (suspicious input values: chunk, branch, counts, first entry),
    ``yields`` (per sample and region: raw and weighted selected events), ``accuracy`` (per
    region and process), ``outputs`` (file paths), ``versions``, ``git_commit``.
    """
    o = result.options
    wall = result.walltime
    n_workers = max(1, result.num_workers)
    rate = result.n_events / wall if wall > 0 else 0.0
    steady = wall - result.stage_times.get("worker_startup", 0.0)
    metrics: dict[str, Any] = {
        "metrics_version": METRICS_VERSION,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": result.complete,
        "mode": "io_only" if o.io_only else "analysis",
        "walltime": wall,
        "processtime": result.processtime,
        "entries": result.n_events,
        "bytesread": result.bytes_read,
        "chunks": result.n_chunks,
        "columns": list(result.columns),
        "num_workers": result.num_workers,
        "use_dask": o.executor == "dask",
        "systematics": o.systematics,
        "n_files_max_per_sample": o.n_files_max_per_sample,
        "pipeline": "agc-core",
        "cores_per_worker": 1,
        "chunksize": o.chunksize,
        "disable_processing": o.io_only,
        "io_file_percent": o.io_file_percent if o.io_only else None,
        "dataset_source": result.dataset_source,
        "af": platform.node(),
        "executor": o.executor,
        "scheduler_address": o.scheduler_address,
        "inference": None if o.io_only else result.inference,
        "seed": o.seed,
        "fileset": str(result.fileset),
        "output_dir": str(result.output_dir),
        "total_walltime": result.total_walltime,
        "cputime": result.cputime,
        "event_rate_hz": rate,
        "event_rate_per_worker_hz": rate / n_workers,
        "event_rate_processtime_hz": (result.n_events / result.processtime
                                      if result.processtime > 0 else 0.0),
        "event_rate_steady_hz": (result.n_events / steady if steady > 0 else 0.0),
        "event_rate_cputime_hz": (result.n_events / result.cputime
                                  if result.cputime > 0 else 0.0),
        "read_rate_mb_s": result.bytes_read / 1e6 / wall if wall > 0 else 0.0,
        "stage_times_s": dict(result.stage_times),
        "workers": [w.as_dict() for w in result.workers],
        "chunks_failed": len(result.failures),
        "bytes_from_network": result.bytes_from_network,
        "bytes_from_cache": result.bytes_from_cache,
        "prefetch": result.prefetch,
        "failed_chunks": [f.as_dict() for f in result.failures],
        "input_warnings": list(result.input_warnings),
        "yields": [y.as_dict() for y in result.yields],
        "accuracy": dict(result.accuracy),
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "fit": _fit_metrics(result),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": {"node": platform.node(), "platform": platform.platform(),
                 "cpus": _cpu_count(), "argv": sys.argv},
    }
    return _jsonable(metrics)


def _fit_metrics(result: RunResult) -> dict[str, Any] | None:
    """The fit stage's compact record (POI, HESSE, MINOS, diagnostics, GoF), or why not."""
    fit = result.stage_results.get("fit_result")
    if fit is not None:
        return fit.metrics()
    for key in ("fit_error", "fit_skipped"):
        if result.stage_results.get(key):
            return {"ok": key != "fit_error", key.split("_")[1]: result.stage_results[key]}
    return None


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write metrics.json atomically (indented, keys in insertion order)."""
    return write_text_atomic(path, json.dumps(_jsonable(metrics), indent=2) + "\n")


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.1f} "


def format_summary(result: RunResult) -> str:
    """A short human-readable summary of a run (what the CLI prints)."""
    o = result.options
    lines = []
    state = "complete" if result.complete else (
        f"INCOMPLETE: {len(result.failures)} of {result.n_chunks} chunks failed")
    mode = f"I/O only ({o.io_file_percent} % branch set)" if o.io_only else "analysis"
    lines.append(f"agc_core run ({mode}): {state}")
    lines.append(f"  events processed : {result.n_events:,} in {result.n_chunks} chunks "
                 f"({result.num_workers} x {o.executor} workers)")
    wall = result.walltime
    if wall > 0:
        rate = result.n_events / wall
        lines.append(f"  event rate       : {_si(rate)}Hz total, "
                     f"{_si(rate / max(1, result.num_workers))}Hz per worker "
                     f"({'reading' if o.io_only else 'processing'} stage {wall:.2f} s, whole "
                     f"run {result.total_walltime:.2f} s)")
        lines.append(f"  data read        : {result.bytes_read / 1e6:.1f} MB "
                     f"({result.bytes_read / 1e6 / wall:.1f} MB/s)")
    if result.bytes_from_network or result.bytes_from_cache:
        lines.append(f"  remote inputs    : {result.bytes_from_network / 1e6:,.1f} MB from the "
                     f"network, {result.bytes_from_cache / 1e6:,.1f} MB from the cache "
                     f"({'--no-cache' if not o.cache else 'cache folder ' + str(_cache_dir(o))})")
    if result.stage_times.get("compile"):
        wait = result.stage_times.get("compile_wait")
        how = ("alongside the dataset generation and planning, then waited "
               f"{wait:.1f} s" if wait is not None else "before processing")
        lines.append(f"  numba kernels    : compiled on this first run in "
                     f"{result.stage_times['compile']:.1f} s, {how} (not in the event rate); "
                     f"cached for later runs")
    if result.yields:
        width = max(len(f"{y.process} {y.variation}") for y in result.yields)
        lines.append(f"  selected events  : {'sample':<{width}}  "
                     + "  ".join(f"{r + ' raw':>10} {r + ' weighted':>14}"
                                 for r in result.yields[0].raw))
        for y in result.yields:
            cells = "  ".join(f"{y.raw[r]:>10,} {y.weighted[r]:>14,.1f}" for r in y.raw)
            lines.append(f"  {'':<17}  {y.process + ' ' + y.variation:<{width}}  {cells}")
    shown_data = False
    for region, acc in result.accuracy.items():
        if "overall" in acc:
            note = "" if shown_data else f" ({accuracy_data(result)})"
            shown_data = True
            lines.append(f"  MLP accuracy     : {region} {acc['overall']:.4f}{note}")
    fit = result.stage_results.get("fit_result")
    shown_fit = 3
    if fit is not None:
        lines.append(f"  fit              : {fit.summary_line()}")
        if fit.gof is not None:
            lines.append(f"  goodness of fit  : p = {fit.gof.p_value:.3f} ({fit.gof.ndof} dof; the "
                         "pseudodata are MC sums, not Poisson-fluctuated: p near 1 expected)")
        for message in fit.errors:
            lines.append(f"  FIT FAILED       : {message}")
        for message in fit.study_errors[:shown_fit]:
            lines.append(f"  fit study failed : {message}")
        if len(fit.study_errors) > shown_fit:
            lines.append(f"  fit study failed : ... {len(fit.study_errors) - shown_fit} more "
                         "(fit_results.json, report.html)")
    elif result.stage_results.get("fit_error"):
        lines.append(f"  FIT FAILED       : {result.stage_results['fit_error']}")
    elif result.stage_results.get("fit_skipped"):
        lines.append(f"  fit skipped      : {result.stage_results['fit_skipped']}")
    for failure in result.failures:
        lines.append(f"  FAILED chunk     : {failure.describe()}")
    shown = 5
    for message in result.input_warnings[:shown]:
        lines.append(f"  input warning    : {message}")
    if len(result.input_warnings) > shown:
        lines.append(f"  input warning    : ... {len(result.input_warnings) - shown} more "
                     "(metrics.json, agc.log)")
    if result.outputs:
        lines.append(f"  outputs in       : {result.output_dir}")
        plots = [p for name, p in result.outputs.items() if name.startswith("plots/")]
        for name, path in result.outputs.items():
            if not name.startswith("plots/"):
                lines.append(f"    {name:<20} {path}")
        if plots:
            lines.append(f"    {'plots':<20} {plots[0].parent} ({len(plots)} PNG files)")
    return "\n".join(lines)


def _cache_dir(options: Any) -> Any:
    from agc_core.io.cache import cache_folder

    return cache_folder(options.cache_dir)
