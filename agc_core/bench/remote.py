"""Benchmark of remote inputs: the analysis on local files and on ``http://`` and ``root://``
URLs of a real XRootD server behind a delaying proxy, cold and warm cache
(``python -m agc_core bench --what remote``).

The dataset's files are copied into the export folder of an XRootD server on 127.0.0.1
(:class:`agc_core.bench.xrootd.XRootDServer`); each remote run reads them through a fresh
:class:`agc_core.bench.proxy.DelayProxy` adding the round-trip time (0, 20 and 100 ms by
default). Each configuration runs cold (new output and cache folders) and then warm (the same
folders again: a user's second run). The rate is events / (planning + processing time). A second
table times planning alone (no cache) for the dataset's files and for the same files under
``copies`` names each (hard links in the export). Timings are never asserted in a test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agc_core.bench import BenchTable, register_section
from agc_core.config import AnalysisConfig
from agc_core.histograms import histogram_digest

log = logging.getLogger(__name__)

#: URL schemes benchmarked (https needs the session's certificate trusted: tests only)
SCHEMES = ("http", "root")
#: added round-trip times (ms)
RTTS_MS = (0.0, 20.0, 100.0)
#: names of each file in the planning table's bigger fileset
COPIES = 5
#: worker processes of the timed runs
WORKERS = 2

RUN_COLUMNS = ["input", "RTT ms", "cache", "events", "plan s", "process s", "rate ev/s",
               "spread", "of local", "CPU ceiling", "CPU s", "srv+proxy CPU s", "network MB",
               "cache MB", "proxy MB", "conns", "peak open", "hist"]
PLAN_COLUMNS = ["input", "RTT ms", "files", "plan s", "spread", "tasks", "failed", "conns",
                "peak open"]


# --------------------------------------------------------------------------------------------
# staging: the dataset in the server's export


@dataclasses.dataclass
class Staged:
    """The dataset inside the server's export.

    Attributes:
        fileset: its fileset JSON (paths relative to its folder, inside the export).
        copies_fileset: the same files under ``copies`` names each (None: not made).
        n_files: files in ``fileset``.
        made: folders this benchmark created in the export (removed at the end).
    """

    fileset: Path
    copies_fileset: Path | None
    n_files: int
    made: list[Path]


def _fileset_files(fileset: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The parsed fileset and its file entries (each a dict with ``path``), in order."""
    from agc_core.fileset import read_fileset_json

    data = read_fileset_json(fileset)
    files = [f for variations in data.values() if isinstance(variations, dict)
             for body in variations.values() if isinstance(body, dict)
             for f in body.get("files", [])]
    return data, files


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def stage_dataset(fileset: Path, export: Path, copies: int) -> Staged:
    """Put ``fileset``'s files into ``export`` (copied, unless already inside) and make the
    ``copies`` fileset (hard links ``copy<k>/<path>`` beside them, listed after the originals).

    Args:
        fileset: a fileset JSON with local paths relative to its folder (or absolute).
        export: the server's export folder.
        copies: names per file of the bigger fileset (< 2: none).
    """
    from agc_core.fileset import is_url, resolve_path

    fileset = Path(fileset).resolve()
    data, files = _fileset_files(fileset)
    if any(is_url(f["path"]) for f in files):
        raise ValueError(f"{fileset}: the remote benchmark needs a fileset of local files")
    made: list[Path] = []
    relative = all(not Path(f["path"]).is_absolute() for f in files)
    if relative and _is_inside(fileset, export):
        folder, staged = fileset.parent, fileset
    else:
        folder = export / f"bench-remote-{uuid.uuid4().hex[:8]}"
        made.append(folder)
        for i, f in enumerate(files):
            src = Path(resolve_path(f["path"], fileset.parent))
            rel = Path(f"abs{i}", src.name) if Path(f["path"]).is_absolute() else Path(f["path"])
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / rel)
            f["path"] = rel.as_posix()
        staged = folder / "fileset.json"
        staged.write_text(json.dumps(data))
    copies_fileset = None
    if copies >= 2:
        data, files = _fileset_files(staged)
        names = f"bench-remote-copies-{uuid.uuid4().hex[:8]}"
        made.append(folder / names)
        for body in (b for v in data.values() for b in v.values()):
            originals = body["files"]
            body["files"] = list(originals)
            for k in range(1, copies):
                for f in originals:
                    rel = Path(names) / f"copy{k}" / f["path"]
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.link(folder / f["path"], folder / rel)
                    body["files"].append({**f, "path": rel.as_posix()})
        copies_fileset = folder / f"{names}.json"
        copies_fileset.write_text(json.dumps(data))
        made.append(copies_fileset)
    return Staged(staged, copies_fileset, len(files), made)


