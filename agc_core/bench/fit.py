"""Benchmark of the statistical inference: ours beside pyhf.infer.mle.fit (MINUIT) on the
same workspace (``python -m agc_core bench --what fit``)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agc_core.bench import BenchTable, register_section
from agc_core.config import AnalysisConfig

log = logging.getLogger(__name__)

#: pyhf's ranking is timed on this many parameters (x 4 fits) and scaled to all of them
PYHF_RANKING_SAMPLE = 3


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _inputs(args: Any, cfg: AnalysisConfig, tmp: Path) -> list[tuple[str, Path]]:
    """(label, histograms file) to benchmark: --histograms, else the real CMS reference
    histograms (when ../shared is there) and ./agc_output/histograms.root (when present)."""
    given = getattr(args, "fit_histograms", None)
    if given:
        return [(Path(p).parent.name or str(p), Path(p)) for p in given]
    out: list[tuple[str, Path]] = []
    from agc_core.reference_histograms import FILESET_FILE, REFERENCE_FILE

    if REFERENCE_FILE.exists() and FILESET_FILE.exists():
        from agc_core.outputs import write_fit_histograms
        from agc_core.reference_histograms import reference_histogram

        path = tmp / "cms" / "histograms.root"
        write_fit_histograms(reference_histogram(cfg=cfg), cfg, path)
        out.append(("real CMS reference histograms", path))
    local = Path("agc_output") / "histograms.root"
    if local.exists():
        out.append((f"embedded dataset ({local})", local))
    return out


def _pyhf_fit(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    import pyhf

    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    res, obj = pyhf.infer.mle.fit(data, model, return_uncertainties=True,
                                  return_result_obj=True)
    return model, data, (res, obj)


@register_section("fit", "workspace + fit, MINOS, scan, ranking: ours vs pyhf.infer.mle.fit")
def bench_fit(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Wall time of each inference step, ours and pyhf's (its MINUIT optimizer, numpy
    backend, default tolerance), on the same workspace, one run each; numba warm (one fit
    before the timings). pyhf's ranking is timed on a few parameters and scaled."""
    import numpy as np
    import pyhf

    from agc_core import inference, workspace
    from agc_core.config import load_fit_config

    fit_cfg = load_fit_config(cfg=cfg)
    table = BenchTable("fit: ours (numba -2lnL + analytic gradient/Hessian, iminuit) vs "
                       "pyhf.infer.mle.fit (minuit optimizer), wall s, one run",
                       ["input / step", "ours s", "pyhf s", "pyhf / ours", "ttbar_norm ours",
                        "ttbar_norm pyhf"])
    saved = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0))
    quiet = logging.getLogger("agc_core")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    pyhf_log = logging.getLogger("pyhf")
    pyhf_level = pyhf_log.level
    pyhf_log.setLevel(logging.CRITICAL)  # its failed fits are counted in the table
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inputs = _inputs(args, cfg, Path(tmp))
            if not inputs:
                table.notes.append("no inputs: pass --fit-histograms or run "
                                   "'python -m agc_core run' first")
            for label, path in inputs:
                _rows(table, label, path, fit_cfg, cfg, inference, workspace, np, pyhf)
    finally:
        quiet.setLevel(level)
        pyhf_log.setLevel(pyhf_level)
        pyhf.set_backend(*saved)
    table.notes += [
        "ours: build = workspace.build(histograms.root) + Likelihood.from_spec; fit = "
        "MIGRAD + exact-Hessian HESSE; MINOS on ttbar_norm; scan = 11 profile fits (Newton "
        "steps from the best fit's conditional mean); ranking = 4 such fits per nuisance "
        "parameter",
        "pyhf: the same spec, pyhf.Workspace(spec).model() + pyhf.infer.mle.fit("
        "return_uncertainties=True); MINOS = its Minuit's minos(); scan = "
        "pyhf.infer.mle.fixed_poi_fit per point; ranking = fit with the parameter fixed, "
        f"timed on {PYHF_RANKING_SAMPLE} parameters and scaled to all",
    ]
    return table


