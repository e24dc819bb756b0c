"""Benchmarks: kernels (and other stages) against the awkward reference, printed as tables.

``python -m agc_core bench [--what SECTION ...]``. Sections are registered with
:func:`register_section`; each returns a :class:`BenchTable`. The ``kernels`` section times
every numba kernel and the whole chunk processor (all variations) on the same in-memory
events as the awkward reference, single-threaded, with numba warm (compilation excluded).
Speed is never asserted in a test; this is where it is measured.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.fixtures import slice_chunk, synthetic_chunk

log = logging.getLogger(__name__)


@dataclass
class BenchTable:
    """One section's result: a titled table of rows (first column = name).

    Attributes:
        title: section title.
        columns: column headers.
        rows: table rows (strings or numbers).
        notes: lines printed under the table.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The table as aligned text."""
        cells = [[_fmt(c) for c in row] for row in [self.columns, *self.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, "=" * len(self.title)]
        for k, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += self.notes
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or not np.isfinite(value):
            return f"{value:g}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


#: a section: ``fn(args, cfg) -> BenchTable``; ``args``: the bench options (the
#: namespace :mod:`agc_core.cli.bench` parses)
SectionFn = Callable[[Any, AnalysisConfig], BenchTable]

#: registered sections: name -> (function, help)
SECTIONS: dict[str, tuple[SectionFn, str]] = {}

#: modules that may register more sections when imported (skipped if absent)
SECTION_MODULES: tuple[str, ...] = ("agc_core.bench.mlp", "agc_core.bench.fit",
                                     "agc_core.bench.remote")


def register_section(name: str, help: str) -> Callable[[SectionFn], SectionFn]:
    """Decorator registering a benchmark section ``fn(args, cfg) -> BenchTable``."""

    def deco(fn: SectionFn) -> SectionFn:
        SECTIONS[name] = (fn, help)
        return fn

    return deco


def best_time(fn: Callable[[], Any], repeat: int, min_time: float = 0.0,
              clock: Callable[[], float] = time.process_time) -> float:
    """Smallest time (s) of ``repeat`` calls of ``fn`` (at least ``min_time`` in total).

    The default clock is the process CPU time (all threads), which makes "per core" rates
    robust against other load on the machine; pass ``time.perf_counter`` for wall time.
    """
    best = np.inf
    spent = 0.0
    k = 0
    while k < repeat or spent < min_time:
        t0 = clock()
        fn()
        dt = clock() - t0
        best = min(best, dt)
        spent += dt
        k += 1
    return best


# --------------------------------------------------------------------------------------------
# in-memory events


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _mix_weights(cfg: AnalysisConfig, fileset: str | None) -> dict[tuple[str, str], float]:
    """Events per sample of a fileset (``nevts``), or 1 each (the embedded dataset's mix)."""
    weights = {sample: 1.0 for sample in cfg.samples}
    if fileset:
        import json

        with open(fileset) as f:
            data = json.load(f)
        for (process, variation) in cfg.samples:
            files = data.get(process, {}).get(variation, {}).get("files", [])
            weights[(process, variation)] = float(sum(int(x.get("nevts", 0)) for x in files))
    return weights


@register_section("kernels", "numba kernels and the chunk processor vs the awkward reference")
def bench_kernels(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Time each kernel and the whole processor against the reference on the same events.

    Rows: the single kernels on ``--events`` events of ``--process`` (nominal); the chunk
    processor with all variations on that sample; the chunk processor on ``--mix-events``
    events of every sample, and the rate of the sample mix (equal events per sample as in the
    embedded dataset, or weighted by the ``nevts`` of ``--mix-fileset``). Rates are events per
    second of CPU time of this single-threaded process (numba warm, compilation excluded);
    the reference runs on the first ``--reference-events`` events of the same arrays.
    """
    import awkward as ak

    from agc_core import reference
    from agc_core.classifier import load_classifier
    from agc_core.kernels.fill import fill_region
    from agc_core.kernels.rng import jer_factors
    from agc_core.kernels.selection import select_jets, select_leptons
    from agc_core.kernels.sphericity import sphericity_a_events
    from agc_core.kernels.trijet import best_trijet_events
    from agc_core.processor import SampleInfo, Workspace, analyse_chunk, process_chunk

    n = args.events
    process = args.process
    t0 = time.perf_counter()
    chunk = synthetic_chunk(process, "nominal", n, args.seed, cfg, filtered=False)
    log.info("generated %d %s events in %.1f s", n, process, time.perf_counter() - t0)
    n_ref = min(n, args.reference_events)
    ref_chunk = slice_chunk(chunk, 0, n_ref)
    sample = SampleInfo(process, "nominal", cfg.samples.index((process, "nominal")), 0, 1.0)
    clf = load_classifier("numba", cfg=cfg)  # the shipped MLP, what `run` uses
    sel, syst, b = cfg.selection, cfg.systematics, cfg.binning
    c, o = chunk.columns, chunk.offsets
    rep = args.repeat
    ref_rep = max(1, rep // 5)

    table = BenchTable(
        f"kernels: synthetic events in memory, one core, numba warm "
        f"(reference: awkward on the first {n_ref:,} events of each)",
        ["kernel", "events", "kernel ev/s", "reference ev/s", "speedup"],
    )

    def row(name: str, fn: Callable[[], Any], ref: Callable[[], Any] | None,
            n_kernel: int = n, n_reference: int = n_ref) -> tuple[float, float]:
        fn()  # compile / warm
        tk = best_time(fn, rep)
        if ref is None:
            table.rows.append([name, f"{n_kernel:,}", _rate(n_kernel, tk), "-", "-"])
            return tk, float("nan")
        ref()
        tr = best_time(ref, ref_rep)
        rk, rr = _rate(n_kernel, tk), _rate(n_reference, tr)
        table.rows.append([name, f"{n_kernel:,}", rk, rr, f"{rk / rr:.0f}x"])
        return tk, tr

    # single kernels on the sample's events
    row("select_leptons", lambda: select_leptons(
        o["electron"], c["electron_pt"], o["muon"], c["muon_pt"],
        np.float32(sel.electron_pt_min), np.float32(sel.muon_pt_min)), None)
    ones = np.ones(c["jet_pt"].shape[0])
    row("select_jets (one factor)", lambda: select_jets(
        o["jet"], c["jet_pt"], c["jet_btag"], ones, sel.jet_pt_min,
        np.float32(sel.btag_threshold)), None)
    row("jer_factors (every jet)", lambda: jer_factors(o["jet"], 0, args.seed,
                                                       sample.sample_id, 0, syst.jer_width),
        None)

    # per-region kernels on the jets the reference selects (nominal)
    events = reference.build_events(chunk)
    out = reference.analyse_pt_variation(events, ak.Array(np.ones(n)), cfg)
    for region, name, kernel, ref in (
        ("4j1b", "sphericity_a_events", lambda j: sphericity_a_events(*j[:4]),
         lambda jets: reference.sphericity_a(jets)),
        ("4j2b", "best_trijet_events", lambda j: best_trijet_events(
            *j, np.float32(sel.btag_threshold)),
         lambda jets: reference.best_trijet(jets, sel.btag_threshold)),
    ):
        idx = out[region].event_index
        jets = events.jet[idx]
        jets = jets[jets.pt > sel.jet_pt_min]
        flat = [np.ascontiguousarray(ak.to_numpy(ak.flatten(jets[p])), dtype=np.float32)
                for p in ("pt", "eta", "phi", "e", "btag")]
        off = np.zeros(len(jets) + 1, dtype=np.int64)
        np.cumsum(ak.to_numpy(ak.num(jets)), out=off[1:])
        jets_ref = jets[: max(1, len(jets) * n_ref // n)]
        row(f"{name} ({region} events)", lambda k=kernel, a=(off, *flat): k(a),
            lambda r=ref, j=jets_ref: r(j), len(jets), len(jets_ref))

    # filling: every nominal weight variation of one region
    variations = cfg.fill_variations(process, "nominal")
    res = analyse_chunk(chunk, sample, cfg, args.seed)
    n1 = res.n(0, 0)
    cls = np.zeros(n1, dtype=np.int64)
    sumw = np.zeros((len(variations), 2, 2, b.bins + 2))
    sumw2 = np.zeros_like(sumw)
    flat_idx = variations.index("scale_var_up") if "scale_var_up" in variations else -1
    row(f"fill_region (4j1b events, {len(variations) - 2} weight variations)",
        lambda: fill_region(
            sumw, sumw2, 0, res.observable[0, 0], cls, n1, b.low, b.high, 1.0, 0, flat_idx,
            1.001, 0.999, variations.index("btag_var_0_up"), res.btag_pt[0],
            syst.btag_magnitude, np.float32(syst.btag_pt_ref)), None, n1)

    # the fused kernel and the whole processor on the sample
    ws = Workspace()
    row(f"analyse_chunk, nominal only ({process})", lambda: analyse_chunk(
        chunk, sample, cfg, args.seed, pt_variations=False, workspace=ws),
        lambda: reference.analyse_pt_variation(
            reference.build_events(ref_chunk), ak.Array(np.ones(n_ref)), cfg))
    row(f"analyse_chunk, 3 pt variations ({process})", lambda: analyse_chunk(
        chunk, sample, cfg, args.seed, workspace=ws),
        lambda: reference.analyse_chunk(ref_chunk, sample, cfg, args.seed))
    row(f"process_chunk, all variations ({process})", lambda: process_chunk(
        chunk, sample, cfg, clf, args.seed),
        lambda: reference.process_chunk_reference(ref_chunk, sample, cfg, clf, args.seed))
    for iv, pv in enumerate(res.pt_variations):
        table.notes.append(f"  {process} {pv}: {res.n(iv, 0):,} 4j1b + {res.n(iv, 1):,} 4j2b "
                           f"of {n:,} events selected")

    # every sample, and the mix
    if args.mix_events > 0:
        weights = _mix_weights(cfg, args.mix_fileset)
        n_mix = args.mix_events
        n_mix_ref = min(n_mix, n_ref)
        t_kernel = t_ref = 0.0
        for sid, (p, v) in enumerate(cfg.samples):
            ch = synthetic_chunk(p, v, n_mix, args.seed, cfg, filtered=False)
            rch = slice_chunk(ch, 0, n_mix_ref)
            s = SampleInfo(p, v, sid, 0, 1.0)
            tk, tr = row(f"process_chunk, all variations ({p} {v})",
                         lambda ch=ch, s=s: process_chunk(ch, s, cfg, clf, args.seed),
                         lambda rch=rch, s=s: reference.process_chunk_reference(
                             rch, s, cfg, clf, args.seed), n_mix, n_mix_ref)
            w = weights[(p, v)]
            t_kernel += w * tk / n_mix
            t_ref += w * tr / n_mix_ref
        total = sum(weights.values())
        mix = "nevts of " + args.mix_fileset if args.mix_fileset else "equal events per sample"
        rk, rr = total / t_kernel, total / t_ref
        table.rows.append([f"process_chunk, sample mix ({mix})", "-", rk, rr, f"{rk / rr:.0f}x"])
    table.notes.append(f"best of {rep} runs (reference: best of {ref_rep}), CPU time; "
                       "classifier: the shipped MLP (numba inference), as in `run`")
    return table


# --------------------------------------------------------------------------------------------
# end to end (python -m agc_core run)


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
    # folder (with the entries cache and basket layouts the first run recorded there)
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


@contextlib.contextmanager
def uproot_with_libdeflate() -> Iterator[None]:
    """Make plain uproot decompress ZLIB baskets with libdeflate, as our reader does.

    uproot has the switch (``ZLIB.library = "deflate"``, read by its decompressor class on
    every basket), but uproot 5.7 calls ``deflate.zlib_decompress(data, bufsize=n)``, which
    python-deflate 0.9 rejects (its argument is ``originalsize``); so the decompressor's
    method is replaced here by the same call with the size passed positionally.
    """
    import deflate
    import uproot.compression

    cls = uproot.compression._DecompressZLIB
    before = cls.__dict__["decompress"]

    def decompress(self: Any, data: Any, uncompressed_bytes: int | None = None) -> bytes:
        return deflate.zlib_decompress(data, uncompressed_bytes)

    cls.decompress = decompress
    try:
        yield
    finally:
        cls.decompress = before


@register_section("io", "the columnar reader vs plain uproot (library='ak'), uproot with zlib "
                        "and with libdeflate, on one file")
def bench_io(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Read the analysis branch set (and the I/O-benchmark sets) of one embedded-dataset file.

    One core, warm page cache, the file opened anew on every repeat; rates from the best wall
    time and from the best process CPU time (robust against other load on the machine).
    Plain uproot runs twice: with its default decompressor (the standard library's zlib) and
    with libdeflate, the one our reader uses, so the last speedup compares like with like.
    """
    import json
    from pathlib import Path

    from agc_core import io
    from agc_core.fileset import resolve_path
    from agc_core.synthetic import ensure_dataset

    fileset = Path(getattr(args, "fileset", None) or ensure_dataset(cfg=cfg))
    first = json.loads(fileset.read_text())["ttbar"]["nominal"]["files"][0]["path"]
    path = resolve_path(first, fileset.parent)
    table = BenchTable(
        f"io: reading {path} (one core, best of {args.repeat})",
        ["branch set", "reader", "events", "MB read", "events/s", "MB/s", "events/CPU s",
         "MB/CPU s", "agc_core speedup"],
    )
    sets = [("analysis", io.branch_set(cfg, "analysis"))]
    sets += [(f"{p} %", io.branch_set(cfg, p)) for p in sorted(cfg.io_branch_sets) if p != 4]
    for name, branches in sets:
        res = io.benchmark_read(path, branches, repeats=args.repeat)
        with uproot_with_libdeflate():
            res_deflate = io.benchmark_read(path, branches, repeats=args.repeat)
        for reader, r, key in (("agc_core", res, "agc_core"),
                               ("uproot_ak (zlib)", res, "uproot_ak"),
                               ("uproot_ak (libdeflate)", res_deflate, "uproot_ak")):
            st = r[key]
            speedup = "" if key == "agc_core" else \
                f"{res['agc_core']['events_per_cpu_s'] / st['events_per_cpu_s']:.2f}x"
            table.rows.append([name, reader, r["n_events"], r["compressed_bytes"] / 1e6,
                               st["events_per_s"], st["mb_per_s"], st["events_per_cpu_s"],
                               st["mb_per_cpu_s"], speedup])
        table.notes.append(f"{name}: our reader's zlib backend {res['zlib_backend']}")
    table.notes.append("speedup: events per CPU second of agc_core over that uproot run")
    return table


# --------------------------------------------------------------------------------------------
# CLI


def section_names() -> list[str]:
    """The registered sections' names (after :func:`load_section_modules`): the choices of
    ``bench --what``."""
    load_section_modules()
    return list(SECTIONS)


def run_bench(args: Any) -> int:
    """``python -m agc_core bench``: run the selected sections and print their tables.

    Args:
        args: the bench options (``what``: section names or ``all``; the rest as the
            sections read them: :mod:`agc_core.cli.bench` defines them).
    """
    load_section_modules()
    cfg = load_analysis_config(getattr(args, "config", None))
    names = list(SECTIONS) if "all" in args.what else args.what
    for name in names:
        fn, _ = SECTIONS[name]
        table = fn(args, cfg)
        print(table.render())
        print()
    return 0


def load_section_modules() -> None:
    """Import :data:`SECTION_MODULES` (those present), which register their sections."""
    for module in SECTION_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
