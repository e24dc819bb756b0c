"""The ``e2e`` section: ``python -m agc_core run`` end to end, processing vs I/O-only rate
with 1 and 2 workers, memory per worker, the warm and the first run of the command line."""

from __future__ import annotations

import logging
import time
from typing import Any

from agc_core.bench.sections import register_section
from agc_core.bench.table import BenchTable
from agc_core.config import AnalysisConfig

log = logging.getLogger(__name__)


def _repeated_fileset(fileset: Any, copies: int, out: Any) -> Any:
    """A fileset listing every file of ``fileset`` ``copies`` times (a bigger dataset, same
    files: for the memory-versus-dataset-size check)."""
    import json
    from pathlib import Path

    from agc_core.fileset import read_fileset_json, resolve_path

    src = Path(fileset).resolve()
    raw = read_fileset_json(src)
    for variations in raw.values():
        for body in variations.values():
            files = [{**f, "path": resolve_path(f["path"], src.parent)}  # nevts, entries
                     for f in body["files"]]
            body["files"] = files * copies
    path = Path(out) / f"fileset_x{copies}.json"
    path.write_text(json.dumps(raw))
    return path


#: label of the e2e rows on ``--scaling-fileset``
SCALING = "scaling set:"
#: events of the one-file dataset the e2e section reads in chunks of the default size
BIG_FILE_EVENTS = 1_000_000


def _big_fileset(cfg: AnalysisConfig, events: int) -> Any:
    """A fileset of one ttbar nominal file of ``events`` events (generated once, cached
    beside the embedded dataset), so chunks can have the default size (the embedded files
    hold 100,000 events)."""
    import json

    import uproot

    from agc_core.synthetic import default_data_dir, resolve_params, write_sample_file

    folder = default_data_dir().with_name(default_data_dir().name + f"-bench-{events}")
    path = folder / "ttbar__nominal" / "0.root"
    try:
        with uproot.open(path) as f:
            ok = f[cfg.dataset.tree].num_entries == events
    except Exception:  # missing or unreadable: (re)generate
        ok = False
    if not ok:
        log.warning("e2e: generating one %d-event file in %s (once)", events, folder)
        params = resolve_params(cfg, events, 1, None, None, None)
        write_sample_file(path, "ttbar", "nominal", 0, params, cfg)
    fileset = folder / "fileset.json"
    fileset.write_text(json.dumps({"ttbar": {"nominal": {"files": [
        {"path": "ttbar__nominal/0.root", "nevts": events}]}}}))
    return fileset