def _rows(table: BenchTable, label: str, path: Path, fit_cfg: Any, cfg: Any, inference: Any,
          workspace: Any, np: Any, pyhf: Any) -> None:
    spec0 = workspace.build(path, fit_cfg, cfg)
    inference.fit(spec0, minos=None)  # numba warm
    t_build, spec = _timed(lambda: workspace.build(path, fit_cfg, cfg))
    t_lh, lh = _timed(lambda: inference.Likelihood.from_spec(spec))
    t_fit, best = _timed(lambda: inference.fit(lh, minos=None, fit_cfg=fit_cfg))
    t_minos, best_m = _timed(lambda: inference.fit(lh, fit_cfg=fit_cfg))
    t_scan, _ = _timed(lambda: inference.scan(lh, best=best, fit_cfg=fit_cfg))
    t_rank, rank = _timed(lambda: inference.ranking(lh, best=best, fit_cfg=fit_cfg))
    t_gof, _ = _timed(lambda: inference.goodness_of_fit(lh, best=best, fit_cfg=fit_cfg))
    t_asimov, _ = _timed(lambda: inference.asimov_uncertainty(lh, fit_cfg=fit_cfg))

    t_pyhf, (model, data, (res, obj)) = _timed(lambda: _pyhf_fit(spec))
    poi_i = model.config.poi_index
    poi = model.config.poi_name
    try:
        t_pminos, _ = _timed(lambda: obj.minuit.minos(poi))
        me = obj.minuit.merrors[poi]
        pyhf_minos = f"{res[poi_i, 0]:.4f} {me.lower:+.4f}/{me.upper:+.4f}"
    except Exception as exc:  # pyhf's minimum may be invalid: say so
        t_pminos, pyhf_minos = float("nan"), f"MINOS failed ({type(exc).__name__})"
    grid = np.linspace(*_scan_range(best, fit_cfg), fit_cfg.minimizer.scan_points)

    scan_fails = 0

    def pyhf_scan() -> None:
        nonlocal scan_fails
        for v in grid:
            try:
                pyhf.infer.mle.fixed_poi_fit(v, data, model)
            except Exception:  # an invalid Minuit minimum: counted in the table
                scan_fails += 1

    t_pscan, _ = _timed(pyhf_scan)
    names = list(rank.labels[:PYHF_RANKING_SAMPLE])
    prefit = {lh.labels[i]: s for i, s in lh.constrained_sigma().items()}
    fails = 0

    def pyhf_rank() -> None:
        nonlocal fails
        init = model.config.suggested_init()
        fixed = model.config.suggested_fixed()
        for name in names:
            i = model.config.par_names.index(name)
            lo, hi = model.config.suggested_bounds()[i]
            for shift in (prefit[name], -prefit[name], float(res[i, 1]), -float(res[i, 1])):
                pars = list(init)
                pars[i] = min(hi, max(lo, float(res[i, 0]) + shift))
                fx = list(fixed)
                fx[i] = True
                try:
                    pyhf.infer.mle.fit(data, model, init_pars=pars, fixed_params=fx)
                except Exception:
                    fails += 1

    t_prank_sample, _ = _timed(pyhf_rank)
    t_prank = t_prank_sample * len(rank.labels) / max(1, len(names))
    ours_poi = best_m.value(best_m.poi)
    lo, hi = best_m.minos[best_m.poi]

    def ratio(a: float, b: float) -> str:
        return f"{b / a:.1f}x" if a > 0 and np.isfinite(b) else "-"

    t_ours_fit = t_build + t_lh + t_fit
    t_pyhf_fit = t_build + t_pyhf
    table.rows += [
        [f"{label}:", "", "", "", "", ""],
        ["  build + fit (MIGRAD+HESSE)", t_ours_fit, t_pyhf_fit, ratio(t_ours_fit, t_pyhf_fit),
         f"{ours_poi[0]:.4f} +- {ours_poi[1]:.4f}",
         f"{res[poi_i, 0]:.4f} +- {res[poi_i, 1]:.4f}"],
        ["  build + fit with MINOS", t_build + t_lh + t_minos,
         t_pyhf_fit + t_pminos, ratio(t_build + t_lh + t_minos, t_pyhf_fit + t_pminos),
         f"{ours_poi[0]:.4f} {lo:+.4f}/{hi:+.4f}", pyhf_minos],
        [f"  {len(grid)}-point scan", t_scan, t_pscan, ratio(t_scan, t_pscan), "",
         f"{scan_fails} of {len(grid)} fits failed" if scan_fails else ""],
        [f"  ranking ({len(rank.labels)} parameters)", t_rank, t_prank,
         ratio(t_rank, t_prank), f"{len(rank.failures)} failed fits",
         f"{fails} of {4 * len(names)} sampled fits failed"],
        ["  goodness of fit / Asimov", t_gof + t_asimov, "-", "-", "", ""],
    ]
    fmin = obj.minuit.fmin
    table.notes.append(
        f"{label}: pyhf's minimum valid {fmin.is_valid}, covariance accurate "
        f"{fmin.has_accurate_covar}, forced pos-def {fmin.has_made_posdef_covar}; -2lnL "
        f"ours {best.best_twice_nll:.5f}, pyhf {float(obj.fun):.5f}")


def _scan_range(best: Any, fit_cfg: Any) -> tuple[float, float]:
    i = best.poi_index
    c, e = best.bestfit[i], best.uncertainty[i]
    k = fit_cfg.minimizer.scan_sigmas
    lo, hi = fit_cfg.poi_bounds
    return max(lo, c - k * e), min(hi, c + k * e)