# --------------------------------------------------------------------------------------------
# one run, one plan


def run_options(fileset: Path, folder: Path, workers: int, extra: Mapping[str, Any]) -> Any:
    """The :class:`~agc_core.results.RunOptions` of a timed run writing into ``folder``
    (``out`` and ``cache`` there; the cache fields only where RunOptions has them)."""
    from agc_core.results import RunOptions

    fields = {f.name for f in dataclasses.fields(RunOptions)}
    kwargs: dict[str, Any] = {
        "fileset": fileset, "output_dir": folder / "out", "workers": workers,
        "executor": "processes", "plots": False, "fit": False, "progress": False,
        "cache": True, "cache_dir": folder / "cache", **extra}
    return RunOptions(**{k: v for k, v in kwargs.items() if k in fields})


def timed_run(options: Any, proxy: Any = None, server: Any = None) -> dict[str, Any]:
    """Run the analysis; its events, times, bytes, CPU seconds (the analysis's processes, and
    the ``server``'s and ``proxy``'s) and histogram digest (and the proxy's counts:
    connections, peak open, bytes server -> client)."""
    from agc_core.bench.cpu import CpuMeter
    from agc_core.runner import run_analysis

    proc = getattr(proxy, "_proc", None)
    meter = CpuMeter(getattr(getattr(server, "proc", None), "pid", None),
                     getattr(proc, "pid", None))
    meter.start()
    result = run_analysis(options)
    cpu = meter.stop()
    metrics = result.metrics or {}
    plan = float(result.stage_times.get("plan", 0.0))
    seconds = plan + result.walltime
    row = {
        "events": int(result.n_events), "plan_s": plan, "process_s": float(result.walltime),
        "rate_hz": result.n_events / seconds if seconds > 0 else 0.0,
        "bytes_network": int(metrics.get("bytes_from_network", 0)),
        "bytes_cache": int(metrics.get("bytes_from_cache", 0)),
        "complete": bool(result.complete), "hist_sha256": histogram_digest(result.hist),
        "cpu_s": cpu["client"],
        "cpu_others_s": (None if cpu["server"] is None or proxy is None
                         else cpu["server"] + (cpu["proxy"] or 0.0)),
    }
    row.update(proxy_counts(proxy))
    return row


def proxy_counts(proxy: Any) -> dict[str, Any]:
    """A proxy's connections, peak open connections and bytes server -> client (None: local)."""
    if proxy is None:
        return {"connections": None, "peak_open": None, "proxy_bytes": None}
    return {"connections": proxy.accepted, "peak_open": proxy.peak_open,
            "proxy_bytes": proxy.bytes_down}


