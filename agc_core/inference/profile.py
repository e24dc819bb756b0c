"""Profile fits: the fit with some parameters fixed, the others at their conditional minimum
(one point of a scan or ranking), by Newton steps from the best fit's covariance."""

from __future__ import annotations

import logging

import numpy as np

from agc_core.config import MinimizerSettings
from agc_core.inference.likelihood import Likelihood
from agc_core.inference.minimize import NEWTON_EDM_FRACTION, newton
from agc_core.inference.mle import fit
from agc_core.inference.results import FitResult

log = logging.getLogger(__name__)


def profile_fit(lh: Likelihood, fix: dict[str, float], best: FitResult,
                settings: MinimizerSettings, what: str) -> tuple[np.ndarray, float, str]:
    """The fit with the parameters ``fix`` fixed, the others at their conditional minimum:
    one point of a scan or ranking.

    Started where the best fit's covariance puts the conditional minimum (the Gaussian
    conditional mean, exact for a parabolic ``-2 ln L``), it is minimized by Newton steps with
    the exact Hessian down to an EDM of :data:`NEWTON_EDM_FRACTION` times MIGRAD's goal (a few
    steps, ~1 ms); where Newton is not the right tool (:func:`newton`), MIGRAD does it from
    the best fit (:func:`fit`).

    Returns:
        (parameters, ``-2 ln L``, ``"newton"`` or ``"migrad"``).

    Raises:
        FitError: MIGRAD did not converge either.
    """
    idx = [lh.labels.index(name) for name in fix]
    x0 = np.array(best.bestfit, dtype=float)
    shift = np.array([fix[lh.labels[i]] - x0[i] for i in idx])
    fixed = np.array(lh.fixed, dtype=bool)
    fixed[idx] = True
    free = ~fixed
    cov = best.covariance
    if lh.analytic and cov is not None and np.all(np.isfinite(cov)):
        c_fx = cov[np.ix_(free, idx)]
        c_xx = cov[np.ix_(idx, idx)]
        try:
            x0[free] += c_fx @ np.linalg.solve(c_xx, shift)
        except np.linalg.LinAlgError:
            pass
        x0[idx] += shift
        goal = 0.002 * settings.tolerance * NEWTON_EDM_FRACTION
        out = newton(lh, x0, free, goal)
        if out is not None:
            return out[0], out[1], "newton"
        log.debug("%s: Newton steps did not converge, MIGRAD from the best fit", what)
    r = fit(lh, minos=None, fit_cfg=settings, init=best.bestfit, fix=fix, hesse=False,
            what=what, quiet=True)
    return r.bestfit, r.best_twice_nll, "migrad"

