"""The maximum-likelihood fit: MIGRAD, Newton polish, HESSE, MINOS (:func:`fit`).

MIGRAD steers by the Gauss-Newton Hessian, HESSE uses the exact one. Where Minuit2's MINOS is
not valid, the same crossings of ``-2 ln L = min + 1`` are found by profile fits
(:func:`_crossing`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from agc_core.config import FitConfig, MinimizerSettings
from agc_core.inference.likelihood import Likelihood
from agc_core.inference.minimize import (
    NEWTON_EDM_FRACTION,
    FitError,
    SwitchableHessian,
    as_likelihood,
    default_fit_config,
    minimize,
    minimizer_settings,
    newton,
)
from agc_core.inference.results import FitDiagnostics, FitResult

log = logging.getLogger(__name__)

#: HESSE and MINOS (half width) disagreeing by more than this is flagged in the diagnostics
HESSE_MINOS_TOLERANCE = 0.2


def _polish(lh: Likelihood, m: Any, switch: SwitchableHessian | None, fixed: Sequence[bool],
            settings: MinimizerSettings, what: str) -> tuple[Any, SwitchableHessian | None]:
    """Newton steps from MIGRAD's minimum down to 1/1000 of its EDM goal (:func:`newton`):
    MIGRAD stops anywhere within its EDM goal, up to ~1e-3 of a parameter's uncertainty
    along the profile's flat directions. Where they reach a lower -2 ln L, MIGRAD restarts
    there (for HESSE and MINOS, which work on its state); otherwise MIGRAD's minimum stays."""
    if not lh.analytic:
        return m, switch
    free = ~np.asarray(fixed, dtype=bool)
    out = newton(lh, np.array(m.values, dtype=float), free,
                  0.002 * settings.tolerance * NEWTON_EDM_FRACTION)
    if out is None or not out[1] < float(m.fval):
        return m, switch
    try:
        polished, _, polished_switch = minimize(lh, out[0], fixed, settings, what)
    except FitError:
        return m, switch
    if float(polished.fval) > float(m.fval):
        return m, switch
    return polished, polished_switch


def fit(spec: dict[str, Any] | Likelihood, minos: Sequence[str] | str | None = ("ttbar_norm",),
        fit_cfg: FitConfig | MinimizerSettings | None = None, init: np.ndarray | None = None,
        fix: dict[str, float] | None = None, hesse: bool = True,
        what: str = "the best fit", quiet: bool = False) -> FitResult:
    """Maximum-likelihood fit: MIGRAD, HESSE, MINOS on the given parameters.

    Args:
        spec: a workspace spec, or a compiled :class:`Likelihood` (e.g. with other data).
        minos: parameter names for MINOS (absent names are ignored; None or () for none).
        fit_cfg: the fit configuration or minimizer settings (default: the packaged one's).
        init: starting values (default: the model's).
        fix: parameters to fix at a value (in addition to the model's fixed ones).
        hesse: run HESSE (otherwise the uncertainties come from MIGRAD's estimate).
        what: the fit's name in messages.
        quiet: log the fit's warnings at debug level (the many fits of a scan or ranking).

    Returns:
        The :class:`FitResult`.

    Raises:
        FitError: MIGRAD did not converge even with the retry strategy.
    """
    t0 = time.perf_counter()
    lh = as_likelihood(spec)
    settings = minimizer_settings(fit_cfg if fit_cfg is not None else default_fit_config())
    x0 = np.array(lh.init if init is None else init, dtype=float)
    fixed = list(lh.fixed)
    for name, value in (fix or {}).items():
        i = lh.labels.index(name)
        x0[i] = value
        fixed[i] = True
    m, strategies, switch = minimize(lh, x0, fixed, settings, what)
    m, switch = _polish(lh, m, switch, fixed, settings, what)
    if hesse:
        if switch is not None:
            switch.exact = True
        m.hesse()
        if switch is not None:
            switch.exact = False
    if isinstance(minos, str):
        minos = (minos,)
    minos_out: dict[str, tuple[float, float]] = {}
    minos_valid: dict[str, bool] = {}
    ratios: dict[str, float] = {}
    methods: dict[str, str] = {}
    for name in minos or ():
        if name not in lh.labels or fixed[lh.labels.index(name)]:
            continue
        i = lh.labels.index(name)
        err = float(m.errors[name])
        try:
            m.minos(name)
            me = m.merrors[name]
            interval, valid = (float(me.lower), float(me.upper)), bool(me.is_valid)
        except RuntimeError as exc:  # iminuit refuses (e.g. the minimum lost validity)
            log.info("%s: MINOS of %s failed (%s)", what, name, exc)
            interval, valid = (float("nan"), float("nan")), False
        if not valid:
            # Minuit2's MINOS gives up on some of these likelihoods (with the exact Hessian its
            # crossing search can stop after a few calls): find the same crossings of
            # -2 ln L = min + 1 with profile fits, each side by Newton steps on sqrt(delta)
            log.info("%s: MINOS of %s not valid, finding the crossings by profile fits",
                     what, name)
            best_x = np.array(m.values, dtype=float)
            best_nll = float(lh.twice_nll(best_x))
            interval = tuple(_crossing(lh, best_x, best_nll, i, side, err, fixed, settings,
                                       what) - best_x[i] for side in (-1.0, 1.0))
            valid = all(math.isfinite(v) for v in interval)
            methods[name] = "profile"
        else:
            methods[name] = "minos"
        minos_out[name] = (float(interval[0]), float(interval[1]))
        minos_valid[name] = valid
        me_lower, me_upper = minos_out[name]
        ratios[name] = (0.5 * (me_upper - me_lower) / err) if err > 0 else float("nan")
    result = _result(m, lh, fixed, strategies, minos_out, minos_valid, ratios, methods,
                     time.perf_counter() - t0, hesse)
    for w in result.diagnostics.warnings:
        log.log(logging.DEBUG if quiet else logging.WARNING, "%s: %s", what, w)
    return result


