"""Benchmarks: kernels (and other stages) against the awkward reference, printed as tables.

``python -m agc_core bench [--what SECTION ...]``. Sections are registered with
:func:`register_section`; each returns a :class:`BenchTable`. The ``kernels`` section times
every numba kernel and the whole chunk processor (all variations) on the same in-memory
events as the awkward reference, single-threaded, with numba warm (compilation excluded).
Speed is never asserted in a test; this is where it is measured.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.io import Chunk

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


SectionFn = Callable[[argparse.Namespace, AnalysisConfig], BenchTable]

#: registered sections: name -> (function, help)
SECTIONS: dict[str, tuple[SectionFn, str]] = {}

#: modules that may register more sections when imported (skipped if absent)
SECTION_MODULES: tuple[str, ...] = ("agc_core.bench_mlp",)


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


def synthetic_chunk(process: str, variation: str, n_events: int, seed: int = 42,
                    cfg: AnalysisConfig | None = None) -> Chunk:
    """Events of one sample generated in memory by ``agc_core.synthetic`` (no files).

    Args:
        process, variation: the sample.
        n_events: number of events.
        seed: generator seed.
        cfg: analysis configuration.

    Returns:
        An :class:`agc_core.io.Chunk` with the analysis branches (entry_start 0).
    """
    from agc_core.synthetic import iter_sample_events

    cfg = cfg or load_analysis_config()
    columns: dict[str, list[np.ndarray]] = {}
    counts: dict[str, list[np.ndarray]] = {}
    for batch in iter_sample_events(process, variation, n_events, seed, cfg):
        for coll in ("jet", "electron", "muon"):
            counts.setdefault(coll, []).append(batch.counts[coll])
            for prop, values in batch.jagged[coll].items():
                name = f"{coll}_{prop}"
                if name in cfg.analysis_branches:
                    columns.setdefault(name, []).append(values)
    offsets = {}
    for coll, parts in counts.items():
        c = np.concatenate(parts).astype(np.int64)
        off = np.zeros(c.shape[0] + 1, dtype=np.int64)
        np.cumsum(c, out=off[1:])
        offsets[coll] = off
    cols = {k: np.ascontiguousarray(np.concatenate(v), dtype=np.float32)
            for k, v in columns.items()}
    return Chunk(n_events, 0, n_events, cols, offsets, 0)


def chunk_from_jagged(jets: list[list[tuple[float, float, float, float, float]]],
                      electrons: list[list[float]], muons: list[list[float]],
                      entry_start: int = 0) -> Chunk:
    """A chunk from per-event Python lists (for edge-case tests).

    Args:
        jets: per event, a list of (pt, eta, phi, e, btag) tuples.
        electrons, muons: per event, a list of pt values.
        entry_start: index in the file of the first event.
    """
    def offsets(lists: list[list[Any]]) -> np.ndarray:
        off = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=off[1:])
        return off

    flat = [j for ev in jets for j in ev]
    cols = {f"jet_{p}": np.array([j[k] for j in flat], dtype=np.float32)
            for k, p in enumerate(("pt", "eta", "phi", "e", "btag"))}
    cols["electron_pt"] = np.array([p for ev in electrons for p in ev], dtype=np.float32)
    cols["muon_pt"] = np.array([p for ev in muons for p in ev], dtype=np.float32)
    n = len(jets)
    return Chunk(n, entry_start, entry_start + n, cols,
                      {"jet": offsets(jets), "electron": offsets(electrons),
                       "muon": offsets(muons)}, 0)


def random_chunk(n_events: int, seed: int, mean_jets: float = 6.0, mean_leptons: float = 0.6,
                 entry_start: int = 0, edge_fraction: float = 0.03,
                 cfg: AnalysisConfig | None = None) -> Chunk:
    """Random events with the analysis branches, rich in edge cases (for tests and benches).

    Jets: Poisson multiplicity (a few events with 20), pt = 15 + Exp(40) GeV, some exactly at
    the jet cut, at the cut divided by the JES factor and just around the cut, b-tag scores
    with some exactly at the threshold; leptons: Poisson multiplicity, pt = 10 + Exp(30) GeV,
    some exactly at their cut (cuts from ``cfg``, default the packaged configuration).

    Args:
        n_events: number of events.
        seed: numpy seed.
        mean_jets, mean_leptons: Poisson means of the jet and of each lepton multiplicity.
        entry_start: index in the file of the first event (keys the JER draws).
        edge_fraction: fraction of values put exactly on a threshold.
    """
    cfg = cfg if cfg is not None else load_analysis_config()
    sel = cfg.selection
    rng = np.random.default_rng(seed)

    def offsets(counts: np.ndarray) -> np.ndarray:
        off = np.zeros(n_events + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        return off

    n_jets = rng.poisson(mean_jets, n_events)
    n_jets[rng.random(n_events) < 0.002] = 20
    joff = offsets(n_jets)
    eoff = offsets(rng.poisson(mean_leptons, n_events))
    moff = offsets(rng.poisson(mean_leptons, n_events))
    nj = int(joff[-1])
    pt = (15 + rng.exponential(40, nj)).astype(np.float32)
    edge = rng.random(nj) < edge_fraction
    cut = sel.jet_pt_min
    pt[edge] = rng.choice(np.array([cut, cut / cfg.systematics.jes_factor, cut - 1e-3,
                                    cut + 1e-3], dtype=np.float32), int(edge.sum()))
    eta = rng.normal(0, 1.5, nj).astype(np.float32)
    btag = np.where(rng.random(nj) < 0.4, rng.random(nj), 0.1 * rng.random(nj))
    btag = btag.astype(np.float32)
    btag[rng.random(nj) < edge_fraction] = sel.btag_threshold
    phi = rng.uniform(-np.pi, np.pi, nj).astype(np.float32)
    e = (pt.astype(np.float64) * np.cosh(eta) * rng.uniform(1.0, 1.2, nj)).astype(np.float32)
    el = (10 + rng.exponential(30, eoff[-1])).astype(np.float32)
    mu = (10 + rng.exponential(30, moff[-1])).astype(np.float32)
    el[rng.random(el.shape[0]) < edge_fraction] = sel.electron_pt_min
    mu[rng.random(mu.shape[0]) < edge_fraction] = sel.muon_pt_min
    cols = {"jet_pt": pt, "jet_eta": eta, "jet_phi": phi, "jet_e": e, "jet_btag": btag,
            "electron_pt": el, "muon_pt": mu}
    return Chunk(n_events, entry_start, entry_start + n_events, cols,
                      {"jet": joff, "electron": eoff, "muon": moff}, 0)


def slice_chunk(chunk: Any, start: int, stop: int) -> Chunk:
    """Events [start, stop) of a chunk as a new chunk (entry_start shifted accordingly)."""
    offsets: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    for coll, off in chunk.offsets.items():
        lo, hi = off[start], off[stop]
        offsets[coll] = off[start: stop + 1] - lo
        for name, values in chunk.columns.items():
            if name.split("_", 1)[0] == coll:
                columns[name] = values[lo:hi]
    return Chunk(stop - start, chunk.entry_start + start, chunk.entry_start + stop,
                      columns, offsets, 0)


# --------------------------------------------------------------------------------------------
# kernels section


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
def bench_kernels(args: argparse.Namespace, cfg: AnalysisConfig) -> BenchTable:
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
    from agc_core.processor import (
        SampleInfo,
        ThresholdClassifier,
        Workspace,
        analyse_chunk,
        process_chunk,
    )
    from kernels.fill import fill_region
    from kernels.rng import jer_factors
    from kernels.selection import select_jets, select_leptons
    from kernels.sphericity import sphericity_a_events
    from kernels.trijet import best_trijet_events

    n = args.events
    process = args.process
    t0 = time.perf_counter()
    chunk = synthetic_chunk(process, "nominal", n, args.seed, cfg)
    log.info("generated %d %s events in %.1f s", n, process, time.perf_counter() - t0)
    n_ref = min(n, args.reference_events)
    ref_chunk = slice_chunk(chunk, 0, n_ref)
    sample = SampleInfo(process, "nominal", cfg.samples.index((process, "nominal")), 0, 1.0)
    clf = ThresholdClassifier.from_config(cfg, 300.0)
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
            ch = synthetic_chunk(p, v, n_mix, args.seed, cfg)
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
                       "classifier: ThresholdClassifier(HT > 300 GeV)")
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
            files = [{"path": resolve_path(f["path"], src.parent), "nevts": f["nevts"]}
                     for f in body["files"]]
            body["files"] = files * copies
    path = Path(out) / f"fileset_x{copies}.json"
    path.write_text(json.dumps(raw))
    return path


@register_section("e2e", "python -m agc_core run end to end: processing vs I/O-only rate, "
                         "1 vs 2 workers, peak memory per worker")
def bench_e2e(args: argparse.Namespace, cfg: AnalysisConfig) -> BenchTable:
    """Time ``run_analysis`` (process pool) on the embedded dataset, processing and I/O only.

    Rates: ``steady`` = events / (processing wall time - pool start-up before the first
    chunk), per core = steady / workers; ``CPU`` = events / worker CPU seconds. Memory: the
    peak resident set (``ru_maxrss``) of the workers, for two chunk sizes and two dataset
    sizes (the same files listed once and four times).
    """
    import os
    import tempfile

    from agc_core.errors import AGCError
    from agc_core.runner import RunOptions, load_run_classifier, run_analysis
    from agc_core.synthetic import ensure_dataset

    fileset = getattr(args, "fileset", None) or ensure_dataset(cfg=cfg)
    inference = "numba"
    try:
        load_run_classifier(inference, cfg)
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
    results: dict[int, list[Any]] = {i: [] for i in range(len(configs))}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            big = _repeated_fileset(fileset, 4, tmp)
            run_analysis(RunOptions(fileset=fileset, io_only=True, workers=2, progress=False,
                                    output_dir=os.path.join(tmp, "warm")))  # page cache, pool
            for _ in range(repeat):  # interleaved, so every configuration sees similar load
                for i, (_, kw) in enumerate(configs):
                    kw = dict(kw)
                    kw["fileset"] = big if kw.pop("big", False) else fileset
                    results[i].append(run_analysis(RunOptions(
                        inference=inference, plots=False, progress=False, seed=args.seed,
                        output_dir=os.path.join(tmp, "out"), **kw)))
    finally:
        quiet.setLevel(saved_level)
    best: dict[tuple[str, int], float] = {}  # (run, workers) -> steady rate per core
    for i, (name, _) in enumerate(configs):
        r = max(results[i], key=lambda x: x.metrics["event_rate_steady_hz"])
        steady = r.metrics["event_rate_steady_hz"]
        best[(name, r.num_workers)] = steady / r.num_workers
        table.rows.append([name, r.num_workers, round(r.n_events / max(1, r.n_chunks)),
                           r.n_events, r.walltime, steady, steady / r.num_workers,
                           r.metrics["event_rate_cputime_hz"],
                           max(w.max_rss_mb for w in r.workers)])
    io1, io2 = best[("I/O only (4 %)", 1)], best[("I/O only (4 %)", 2)]
    p1, p2 = best[("processing", 1)], best[("processing", 2)]
    b1, b2 = best[("processing, 4x data", 1)], best[("processing, 4x data", 2)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table.notes += [
        f"processing / I/O-only rate per core: 1 worker {p1 / io1:.0%}, 2 workers "
        f"{p2 / io2:.0%} (target >= 70 %)",
        f"2 workers / 1 worker, processing: {2 * p2 / p1:.2f}x, 4x data {2 * b2 / b1:.2f}x "
        f"(target >= 1.8x); I/O only: {2 * io2 / io1:.2f}x",
        f"steady = events / (wall - pool start-up); {os.cpu_count()} CPUs, load average "
        f"{load:.1f} when done",
    ]
    return table


@register_section("io", "the columnar reader vs plain uproot (library='ak') on one file")
def bench_io(args: argparse.Namespace, cfg: AnalysisConfig) -> BenchTable:
    """Read the analysis branch set (and the I/O-benchmark sets) of one embedded-dataset file.

    One core, warm page cache, the file opened anew on every repeat; rates from the best wall
    time and from the best process CPU time (robust against other load on the machine).
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
         "MB/CPU s", "speedup"],
    )
    sets = [("analysis", io.branch_set(cfg, "analysis"))]
    sets += [(f"{p} %", io.branch_set(cfg, p)) for p in sorted(cfg.io_branch_sets) if p != 4]
    for name, branches in sets:
        res = io.benchmark_read(path, branches, repeats=args.repeat)
        for reader in ("agc_core", "uproot_ak"):
            st = res[reader]
            table.rows.append([name, reader, res["n_events"], res["compressed_bytes"] / 1e6,
                               st["events_per_s"], st["mb_per_s"], st["events_per_cpu_s"],
                               st["mb_per_cpu_s"],
                               f"{res['speedup']:.2f}x" if reader == "agc_core" else ""])
        table.notes.append(f"{name}: zlib backend {res['zlib_backend']}")
    return table


