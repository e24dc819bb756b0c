"""Yield tables: expected events per channel, sample and bin with the total's uncertainty
propagated through the likelihood's Jacobian (pre-fit and post-fit)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agc_core.inference.likelihood import Likelihood


def yield_table(lh: Likelihood, x: np.ndarray, cov: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per channel: yields per sample and bin, the total, its uncertainty and the data.

    The total's uncertainty propagates ``cov`` through the analytic Jacobian of the expected
    bins (``sqrt(J C J^T)`` per bin and for the channel's sum), so a full post-fit covariance
    gives the correlated band.
    """
    x = np.asarray(x, dtype=float)
    by_sample = lh.expected_by_sample(x)
    if lh.analytic:
        jac = lh._jacobian(lh._parts(x)).sum(axis=1)                      # (P, B)
    else:
        eps = 1e-6
        jac = np.array([(lh.expected_data(x + eps * e) - lh.expected_data(x - eps * e))
                        / (2 * eps) for e in np.eye(lh.n_pars)])
    out: dict[str, dict[str, Any]] = {}
    start = 0
    for name, n in lh.channels:
        sl = slice(start, start + n)
        start += n
        j = jac[:, sl]
        var = np.einsum("pb,pq,qb->b", j, cov, j)
        j_sum = j.sum(axis=1)
        out[name] = {
            "samples": {s: by_sample[i, sl].tolist() for i, s in enumerate(lh.samples)},
            "total": by_sample[:, sl].sum(axis=0).tolist(),
            "total_unc": np.sqrt(np.clip(var, 0, None)).tolist(),
            "sum": float(by_sample[:, sl].sum()),
            "sum_unc": float(math.sqrt(max(0.0, j_sum @ cov @ j_sum))),
            "data": lh.data[sl].tolist(),
        }
    return out


def prefit_covariance(lh: Likelihood) -> np.ndarray:
    """Diagonal pre-fit covariance: the constraint widths (0 for unconstrained parameters)."""
    cov = np.zeros((lh.n_pars, lh.n_pars))
    for i, s in lh.constrained_sigma().items():
        if not lh.fixed[i]:
            cov[i, i] = s ** 2
    return cov