def _crossing(lh: Likelihood, best_x: np.ndarray, best_nll: float, i: int, side: float,
              err: float, fixed: Sequence[bool], settings: MinimizerSettings, what: str,
              max_steps: int = 12) -> float:
    """Where the profile ``-2 ln L`` of parameter ``i`` crosses its minimum + 1 on one side.

    Newton steps on ``sqrt(delta)``, which is linear in the parameter for a parabolic profile
    (one step then suffices), each a fit with the parameter fixed, warm-started from the last.
    Returns the bound if the profile stays below the crossing up to it, NaN if a profile fit
    does not converge.
    """
    lo, hi = lh.bounds[i]
    edge = hi if side > 0 else lo
    x = best_x.copy()
    c = best_x[i]
    v = c + side * (err if err > 0 else 0.1 * max(1.0, abs(c)))
    last = None
    for _ in range(max_steps):
        v = min(hi, max(lo, v))
        fix = list(fixed)
        fix[i] = True
        x[i] = v
        try:
            m, _, _ = minimize(lh, x, fix, settings, f"{what}: the profile fit at "
                                                   f"{lh.labels[i]} = {v:.4g}")
        except FitError as exc:
            log.warning("%s", exc)
            return float("nan")
        x = np.array(m.values, dtype=float)
        delta = max(0.0, float(lh.twice_nll(x)) - best_nll)
        root = math.sqrt(delta)
        if abs(delta - 1.0) < 1e-3:
            return v
        if v == edge and delta < 1.0:
            return v
        if last is not None and last[1] != root:
            slope = (root - last[1]) / (v - last[0])
        else:
            slope = root / (v - c) if v != c else 0.0
        if slope * side <= 0:
            return float("nan")
        last = (v, root)
        v = v + (1.0 - root) / slope
    return v



def _result(m: Any, lh: Likelihood, fixed: Sequence[bool], strategies: tuple[int, ...],
            minos_out: dict[str, tuple[float, float]], minos_valid: dict[str, bool],
            ratios: dict[str, float], methods: dict[str, str], seconds: float,
            hesse: bool = True) -> FitResult:
    values = np.array(m.values, dtype=float)
    errors = np.array(m.errors, dtype=float)
    errors[np.asarray(fixed)] = 0.0
    n = len(values)
    cov = np.zeros((n, n))
    if m.covariance is not None:
        cov = np.array(m.covariance, dtype=float)
    free = ~np.asarray(fixed)
    diag = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(diag, diag) > 0, cov / np.outer(diag, diag), 0.0)
    corr[np.diag_indices(n)] = np.where(free, 1.0, 0.0)
    fmin = m.fmin
    at_limit = []
    for i, (lo, hi) in enumerate(lh.bounds):
        if free[i] and (values[i] - lo < 1e-6 * max(1.0, abs(lo))
                        or hi - values[i] < 1e-6 * max(1.0, abs(hi))):
            at_limit.append(lh.labels[i])
    warnings = []
    if hesse and not fmin.has_accurate_covar:
        warnings.append("HESSE covariance not accurate")
    if hesse and fmin.has_made_posdef_covar:
        warnings.append("HESSE covariance was forced positive-definite: uncertainties are "
                        "not trustworthy")
    if at_limit:
        warnings.append(f"parameters at a bound: {', '.join(at_limit)}")
    agree = all(abs(r - 1.0) <= HESSE_MINOS_TOLERANCE for r in ratios.values()
                if math.isfinite(r))
    for name, r in ratios.items():
        if not minos_valid[name]:
            warnings.append(f"MINOS of {name} not valid")
        if math.isfinite(r) and abs(r - 1.0) > HESSE_MINOS_TOLERANCE:
            warnings.append(f"HESSE and MINOS disagree on {name}: MINOS half width / HESSE "
                            f"= {r:.2f}")
    diagnostics = FitDiagnostics(
        valid=bool(m.valid), edm=float(fmin.edm), edm_goal=float(fmin.edm_goal),
        nfcn=int(m.nfcn), ngrad=int(m.ngrad), strategies=strategies,
        hesse_accurate=bool(fmin.has_accurate_covar),
        hesse_forced_posdef=bool(fmin.has_made_posdef_covar), at_limit=tuple(at_limit),
        minos_valid=minos_valid, minos_method=methods, hesse_minos_ratio=ratios,
        hesse_minos_agree=agree,
        analytic=lh.analytic, seconds=seconds, warnings=tuple(warnings))
    return FitResult(labels=lh.labels, bestfit=values, uncertainty=errors, corr_mat=corr,
                     best_twice_nll=float(lh.twice_nll(values)), minos=minos_out,
                     diagnostics=diagnostics, poi_index=lh.poi_index, covariance=cov)

