"""The post-histogram stage: workspace -> best fit -> studies -> fit plots ->
``fit_results.json`` (:func:`run_inference`; :func:`run_stage` for the runner), and the warm-up
that loads the fit's machinery ahead of it (:func:`prepare`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from agc_core.config import FitConfig, load_fit_config
from agc_core.errors import AGCError
from agc_core.inference import studies
from agc_core.inference.likelihood import Likelihood
from agc_core.inference.minimize import FitError, default_fit_config, minimizer_settings
from agc_core.inference.mle import fit
from agc_core.inference.profile import profile_fit
from agc_core.inference.results import (
    FIT_RESULTS_FILE_NAME,
    FitResult,
    InferenceResult,
    json_ready,
    write_results,
)
from agc_core.inference.yields import prefit_covariance, yield_table
from agc_core.outputs import write_text_atomic

log = logging.getLogger(__name__)


def _warmup_spec() -> dict[str, Any]:
    """A two-bin, two-sample workspace with every modifier type the fit model uses."""
    norm = {"name": "n", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    stat = {"name": "staterror_c", "type": "staterror", "data": [1.0, 0.5]}
    return {
        "channels": [{"name": "c", "samples": [
            {"name": "s", "data": [10.0, 5.0], "modifiers": [
                {"name": "mu", "type": "normfactor", "data": None}, norm,
                {"name": "h", "type": "histosys",
                 "data": {"hi_data": [11.0, 5.5], "lo_data": [9.0, 4.5]}}, stat]},
            {"name": "b", "data": [20.0, 8.0], "modifiers": [stat, norm]}]}],
        "observations": [{"name": "c", "data": [31.0, 13.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0"}


def prepare() -> FitResult:
    """Load what the fit stage needs, ahead of it: the schema validator, iminuit and the
    likelihood's numba kernels (numba's start-up and cache loading: ~0.7 s in a process that
    has not called numba yet), by fitting a two-bin model. The runner calls it in a thread
    while the workers start; the fit of the run then takes ~0.1 s.

    Returns:
        The warm-up model's best fit.
    """
    from agc_core import workspace

    spec = _warmup_spec()
    workspace.validate_spec(spec)
    lh = Likelihood.from_spec(spec)
    best = fit(lh, minos=(lh.poi,), quiet=True)
    profile_fit(lh, {"n": 0.5}, best, minimizer_settings(default_fit_config()), "the warm-up fit")
    lh.hessian(best.bestfit)
    return best


def run_inference(histograms: Any, output_dir: str | Path, fit_cfg: FitConfig | None = None,
                  cfg: Any = None, split_by_classification: bool = False, ranking: bool = True,
                  scan: bool = True, plots: bool = True, plot_pool: Any = None
                  ) -> InferenceResult:
    """Workspace, best fit, goodness of fit, expected uncertainty, scan, ranking, fit plots.

    Writes ``workspace.json``, ``fit_results.json`` and (with ``plots``) the fit plots in
    ``output_dir/plots``. A fit that does not converge is recorded by name in ``errors`` (the
    studies that need the best fit are then skipped); nothing is silently used.

    Args:
        histograms: ``histograms.root``, ``histograms_full.npz`` or the run's full histogram.
        output_dir: where the outputs go.
        fit_cfg: fit configuration (default: the packaged one).
        cfg: analysis configuration (default: the packaged one).
        split_by_classification: two channels per region by MLP classification.
        ranking: rank the nuisance parameters; scan: scan the POI; plots: draw the plots.
        plot_pool: a background :class:`agc_core.plots.PlotPool` to draw the fit plots in
            while the studies run (pulls, correlations and yields after the best fit, scan and
            ranking after theirs); None draws them here at the end.

    Raises:
        InputError: unreadable or missing histograms. ModelError: an unusable model.
    """
    from agc_core import workspace as ws
    from agc_core.config import load_analysis_config

    out = Path(output_dir)
    cfg = cfg or load_analysis_config()
    fit_cfg = fit_cfg or load_fit_config(cfg=cfg)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    spec = ws.build(histograms, fit_cfg, cfg, split_by_classification)
    ws_path = ws.write(spec, out / ws.WORKSPACE_FILE_NAME)
    lh = Likelihood.from_spec(spec)
    seconds["workspace"] = time.perf_counter() - t
    errors: list[str] = []
    study_errors: list[str] = []
    best = gof = asimov = scan_r = rank_r = None

    def attempt(name: str, fn: Any, into: list[str] = study_errors) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except FitError as exc:
            log.error("%s", exc)
            into.append(str(exc))
            return None
        finally:
            seconds[name] = time.perf_counter() - t0

    best = attempt("fit", lambda: fit(lh, minos=(lh.poi,), fit_cfg=fit_cfg), errors)
    prefit = yield_table(lh, lh.init, prefit_covariance(lh))
    postfit = (yield_table(lh, best.bestfit, best.covariance) if best is not None
               and best.covariance is not None else {})
    submitted: list[str] = []
    if plots and plot_pool is not None:
        from agc_core.inference import plots as fit_plots

        t0 = time.perf_counter()
        submitted += plot_pool.submit_all(fit_plots.plot_jobs(
            out / "plots", lh, best, prefit, postfit, None, None, cfg, fit_cfg))
        seconds["plots"] = time.perf_counter() - t0
    if best is not None:
        gof = attempt("gof", lambda: studies.goodness_of_fit(lh, best, fit_cfg))
        if scan:
            scan_r = attempt("scan", lambda: studies.scan(lh, best=best, fit_cfg=fit_cfg))
            if scan_r is not None:
                study_errors.extend(scan_r.failures)
        if ranking:
            rank_r = attempt("ranking", lambda: studies.ranking(lh, best=best, fit_cfg=fit_cfg))
            if rank_r is not None:
                study_errors.extend(rank_r.failures)
    asimov = attempt("asimov", lambda: studies.asimov_uncertainty(lh, fit_cfg))
    drawn: tuple[Path, ...] = ()
    if plots and plot_pool is not None:  # the scan and ranking plots, then all of them back
        from agc_core.inference import plots as fit_plots

        t0 = time.perf_counter()
        submitted += plot_pool.submit_all(fit_plots.plot_jobs(
            out / "plots", lh, None, {}, {}, scan_r, rank_r, cfg, fit_cfg))
        drawn = tuple(plot_pool.wait(submitted))
        seconds["plots"] += time.perf_counter() - t0
    elif plots:
        from agc_core.inference import plots as fit_plots

        t0 = time.perf_counter()
        drawn = tuple(fit_plots.draw_all(out / "plots", lh, best, prefit, postfit, scan_r,
                                         rank_r, cfg, fit_cfg))
        seconds["plots"] = time.perf_counter() - t0
    results_path = out / FIT_RESULTS_FILE_NAME
    record: dict[str, Any] = {"ok": not errors, "errors": errors,
                              "study_errors": study_errors,
                              "split_by_classification": split_by_classification,
                              "prefit_yields": prefit, "postfit_yields": postfit}
    for key, value in (("gof", gof), ("expected", asimov), ("scan", scan_r),
                       ("ranking", rank_r)):
        if value is not None:
            record[key] = value.as_dict()
    if best is not None:
        write_results(results_path, best, **record)
    else:
        write_text_atomic(results_path, json.dumps(json_ready(record), indent=1) + "\n")
    result = InferenceResult(ws_path, results_path, best, gof, asimov, scan_r, rank_r, prefit,
                             postfit, tuple(name for name, _ in lh.channels),
                             split_by_classification, tuple(errors), tuple(study_errors),
                             drawn, seconds)
    log.info("%s", result.summary_line())
    return result


def run_stage(ctx: Any) -> dict[str, Path]:
    """The runner's post-histogram stage (``runner.POST_STAGES``): :func:`run_inference` on
    the run's full histogram; the result goes to ``ctx.results['fit_result']``, a failure
    message to ``ctx.results['fit_error']`` (the run's exit code becomes 1). Missing inputs
    (e.g. ``--systematics none`` has no pseudodata) skip the fit with a warning."""
    from agc_core.errors import InputError

    o = ctx.options
    if not o.fit or o.io_only:
        return {}
    plots = o.plots
    try:
        fit_cfg = load_fit_config(o.fit_config, ctx.cfg)
        result = run_inference(
            ctx.hist, ctx.output_dir, fit_cfg, ctx.cfg, o.split_by_classification,
            ranking=plots if o.fit_ranking is None else o.fit_ranking,
            scan=plots if o.fit_scan is None else o.fit_scan, plots=plots,
            plot_pool=getattr(ctx, "plot_pool", None))
    except InputError as exc:
        log.warning("fit skipped: %s", exc)
        ctx.results["fit_skipped"] = str(exc)
        return {}
    except AGCError as exc:
        log.error("fit failed: %s", exc)
        ctx.results["fit_error"] = str(exc)
        return {}
    ctx.results["fit_result"] = result
    if result.errors:
        ctx.results["fit_error"] = result.errors[0]
    for message in result.study_errors:
        log.warning("fit study: %s", message)
    outputs = {"workspace.json": result.workspace, FIT_RESULTS_FILE_NAME: result.results_file}
    outputs.update({f"plots/{p.name}": p for p in result.plots})
    return outputs


# ---------------------------------------------------------------------------------------------
