"""The minimizer: MIGRAD (iminuit) on a :class:`~agc_core.inference.likelihood.Likelihood`
steered by its Gauss-Newton Hessian, with retries (:func:`minimize`), and Newton steps with the
exact Hessian (:func:`newton`).

A minimization that MIGRAD does not declare valid is retried from where it stopped with
``fit.retry_strategy`` (2) and further attempts; still invalid, it raises :class:`FitError`
naming the fit.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from agc_core.config import FitConfig, MinimizerSettings, load_fit_config
from agc_core.errors import AGCError
from agc_core.inference.likelihood import Likelihood

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = MinimizerSettings(strategy=1, retry_strategy=2, tolerance=0.1,
                                     max_calls=100_000, scan_points=11, scan_sigmas=3.0)


class FitError(AGCError):
    """A fit that did not converge (after the retry): the message names the fit."""


def as_likelihood(model: dict[str, Any] | Likelihood) -> Likelihood:
    return model if isinstance(model, Likelihood) else Likelihood.from_spec(model)


def minimizer_settings(fit_cfg: FitConfig | MinimizerSettings | None) -> MinimizerSettings:
    if isinstance(fit_cfg, MinimizerSettings):
        return fit_cfg
    if isinstance(fit_cfg, FitConfig):
        return fit_cfg.minimizer
    return DEFAULT_SETTINGS


class SwitchableHessian:
    """The Hessian handed to Minuit: :meth:`Likelihood.fisher_hessian` while MIGRAD steers by
    it (``exact = False``), :meth:`Likelihood.hessian` for HESSE (``exact = True``)."""

    def __init__(self, lh: Likelihood, exact: bool = False) -> None:
        self.lh = lh
        self.exact = exact

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = self.lh.hessian(x) if self.exact else self.lh.fisher_hessian(x)
        return h if np.all(np.isfinite(h)) else np.eye(len(h))

    def g2(self, x: np.ndarray) -> np.ndarray:
        return np.diag(self(x)).copy()


def make_minuit(lh: Likelihood, x0: np.ndarray, fixed: Sequence[bool],
            settings: MinimizerSettings, hessian: str = "fisher"
            ) -> tuple[Any, SwitchableHessian | None]:
    """A Minuit object on ``lh`` and its Hessian switch (None for ``none``, which selects
    the exact Hessian for HESSE); ``hessian``: ``fisher``, ``exact`` or ``none`` (Minuit's own
    approximation)."""
    from iminuit import Minuit
    from iminuit.warnings import IMinuitWarning

    switch = None
    if lh.analytic and hessian == "none":
        m = Minuit(lh.objective, np.array(x0, dtype=float), grad=lh.safe_grad,
                   name=lh.labels)
    elif lh.analytic:
        switch = SwitchableHessian(lh, exact=hessian == "exact")
        # g2 beside the Hessian: Minuit2 calls it when the Hessian is not positive-definite
        # (iminuit warns that the Hessian overrides it, and without it the call fails)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IMinuitWarning)
            m = Minuit(lh.objective, np.array(x0, dtype=float), grad=lh.safe_grad,
                       hessian=switch, g2=switch.g2, name=lh.labels)
    else:
        m = Minuit(lh.objective, np.array(x0, dtype=float), name=lh.labels)
    m.errordef = Minuit.LEAST_SQUARES  # -2 ln L: one unit is one sigma
    m.limits = list(lh.bounds)
    m.fixed = list(fixed)
    m.strategy = settings.strategy
    m.tol = settings.tolerance
    m.print_level = 0
    return m, switch


def minimize(lh: Likelihood, x0: np.ndarray, fixed: Sequence[bool],
              settings: MinimizerSettings, what: str
              ) -> tuple[Any, tuple[int, ...], SwitchableHessian | None]:
    """MIGRAD, retried when invalid; raises :class:`FitError` if it never converges.

    The attempts, each from where the previous one stopped: ``settings.strategy``, then
    ``settings.retry_strategy``, then a fresh MIGRAD with strategy 0 (a new seed from the
    exact Hessian: a minimum reached next to a bound often only needs a clean restart to be
    declared valid), all with the exact Hessian; then ``settings.strategy`` and
    ``settings.retry_strategy`` with Minuit's own Hessian approximation (its quasi-Newton
    updates cope better far from the minimum, where the exact Hessian is not positive-definite).
    Each attempt runs MIGRAD once (iminuit's own iteration is off, the retries are these).
    """
    strategies: list[int] = []
    m = None
    start = np.array(x0, dtype=float)
    fval0 = lh.objective(start)
    attempts = [(settings.strategy, "fisher"), (settings.retry_strategy, "fisher"),
                (0, "exact"), (settings.strategy, "none"), (settings.retry_strategy, "none")]
    if not lh.analytic:
        attempts = [(settings.strategy, "none"), (settings.retry_strategy, "none")]
    for strategy, exact in attempts:
        if m is not None:
            log.debug("%s: MIGRAD invalid with strategy %d (EDM %.3g, %d calls), retrying "
                      "with strategy %d%s", what, strategies[-1], m.fmin.edm, m.fmin.nfcn,
                      strategy, f" ({exact} Hessian)")
            if np.all(np.isfinite(m.values)) and m.fval <= fval0:  # else: from x0 again
                start = np.array(m.values, dtype=float)
        m, switch = make_minuit(lh, start, fixed, replace(settings, strategy=strategy), exact)
        strategies.append(strategy)
        m.migrad(ncall=settings.max_calls, iterate=1)
        if m.valid:
            if len(strategies) > 1:
                log.debug("%s: converged at attempt %d (strategy %d%s)", what,
                         len(strategies), strategy, f", {exact} Hessian")
            return m, tuple(strategies), switch
    fmin = m.fmin
    reasons = [name for name, flag in (
        ("EDM above maximum", fmin.is_above_max_edm),
        ("call limit reached", fmin.has_reached_call_limit),
        ("covariance not positive-definite", not fmin.has_posdef_covar),
        ("parameter at limit", fmin.has_parameters_at_limit)) if flag]
    raise FitError(f"{what} did not converge: MIGRAD minimum invalid after strategies "
                   f"{', '.join(map(str, strategies))} (EDM {fmin.edm:.3g}, "
                   f"{fmin.nfcn} calls{'; ' + ', '.join(reasons) if reasons else ''})")



#: Newton profile fits (:func:`profile_fit`): EDM goal as a fraction of MIGRAD's
#: (``0.002 * tolerance``), and the most Newton steps before MIGRAD takes over
NEWTON_EDM_FRACTION = 1e-3
NEWTON_MAX_STEPS = 20


def newton(lh: Likelihood, x0: np.ndarray, free: np.ndarray, edm_goal: float,
            max_steps: int = NEWTON_MAX_STEPS) -> tuple[np.ndarray, float, int] | None:
    """Minimize ``lh.twice_nll`` over the ``free`` parameters by Newton steps with a
    backtracking line search, inside the bounds.

    Each step uses the exact Hessian where it is positive-definite (quadratic convergence
    near the minimum), else the Gauss-Newton one (:meth:`Likelihood.fisher_hessian`, what
    MIGRAD steers by: positive semi-definite everywhere, a descent direction).

    Returns (parameters, ``-2 ln L``, steps), or None where Newton is not the right tool:
    neither Hessian is positive-definite, a step leaves the bounds, the line search fails
    or the EDM (``g^T H^-1 g / 2``, Minuit's) stays above ``edm_goal`` after ``max_steps``.
    """
    x = np.array(x0, dtype=float)
    lo = np.array([b[0] for b in lh.bounds])[free]
    hi = np.array([b[1] for b in lh.bounds])[free]
    f = lh.twice_nll(x)
    if not math.isfinite(f):
        return None
    for step in range(max_steps + 1):
        g = lh.grad(x)[free]
        chol = None
        for hessian in (lh.hessian, lh.fisher_hessian):
            h = hessian(x)[np.ix_(free, free)]
            if np.all(np.isfinite(h)):
                try:
                    chol = np.linalg.cholesky(h)
                    break
                except np.linalg.LinAlgError:
                    continue
        if chol is None or not np.all(np.isfinite(g)):
            return None
        direction = -np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        edm = -0.5 * float(g @ direction)
        if edm < edm_goal:
            return x, f, step
        if step == max_steps:
            return None
        t = 1.0
        while True:
            trial = x[free] + t * direction
            if np.any(trial <= lo) or np.any(trial >= hi):
                return None
            xn = x.copy()
            xn[free] = trial
            fn = lh.twice_nll(xn)
            if math.isfinite(fn) and fn <= f + 1e-4 * t * float(g @ direction):
                break
            t *= 0.5
            if t < 1e-6:
                return None
        x, f = xn, fn
    return None


def default_fit_config() -> FitConfig | None:
    try:
        return load_fit_config()
    except AGCError:
        return None

