"""The ``kernels`` section: every numba kernel and the whole chunk processor (all
variations) against the awkward reference on the same in-memory events, single-threaded, numba
warm (compilation excluded)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agc_core.bench.sections import register_section
from agc_core.bench.table import BenchTable, best_time
from agc_core.config import AnalysisConfig
from agc_core.fixtures import slice_chunk, synthetic_chunk

log = logging.getLogger(__name__)


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