def plan_seconds(fileset: Path, cfg: AnalysisConfig) -> tuple[float, int, int]:
    """Plan ``fileset`` as a run does (the analysis branches, the default chunk size and
    retries), with no cache, in this process: (seconds, tasks, files that failed)."""
    from agc_core import io
    from agc_core.fileset import load_fileset
    from agc_core.io.remote import set_io_timeout
    from agc_core.planning import plan_tasks
    from agc_core.results import DEFAULT_CHUNKSIZE, RunOptions

    samples = load_fileset(fileset, cfg)
    defaults = RunOptions()
    set_io_timeout(defaults.io_timeout)
    t0 = time.perf_counter()
    tasks, failures = plan_tasks(samples, tuple(cfg.analysis_branches), DEFAULT_CHUNKSIZE,
                                 "events", None, max_retries=defaults.max_retries,
                                 retry_backoff=defaults.retry_backoff)
    io.close_files()
    return time.perf_counter() - t0, len(tasks), len(failures)


# --------------------------------------------------------------------------------------------
# the benchmark


def _median_run(runs: list[dict[str, Any]], key: str = "rate_hz") -> dict[str, Any]:
    """The run of median ``key`` (the lower middle one of an even number), with ``repeat``
    (the runs) and ``spread``: (largest - smallest) / median ``key`` (None for one run)."""
    ranked = sorted(runs, key=lambda r: r[key])
    middle = ranked[(len(ranked) - 1) // 2]
    spread = ((ranked[-1][key] - ranked[0][key]) / middle[key]
              if len(runs) > 1 and middle[key] > 0 else None)
    return {**middle, "repeat": len(runs), "spread": spread}


#: ports the proxies of this process had: never reused (a precaution: this process's XRootD
#: client keeps its connections and file handles per host:port, and a cold run should find none)
_USED_PORTS: set[int] = set()


@contextlib.contextmanager
def _proxy(server: Any, rtt_ms: float | None) -> Iterator[Any]:
    """A fresh delaying proxy in front of ``server`` (None for local runs), on a port no
    earlier proxy of this process had."""
    if rtt_ms is None:
        yield None
        return
    from agc_core.bench.proxy import DelayProxyProcess as DelayProxy

    proxy = DelayProxy(server.port, rtt_ms / 1e3)
    for _ in range(20):
        if proxy.port not in _USED_PORTS:
            break
        replacement = DelayProxy(server.port, rtt_ms / 1e3)  # before closing: another port
        proxy.close()
        proxy = replacement
    _USED_PORTS.add(proxy.port)
    with proxy:
        yield proxy


def _cold_warm(label: str, fileset_for: Any, server: Any, rtt_ms: float | None, tmp: Path,
               repeat: int, workers: int, extra: Mapping[str, Any],
               local: Path | None = None) -> list[dict[str, Any]]:
    """``repeat`` cold + warm pairs of one configuration: the median cold and warm rows.

    ``fileset_for(port, out)`` writes the fileset for a proxy's port (None: local). With
    ``local`` (the local fileset), each repetition is preceded by a local cold + warm pair,
    and the rows' ``local_fraction`` is the median of each repetition's rate over its local
    pair's: a ratio of runs seconds apart, not of runs minutes apart on a machine whose speed
    drifts."""
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    ratios: dict[str, list[float]] = {"cold": [], "warm": []}
    ceilings: dict[str, list[float]] = {"cold": [], "warm": []}
    for rep in range(repeat):
        folder = tmp / "runs" / f"{label}-{rtt_ms}-{rep}"
        paired = {}
        if local is not None:
            for state in ("cold", "warm"):
                paired[state] = timed_run(run_options(local, folder / "local", workers, extra))
        # one proxy for both: the warm run reads the same URLs (the caches' keys)
        with _proxy(server, rtt_ms) as proxy:
            fileset = fileset_for(None if proxy is None else proxy.port, folder / "fileset")
            for state in ("cold", "warm"):
                if proxy is not None:
                    proxy.reset_counts()
                row = timed_run(run_options(fileset, folder, workers, extra), proxy, server)
                runs[state].append(row)
                if state in paired and paired[state]["rate_hz"] > 0:
                    ratios[state].append(row["rate_hz"] / paired[state]["rate_hz"])
                    ceiling = cpu_ceiling(paired[state], row)
                    if ceiling is not None:
                        ceilings[state].append(ceiling)
                log.info("remote bench: %s, RTT %s ms, %s: %d events, plan %.2f s, "
                         "processing %.2f s, %.0f events/s", label, rtt_ms, state,
                         row["events"], row["plan_s"], row["process_s"], row["rate_hz"])
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for state in ("cold", "warm"):
        row = {"table": "run", "input": label, "rtt_ms": rtt_ms, "cache": state,
               **_median_run(runs[state])}
        if ratios[state]:
            row["local_fraction"] = sorted(ratios[state])[(len(ratios[state]) - 1) // 2]
        if ceilings[state]:
            row["cpu_ceiling"] = sorted(ceilings[state])[(len(ceilings[state]) - 1) // 2]
        rows.append(row)
    return rows


def cpu_ceiling(local: Mapping[str, Any], run: Mapping[str, Any]) -> float | None:
    """The fraction of the ``local`` run's rate that ``run`` could reach if both were bound
    by the CPU of the same cores: the local run's CPU seconds over the run's, the XRootD
    server's and the proxy's included (they share the cores here); None without CPU figures.
    A run whose "of local" is near it is bound by the CPU, not by the network."""
    mine = run.get("cpu_s")
    if not local.get("cpu_s") or not mine:
        return None
    return float(local["cpu_s"]) / (float(mine) + float(run.get("cpu_others_s") or 0.0))


def _url_fileset_for(staged: Path, server: Any, scheme: str) -> Any:
    from agc_core.bench.xrootd import url_fileset

    def make(port: int | None, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        return url_fileset(staged, server, scheme, out, port)

    return make


def _plan_rows(staged: Staged, server: Any, schemes: Sequence[str], rtts_ms: Sequence[float],
               tmp: Path, cfg: AnalysisConfig, repeat: int = 1) -> list[dict[str, Any]]:
    """Cold planning of the dataset's files and of their copies, per RTT and scheme (the
    median of ``repeat``, each through a new proxy)."""
    sets = [(staged.fileset, staged.n_files)]
    if staged.copies_fileset is not None:
        n = len(_fileset_files(staged.copies_fileset)[1])
        sets.append((staged.copies_fileset, n))
    rows = []
    for rtt in rtts_ms:
        for scheme in schemes:
            for fileset, n_files in sets:
                plans = []
                for rep in range(repeat):
                    with _proxy(server, rtt) as proxy:
                        out = tmp / "plans" / f"{scheme}-{rtt}-{n_files}-{rep}"
                        url = _url_fileset_for(fileset, server, scheme)(proxy.port, out)
                        seconds, tasks, failed = plan_seconds(url, cfg)
                    plans.append({"plan_s": seconds, "tasks": tasks, "failed": failed,
                                  **proxy_counts(proxy)})
                    log.info("remote bench: planning %d files over %s, RTT %s ms: %.2f s",
                             n_files, scheme, rtt, seconds)
                rows.append({"table": "plan", "input": scheme, "rtt_ms": rtt, "files": n_files,
                             **_median_run(plans, "plan_s")})
    return rows


def _local_fractions(rows: list[dict[str, Any]]) -> None:
    """Each run row's rate as a fraction of the local run's with the same cache state, and
    whether its histogram equals that run's."""
    local = {r["cache"]: r for r in rows if r["table"] == "run" and r["input"] == "local"}
    for r in rows:
        if r["table"] != "run" or r["cache"] not in local:
            continue
        ref = local[r["cache"]]
        if "local_fraction" not in r:  # else: of its own paired local runs
            r["local_fraction"] = r["rate_hz"] / ref["rate_hz"] if ref["rate_hz"] > 0 else None
        r["same_hist"] = r["hist_sha256"] == ref["hist_sha256"]


def bench_remote(fileset: str | Path | None = None, *, schemes: Sequence[str] = SCHEMES,
                 rtts_ms: Sequence[float] = RTTS_MS, repeat: int = 1, workers: int = WORKERS,
                 copies: int = COPIES, server: Any = None,
                 options: Mapping[str, Any] | None = None,
                 cfg: AnalysisConfig | None = None, paired: bool = True
                 ) -> list[dict[str, Any]]:
    """Time the analysis on local files and over each scheme at each RTT, cold and warm,
    and cold planning of the files and of ``copies`` names of each.

    Args:
        fileset: fileset JSON of local files (None: the embedded dataset).
        schemes: URL schemes (``http``, ``root``).
        rtts_ms: round-trip times the proxy adds (ms).
        repeat: cold + warm pairs per configuration; the median run (by rate) is reported.
        workers: worker processes of each run.
        copies: names per file in the planning table's bigger fileset (1: the dataset's files
            only; 0: no planning table).
        server: a running :class:`~agc_core.bench.xrootd.XRootDServer` to use (None: one is
            started in a temporary folder and stopped at the end).
        options: more :class:`~agc_core.results.RunOptions` fields for every run.
        cfg: the analysis configuration (for the planning table; None: the packaged one).
        paired: precede each remote repetition by a local cold + warm pair, and give each
            remote row's fraction of local as the median of its repetitions' ratios to their
            pairs (False: of the ``local`` rows).

    Returns:
        Rows (dicts): ``table`` ``run`` (input, rtt_ms, cache, events, plan_s, process_s,
        rate_hz, local_fraction, bytes_network, bytes_cache, proxy_bytes, connections,
        peak_open, hist_sha256, same_hist, complete, repeat) or ``plan`` (input, rtt_ms, files,
        plan_s, tasks, failed, connections, peak_open); render with :func:`format_table`.
    """
    from agc_core.bench.xrootd import CERT_DIR, XRootDServer
    from agc_core.config import load_analysis_config
    from agc_core.errors import ConfigError

    if repeat < 1:
        raise ConfigError(f"repeat must be at least 1, got {repeat}")
    unknown = set(schemes) - {"http", "https", "root"}
    if unknown:
        raise ConfigError(f"unknown scheme(s) {sorted(unknown)}: http, root (https: tests)")
    if server is None and (shutil.which("xrootd") is None or shutil.which("openssl") is None):
        raise ConfigError("the remote benchmark needs xrootd (Debian xrootd-server, "
                          "xrootd-server-plugins) and openssl")
    cfg = cfg or load_analysis_config()
    if fileset is None:
        from agc_core.synthetic import ensure_dataset

        fileset = ensure_dataset(cfg=cfg)
    extra = dict(options or {})
    tmp = Path(tempfile.mkdtemp(prefix="agc-core-bench-remote-"))
    own = server is None
    staged: Staged | None = None
    base: Path | None = None
    made_cert = own and not CERT_DIR.exists()  # this process's certificate: removed at the end
    try:
        if own:  # a folder of its own: as root, the server's user must be able to enter it
            base = Path(tempfile.mkdtemp(prefix="agc-core-xrootd-"))
            server = XRootDServer(base)
            server.start()
        staged = stage_dataset(Path(fileset), server.root, copies)
        server.publish()
        local = Path(fileset)
        # numba (and the page cache) warm: not counted
        timed_run(run_options(local, tmp / "warm-up", workers, extra))
        rows = _cold_warm("local", lambda port, out: local, server, None, tmp, repeat, workers,
                          extra)
        for rtt in rtts_ms:
            for scheme in schemes:
                rows += _cold_warm(scheme, _url_fileset_for(staged.fileset, server, scheme),
                                   server, rtt, tmp, repeat, workers, extra,
                                   local if paired else None)
        _local_fractions(rows)
        if copies >= 1:
            rows += _plan_rows(staged, server, schemes, rtts_ms, tmp, cfg, repeat)
        return rows
    finally:
        if own and server is not None:
            server.stop()
        elif staged is not None:
            for path in staged.made:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for folder in (tmp, base, CERT_DIR if made_cert else None):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# tables


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _opt(value: Any) -> Any:
    return "-" if value is None else value


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _rtt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _hist_cell(row: Mapping[str, Any]) -> str:
    """'=' (histograms equal the local run's), 'DIFFERS', 'incomplete' (failed chunks)."""
    if row.get("complete") is False:
        return "incomplete"
    same = row.get("same_hist")
    return "-" if same is None else "=" if same else "DIFFERS"


def run_table(rows: Sequence[Mapping[str, Any]]) -> BenchTable:
    """The runs' table; the planning rows (if any) as a second table in its notes."""
    runs = [r for r in rows if r["table"] == "run"]
    repeat = max((r.get("repeat", 1) for r in runs), default=1)
    table = BenchTable(
        f"remote inputs: rate = events / (plan + processing), {runs[0]['events']:,} events"
        if runs else "remote inputs", RUN_COLUMNS)
    for r in runs:
        frac = r.get("local_fraction")
        table.rows.append([
            r["input"], _rtt(r["rtt_ms"]), r["cache"], f"{r['events']:,}", r["plan_s"],
            r["process_s"], r["rate_hz"], _pct(r.get("spread")),
            "-" if frac is None else f"{100 * frac:.0f} %", _pct(r.get("cpu_ceiling")),
            _secs(r.get("cpu_s")), _secs(r.get("cpu_others_s")),
            _mb(r["bytes_network"]), _mb(r["bytes_cache"]), _mb(r["proxy_bytes"]),
            _opt(r["connections"]), _opt(r["peak_open"]),
            _hist_cell(r)])
    table.notes += [
        f"median of {repeat} run(s) by rate (spread: (largest - smallest) / median); cold: "
        "new output and cache folders, warm: the same folders again; 'of local': of the local "
        "run in the same cache state (each remote repetition's rate over that of a local "
        "run just before it: the median of these ratios)",
        "network/cache MB: the run's metrics (bytes_from_network, bytes_from_cache); proxy MB: "
        "what the delaying proxy forwarded server -> client; conns: connections it accepted; "
        "hist: the histograms equal the local run's ('='), or 'incomplete' (failed chunks)",
        "CPU s: the analysis's processes (this one, its fork server and workers) during the "
        "run; srv+proxy CPU s: the XRootD server's and the delaying proxy's, which share this "
        "machine's cores here (a real server does not); CPU ceiling: the paired local run's "
        "CPU s over this run's CPU s + srv+proxy CPU s, the most 'of local' can be where both "
        "runs are bound by these cores (the median over the repetitions)",
    ]
    plans = [r for r in rows if r["table"] == "plan"]
    if plans:
        plan = BenchTable("planning alone (no cache, in one process)", PLAN_COLUMNS)
        for r in plans:
            plan.rows.append([r["input"], _rtt(r["rtt_ms"]), r["files"], r["plan_s"],
                              _pct(r.get("spread")), r["tasks"], r["failed"],
                              _opt(r["connections"]), _opt(r["peak_open"])])
        table.notes += ["", plan.render()]
    return table


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`bench_remote` as text: the runs' table, then the planning table."""
    return run_table(rows).render()


@register_section("remote", "the analysis on http:// and root:// (real XRootD server, "
                            "delaying proxy at each RTT) vs local files, cold and warm cache")
def bench_remote_section(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """``bench --what remote``: :func:`bench_remote` with the command's options."""
    rows = bench_remote(
        getattr(args, "fileset", None), schemes=getattr(args, "schemes", SCHEMES),
        rtts_ms=getattr(args, "rtt_ms", RTTS_MS), repeat=getattr(args, "remote_repeat", 1),
        workers=getattr(args, "workers", WORKERS), copies=getattr(args, "copies", COPIES),
        cfg=cfg)
    return run_table(rows)