def _timed_cli(argv: list[str], cwd: str, env: dict[str, str] | None = None
               ) -> tuple[float, dict[str, Any]]:
    """Wall time of ``python -m agc_core ARGV`` in a fresh interpreter, and its metrics.json
    (``--output-dir`` must be in ARGV)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agc_core", *argv], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        log.warning("e2e: %s exited with %d: %s", " ".join(argv), done.returncode,
                    done.stderr.strip().splitlines()[-1:] or "")
    out = Path(cwd) / argv[argv.index("--output-dir") + 1] / "metrics.json"
    try:
        metrics = json.loads(out.read_text())
    except (OSError, ValueError):
        metrics = {}
    return wall, metrics


def e2e_cli_runs(fileset: Any, tmp: str, repeat: int, first_run: bool
                 ) -> tuple[float, float | None, dict[str, float]]:
    """The warm default run (``python -m agc_core run`` on the cached dataset, plots and fit,
    into the output folder of an untimed run before it; best of ``repeat``) and the first run
    of a fresh install (a new dataset folder and numba cache: generation and compilation
    included).

    Returns:
        (warm wall s, first-run wall s or None, the first run's stage times).
    """
    import os

    # a warm run: dataset and numba cache as a user's second run finds them, and its output
    # folder (the plans and basket layouts the first run recorded are in the cache folder)
    argv = ["run", "--fileset", str(fileset), "--output-dir", os.path.join(tmp, "warm")]
    _timed_cli(argv, tmp)
    warm = min(_timed_cli(argv, tmp)[0] for _ in range(repeat))
    if not first_run:
        return warm, None, {}
    wall, metrics = _timed_cli(["run", "--output-dir", "first"], tmp, {
        "AGC_CORE_DATA": os.path.join(tmp, "first-data"),
        "NUMBA_CACHE_DIR": os.path.join(tmp, "first-numba")})
    return warm, wall, dict(metrics.get("stage_times_s", {}))


@register_section("e2e", "python -m agc_core run end to end: processing vs I/O-only rate, "
                         "1 vs 2 workers, peak memory per worker, warm and first run")
def bench_e2e(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Time ``run_analysis`` (process pool) on the embedded dataset, processing and I/O only,
    and the ``python -m agc_core run`` command, warm and as a first run.

    Rates: ``steady`` = events / (processing wall time - pool start-up before the first
    chunk), per core = steady / workers; ``CPU`` = events / worker CPU seconds. Memory: the
    peak resident set (``ru_maxrss``) of the workers, for chunks of the default size (one
    1 M-event file), small chunks and two dataset sizes (the same files listed once and four
    times). Then the warm default run (plots, fit; fresh interpreter) and a first run in a
    fresh dataset folder and numba cache (``--no-first-run`` skips it: ~35 s).
    """
    import os
    import tempfile

    from agc_core.classifier import load_classifier
    from agc_core.errors import AGCError
    from agc_core.results import DEFAULT_CHUNKSIZE
    from agc_core.runner import RunOptions, run_analysis
    from agc_core.synthetic import ensure_dataset

    fileset = getattr(args, "fileset", None) or ensure_dataset(cfg=cfg)
    big_events = int(getattr(args, "big_file_events", BIG_FILE_EVENTS))
    inference = "numba"
    try:
        load_classifier(inference, cfg=cfg)
    except AGCError as exc:
        log.warning("no MLP (%s): the e2e benchmark runs without inference", exc)
        inference = "none"
    repeat = max(1, min(args.repeat, 3))
    quiet = logging.getLogger("agc_core")
    saved_level = quiet.level
    quiet.setLevel(logging.WARNING)  # the runs' own INFO lines would drown the table
    table = BenchTable(
        f"e2e: python -m agc_core run on {fileset} (processes executor, inference "
        f"{inference}, all systematics; best of {repeat})",
        ["run", "workers", "events/chunk", "events", "wall s", "steady ev/s",
         "ev/s per core", "CPU ev/s", "peak RSS/worker MB"],
    )
    configs: list[tuple[str, dict[str, Any]]] = [
        ("I/O only (4 %)", {"io_only": True, "workers": 1}),
        ("I/O only (4 %)", {"io_only": True, "workers": 2}),
        ("processing", {"workers": 1}),
        ("processing", {"workers": 2}),
        ("processing, small chunks", {"workers": 1, "chunksize": 25_000}),
        ("processing, small chunks, 4x data", {"workers": 1, "chunksize": 25_000, "big": True}),
        ("processing, 4x data", {"workers": 1, "big": True}),
        ("processing, 4x data", {"workers": 2, "big": True}),
    ]
    if big_events > 0:
        configs.append((f"processing, one {big_events:,}-event file", {"workers": 1,
                                                                        "one_file": True}))
    scaling = getattr(args, "scaling_fileset", None)
    if scaling:
        configs += [(f"{SCALING} I/O only (4 %)", {"io_only": True, "workers": w,
                                                    "scaling": True}) for w in (1, 2)]
        configs += [(f"{SCALING} processing", {"workers": w, "scaling": True})
                    for w in (1, 2)]
    results: dict[int, list[Any]] = {i: [] for i in range(len(configs))}
    first: float | None = None
    first_stages: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            big = _repeated_fileset(fileset, 4, tmp)
            one = _big_fileset(cfg, big_events) if big_events > 0 else None
            run_analysis(RunOptions(fileset=fileset, io_only=True, workers=2, progress=False,
                                    output_dir=os.path.join(tmp, "warm")))  # page cache, pool
            for _ in range(repeat):  # interleaved, so every configuration sees similar load
                for i, (_, kw) in enumerate(configs):
                    kw = dict(kw)
                    kw["fileset"] = big if kw.pop("big", False) else fileset
                    if kw.pop("one_file", False):
                        kw["fileset"] = one
                    if kw.pop("scaling", False):
                        kw["fileset"] = scaling
                    results[i].append(run_analysis(RunOptions(
                        inference=inference, plots=False, progress=False, seed=args.seed,
                        output_dir=os.path.join(tmp, "out"), **kw)))
            if getattr(args, "cli_runs", True):
                warm, first, first_stages = e2e_cli_runs(
                    fileset, tmp, min(repeat, 2), getattr(args, "first_run", True))
            else:
                warm = None
    finally:
        quiet.setLevel(saved_level)
    best: dict[tuple[str, int], float] = {}  # (run, workers) -> steady rate per core
    rss_default = None
    for i, (name, _) in enumerate(configs):
        r = max(results[i], key=lambda x: x.metrics["event_rate_steady_hz"])
        steady = r.metrics["event_rate_steady_hz"]
        best[(name, r.num_workers)] = steady / r.num_workers
        rss = max(w.max_rss_mb for w in r.workers)
        per_chunk = round(r.n_events / max(1, r.n_chunks))
        if per_chunk >= DEFAULT_CHUNKSIZE:
            rss_default = rss if rss_default is None else max(rss_default, rss)
        table.rows.append([name, r.num_workers, per_chunk, r.n_events, r.walltime, steady,
                           steady / r.num_workers, r.metrics["event_rate_cputime_hz"], rss])
    if warm is not None:
        table.rows.append(["warm default run (CLI: plots, fit)", "", "", "", warm, "", "",
                           "", ""])
    if first is not None:
        table.rows.append(["first run (new dataset folder + numba cache)", "", "", "", first,
                           "", "", "", ""])
    io1, io2 = best[("I/O only (4 %)", 1)], best[("I/O only (4 %)", 2)]
    p1, p2 = best[("processing", 1)], best[("processing", 2)]
    b1, b2 = best[("processing, 4x data", 1)], best[("processing, 4x data", 2)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table.notes += [
        f"processing / I/O-only rate per core: 1 worker {p1 / io1:.0%}, 2 workers "
        f"{p2 / io2:.0%} (target >= 70 %)",
        f"2 workers / 1 worker, processing: {2 * p2 / p1:.2f}x, 4x data {2 * b2 / b1:.2f}x "
        f"(target >= 1.85x); I/O only: {2 * io2 / io1:.2f}x",
    ]
    if scaling:
        s1, s2 = best[(f"{SCALING} processing", 1)], best[(f"{SCALING} processing", 2)]
        i1, i2 = (best[(f"{SCALING} I/O only (4 %)", 1)],
                  best[(f"{SCALING} I/O only (4 %)", 2)])
        w1, w2 = (min(r.walltime for r in results[i]) for i, (name, kw) in
                  enumerate(configs) if name == f"{SCALING} processing")
        table.notes.append(f"{SCALING[:-1]} ({scaling}): 2 workers / 1 worker, processing "
                           f"{2 * s2 / s1:.2f}x steady, {w1 / w2:.2f}x wall (target >= 1.85x); "
                           f"I/O only {2 * i2 / i1:.2f}x")
    if rss_default is not None:
        table.notes.append(f"peak RSS per worker at the default chunk size "
                           f"({DEFAULT_CHUNKSIZE:,} entries): {rss_default:.0f} MB "
                           f"(target <= 400 MB)")
    if warm is not None:
        table.notes.append(f"warm default run: {warm:.1f} s wall, fresh interpreter "
                           f"(target <= 3.5 s)")
    if first is not None:
        gen = first_stages.get("plan", float("nan"))
        comp = first_stages.get("compile", float("nan"))
        table.notes.append(f"first run: {first:.1f} s wall (target <= 35 s): dataset "
                           f"generation + planning {gen:.1f} s, kernel compilation {comp:.1f} s "
                           f"alongside it (waited for: "
                           f"{first_stages.get('compile_wait', float('nan')):.1f} s)")
    table.notes.append(f"steady = events / (wall - pool start-up); {os.cpu_count()} CPUs, load "
                       f"average {load:.1f} when done")
    return table
