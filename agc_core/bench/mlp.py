"""The ``mlp`` benchmark section: MLP inference cost inside the chunk processor.

Registered with :func:`agc_core.bench.register_section` when imported (list this module in
``agc_core.bench.SECTION_MODULES``). On the same in-memory events as the ``kernels`` section it
times the whole chunk processor (all variations) with a constant classifier (no MLP), with the
numba MLP and with the torch MLP, the same for the sample mix of the ``kernels`` section (numba
only), and the two inference paths alone on the selected events' feature rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agc_core.bench import BenchTable, best_time, register_section
from agc_core.config import AnalysisConfig
from agc_core.fixtures import synthetic_chunk

log = logging.getLogger(__name__)


class ConstantClassifier:
    """Classifies every event as ``value`` without looking at the features (no-MLP baseline)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """int8 array of ``value`` of length n."""
        return np.full(features.shape[0], self.value, dtype=np.int8)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _sample_mix(args: Any, cfg: AnalysisConfig, classifier: Any,
                timed: Callable[[Callable[[], Any]], float]) -> tuple[float, float]:
    """Seconds per event of the chunk processor without and with ``classifier`` on the sample
    mix of the ``kernels`` section (``--mix-events`` per sample, weighted like its mix)."""
    from agc_core.bench.kernels import _mix_weights
    from agc_core.processor import SampleInfo, process_chunk

    weights = _mix_weights(cfg, args.mix_fileset)
    total = sum(weights.values())
    base = with_mlp = 0.0
    for sid, (p, v) in enumerate(cfg.samples):
        chunk = synthetic_chunk(p, v, args.mix_events, args.seed, cfg, filtered=False)
        sample = SampleInfo(p, v, sid, 0, 1.0)
        w = weights[(p, v)] / total / args.mix_events
        base += w * timed(lambda c=chunk, s=sample: process_chunk(
            c, s, cfg, ConstantClassifier(), args.seed))
        with_mlp += w * timed(lambda c=chunk, s=sample: process_chunk(
            c, s, cfg, classifier, args.seed))
    return base, with_mlp


@register_section("mlp", "MLP inference (numba vs torch) and its cost in the chunk processor")
def bench_mlp(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Time the chunk processor with and without the MLP, and the inference alone."""
    from agc_core.classifier import load_classifier
    from agc_core.processor import SampleInfo, analyse_chunk, process_chunk

    n = args.events
    t0 = time.perf_counter()
    chunk = synthetic_chunk(args.process, "nominal", n, args.seed, cfg, filtered=False)
    log.info("generated %d %s events in %.1f s", n, args.process, time.perf_counter() - t0)
    sample = SampleInfo(args.process, "nominal", cfg.samples.index((args.process, "nominal")),
                        0, 1.0)
    numba_clf = load_classifier("numba", cfg=cfg)
    torch_clf = load_classifier("torch", cfg=cfg)
    rep = args.repeat

    # feature rows the processor classifies: every (pt variation, region) of the chunk
    res = analyse_chunk(chunk, sample, cfg, args.seed)
    rows = {r.name: np.concatenate([res.region_features(iv, ir, r.features)
                                    for iv in range(len(res.pt_variations))])
            for ir, r in enumerate(cfg.regions)}
    n_rows = sum(x.shape[0] for x in rows.values())

    table = BenchTable(
        f"mlp: {n:,} {args.process} events in memory, one core "
        f"({n_rows:,} classified rows = {n_rows / n:.2f} per event)",
        ["stage", "ev/s (rows/s)", "ns per row", "MLP share of processor"],
    )

    def timed(fn: Callable[[], Any]) -> float:
        fn()  # compile / warm
        return best_time(fn, rep)

    base = timed(lambda: process_chunk(chunk, sample, cfg, ConstantClassifier(), args.seed))
    table.rows.append(["process_chunk, constant class (no MLP)", _rate(n, base), "-", "-"])
    for name, clf in (("numba", numba_clf), ("torch", torch_clf)):
        t = timed(lambda c=clf: process_chunk(chunk, sample, cfg, c, args.seed))
        table.rows.append([f"process_chunk + {name} MLP", _rate(n, t), "-",
                           f"+{100 * (t - base) / base:.1f} %"])
    if args.mix_events > 0:
        base_mix, mlp_mix = _sample_mix(args, cfg, numba_clf, timed)
        mix = "nevts of " + args.mix_fileset if args.mix_fileset else "equal events per sample"
        table.rows.append([f"sample mix ({mix}), no MLP", 1 / base_mix, "-", "-"])
        table.rows.append([f"sample mix ({mix}) + numba MLP", 1 / mlp_mix, "-",
                           f"+{100 * (mlp_mix - base_mix) / base_mix:.1f} %"])
    for name, clf in (("numba", numba_clf), ("torch", torch_clf)):
        t = timed(lambda c=clf: [c.classify(r, x) for r, x in rows.items()])
        table.rows.append([f"classify alone ({name})", _rate(n_rows, t),
                           f"{1e9 * t / max(n_rows, 1):.1f}", "-"])
    cls_n = np.concatenate([numba_clf.classify(r, x) for r, x in rows.items()])
    cls_t = np.concatenate([torch_clf.classify(r, x) for r, x in rows.items()])
    out_n = np.concatenate([numba_clf.predict(r, x) for r, x in rows.items()])
    out_t = np.concatenate([torch_clf.predict(r, x) for r, x in rows.items()])
    table.notes.append(f"numba vs torch on these rows: max |output difference| "
                       f"{np.max(np.abs(out_n - out_t), initial=0.0):.2e}, "
                       f"{int(np.sum(cls_n != cls_t))} different classifications")
    table.notes.append(f"best of {rep} runs; torch threads: 1 (as in a worker process)")
    return table
