"""Beyond the best fit: :func:`scan` (profile likelihood of the POI), :func:`ranking` (pre-
and post-fit impact of every nuisance parameter on the POI), :func:`goodness_of_fit`
(saturated model) and :func:`asimov_uncertainty` (expected uncertainty). Scan and ranking fits
start from the best fit."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agc_core.config import FitConfig, MinimizerSettings
from agc_core.inference.likelihood import Likelihood, _poisson_twice_nll
from agc_core.inference.minimize import (
    FitError,
    as_likelihood,
    default_fit_config,
    minimizer_settings,
)
from agc_core.inference.mle import fit
from agc_core.inference.profile import profile_fit
from agc_core.inference.results import (
    ExpectedUncertainty,
    FitResult,
    GoodnessOfFit,
    RankingResult,
    ScanResult,
)

log = logging.getLogger(__name__)


def chi2_sf(ndof: int, x: float, eps: float = 1e-15, max_terms: int = 10_000) -> float:
    """Survival function of the chi-square distribution, ``P(chi2_ndof > x)``: the regularized
    upper incomplete gamma function ``Q(ndof / 2, x / 2)`` (its series below ``a + 1``, its
    continued fraction above; what SciPy's ``chdtrc`` gives, without importing SciPy's
    special functions: 0.1 s)."""
    a, y = 0.5 * ndof, 0.5 * x
    if y <= 0.0:
        return 1.0
    log_front = a * math.log(y) - y - math.lgamma(a)
    if y < a + 1.0:  # P(a, y) by its series
        term = total = 1.0 / a
        for k in range(1, max_terms):
            term *= y / (a + k)
            total += term
            if abs(term) < abs(total) * eps:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # Q(a, y) by its continued fraction (modified Lentz)
    b = y + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for k in range(1, max_terms):
        an = -k * (k - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return math.exp(log_front) * h



def _best(lh: Likelihood, best: FitResult | None, settings: MinimizerSettings) -> FitResult:
    return best if best is not None else fit(lh, minos=None, fit_cfg=settings)


def scan(spec: dict[str, Any] | Likelihood, name: str | None = None,
         values: Sequence[float] | None = None, best: FitResult | None = None,
         fit_cfg: FitConfig | MinimizerSettings | None = None) -> ScanResult:
    """Profile-likelihood scan: refit with ``name`` fixed at each value.

    Args:
        spec: a workspace spec or :class:`Likelihood`.
        name: the parameter (default: the POI).
        values: where to fix it (default: ``scan_points`` values over best fit +-
            ``scan_sigmas`` HESSE uncertainties, within its bounds).
        best: the best fit (computed if not given); the scan fits start from it.
        fit_cfg: fit configuration or minimizer settings.

    Raises:
        FitError: the best fit (when not given) did not converge; a scan point that does not
            converge is named in ``failures`` and left NaN.
    """
    lh = as_likelihood(spec)
    settings = minimizer_settings(fit_cfg if fit_cfg is not None else default_fit_config())
    best = _best(lh, best, settings)
    name = name or lh.poi
    i = lh.labels.index(name)
    if values is None:
        lo, hi = lh.bounds[i]
        c, e = best.bestfit[i], best.uncertainty[i]
        values = np.linspace(max(lo, c - settings.scan_sigmas * e),
                             min(hi, c + settings.scan_sigmas * e), settings.scan_points)
    grid = np.asarray(values, dtype=float)
    out = np.empty_like(grid)
    failures: list[str] = []
    for j, v in enumerate(grid):
        try:
            _, twice_nll, _ = profile_fit(lh, {name: float(v)}, best, settings,
                                          f"the scan fit at {name} = {v:.4g}")
        except FitError as exc:  # named, the point left undefined, the rest goes on
            log.error("%s", exc)
            failures.append(str(exc))
            out[j] = np.nan
            continue
        out[j] = twice_nll - best.best_twice_nll
    return ScanResult(name, grid, out, float(best.bestfit[i]), tuple(failures))


def ranking(spec: dict[str, Any] | Likelihood, best: FitResult | None = None,
            fit_cfg: FitConfig | MinimizerSettings | None = None,
            parameters: Sequence[str] | None = None) -> RankingResult:
    """Pre- and post-fit impact of every constrained nuisance parameter on the POI.

    Args:
        spec: a workspace spec or :class:`Likelihood`.
        best: the best fit (computed if not given); every impact fit starts from it.
        fit_cfg: fit configuration or minimizer settings.
        parameters: restrict to these parameters (default: every free constrained one).

    Raises:
        FitError: the best fit (when not given) did not converge; an impact fit that does
            not converge is named in ``failures`` and left NaN.
    """
    lh = as_likelihood(spec)
    settings = minimizer_settings(fit_cfg if fit_cfg is not None else default_fit_config())
    best = _best(lh, best, settings)
    prefit = lh.constrained_sigma()
    poi = lh.poi_index
    chosen = [i for i in prefit if not lh.fixed[i]
              and (parameters is None or lh.labels[i] in parameters)]
    impacts = np.zeros((len(chosen), 4))
    failures: list[str] = []
    for row, i in enumerate(chosen):
        name = lh.labels[i]
        lo, hi = lh.bounds[i]
        c = best.bestfit[i]
        for col, shift in enumerate((prefit[i], -prefit[i], best.uncertainty[i],
                                     -best.uncertainty[i])):
            v = min(hi, max(lo, c + shift))
            try:
                x, _, _ = profile_fit(lh, {name: v}, best, settings,
                                      f"the ranking fit with {name} = {v:.4g}")
            except FitError as exc:  # named, the impact left undefined, the rest goes on
                log.error("%s", exc)
                failures.append(str(exc))
                impacts[row, col] = np.nan
                continue
            impacts[row, col] = x[poi] - best.bestfit[poi]
    order = np.argsort(-np.nanmax(np.abs(np.nan_to_num(impacts[:, 2:], nan=0.0)), axis=1),
                       kind="stable")
    idx = [chosen[j] for j in order]
    imp = impacts[order]
    return RankingResult(lh.poi, tuple(lh.labels[i] for i in idx), best.bestfit[idx],
                         best.uncertainty[idx], imp[:, 0], imp[:, 1], imp[:, 2], imp[:, 3],
                         tuple(failures))


def goodness_of_fit(spec: dict[str, Any] | Likelihood, best: FitResult | None = None,
                    fit_cfg: FitConfig | MinimizerSettings | None = None) -> GoodnessOfFit:
    """Saturated-model goodness-of-fit p-value (see :class:`GoodnessOfFit`)."""
    lh = as_likelihood(spec)
    settings = minimizer_settings(fit_cfg if fit_cfg is not None else default_fit_config())
    best = _best(lh, best, settings)
    saturated = (_poisson_twice_nll(lh.data, lh.data)
                 + lh.constraint_twice_nll(best.bestfit))
    twice_delta = best.best_twice_nll - saturated
    ndof = len(lh.data) - lh.n_unconstrained()
    return GoodnessOfFit(chi2_sf(ndof, twice_delta), float(twice_delta), int(ndof))


def asimov_uncertainty(spec: dict[str, Any] | Likelihood,
                       fit_cfg: FitConfig | MinimizerSettings | None = None
                       ) -> ExpectedUncertainty:
    """The POI's expected uncertainty from a fit of the pre-fit Asimov data (HESSE, MINOS).

    The Asimov data are the model's expectation at its initial parameter values (POI
    nominal, nuisance parameters at their auxiliary values).
    """
    lh = as_likelihood(spec)
    asimov = lh.with_data(lh.expected_data(lh.init), lh.expected_aux(lh.init))
    r = fit(asimov, minos=(lh.poi,), fit_cfg=fit_cfg, what="the Asimov fit")
    down, up = r.minos.get(lh.poi, (float("nan"), float("nan")))
    return ExpectedUncertainty(float(r.uncertainty[lh.poi_index]), down, up, r)


# ---------------------------------------------------------------------------------------------
# yields, and the whole inference stage (workspace -> fit -> studies -> plots)