# --------------------------------------------------------------------------------------------
# CLI


def run_bench(args: argparse.Namespace) -> int:
    """``python -m agc_core bench``: run the selected sections and print their tables."""
    cfg = load_analysis_config(getattr(args, "config", None))
    names = list(SECTIONS) if "all" in args.what else args.what
    for name in names:
        fn, _ = SECTIONS[name]
        table = fn(args, cfg)
        print(table.render())
        print()
    return 0


def _load_section_modules() -> None:
    for module in SECTION_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def add_cli(subparsers: Any) -> None:
    """Register the ``bench`` subcommand."""
    _load_section_modules()
    p = subparsers.add_parser(
        "bench", help="benchmark kernels and stages against the reference",
        description="Time the numba kernels (and other stages) against the awkward reference "
                    "on the same in-memory events; prints one table per section.")
    p.add_argument("--what", nargs="+", default=["kernels"],
                   choices=[*SECTIONS, "all"], help="sections to run (default: kernels)")
    p.add_argument("--events", type=int, default=200_000,
                   help="in-memory events of --process for the kernels (default 200000)")
    p.add_argument("--reference-events", type=int, default=20_000,
                   help="events given to the (slow) reference (default 20000)")
    p.add_argument("--mix-events", type=int, default=50_000,
                   help="events per sample for the per-sample rows and the mix (default "
                        "50000; 0 skips them)")
    p.add_argument("--mix-fileset", default=None,
                   help="weight the sample mix by the nevts of this fileset JSON (e.g. the "
                        "AGC's ntuples_merged.json); default: equal events per sample")
    p.add_argument("--fileset", default=None,
                   help="fileset JSON of the io and e2e sections (default: the embedded "
                        "dataset)")
    p.add_argument("--process", default="ttbar", help="sample process (nominal) to generate")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per kernel (best kept)")
    p.add_argument("--seed", type=int, default=42, help="generator and JER seed")
    p.set_defaults(func=run_bench)
