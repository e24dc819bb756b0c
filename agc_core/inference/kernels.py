"""The likelihood's numba kernels: pyhf's code4/code4p interpolations and ``-2 ln L`` with
its analytic gradient in one loop (:meth:`agc_core.inference.likelihood.Likelihood.twice_nll`)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)


def _code4_coefficients(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """pyhf's code4 polynomial coefficients a_1..a_6 (alpha0 = 1), shape (6, *hi.shape)."""
    a_inv = np.array([
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ])
    lhi, llo = np.log(hi), np.log(lo)
    b = np.stack([hi - 1, lo - 1, lhi * hi, -llo * lo, lhi ** 2 * hi, llo ** 2 * lo])
    return np.einsum("rc,c...->r...", a_inv, b)


# ---------------------------------------------------------------------------------------------
# the same -2 ln L and gradient as one numba loop (what MIGRAD calls; numpy above is the
# reference and computes the Hessians)


@njit(cache=True)
def _code4_scalar(a: float, c: np.ndarray, k: int, s: int, b: int, lhi: float,
                  llo: float) -> tuple[float, float]:
    """pyhf's code4 factor N(alpha) and its log-derivative N'/N for one (k, s, b)."""
    if a > 1.0:
        return math.exp(a * lhi), lhi
    if a < -1.0:
        return math.exp(-a * llo), -llo
    c0, c1, c2 = c[0, k, s, b], c[1, k, s, b], c[2, k, s, b]
    c3, c4, c5 = c[3, k, s, b], c[4, k, s, b], c[5, k, s, b]
    poly = 1.0 + a * (c0 + a * (c1 + a * (c2 + a * (c3 + a * (c4 + a * c5)))))
    dpoly = c0 + a * (2 * c1 + a * (3 * c2 + a * (4 * c3 + a * (5 * c4 + a * 6 * c5))))
    return poly, dpoly / poly


@njit(cache=True)
def _code4p_scalar(a: float, du: float, dd: float) -> tuple[float, float]:
    """pyhf's code4p additive delta H(alpha) and H'(alpha) for one (k, s, b)."""
    if a > 1.0:
        return a * du, du
    if a < -1.0:
        return a * dd, dd
    s_ = 0.5 * (du + dd)
    a_ = 0.0625 * (du - dd)
    a2 = a * a
    return a * s_ + a2 * a_ * (15 + a2 * (3 * a2 - 10)), s_ + a_ * a * (30 + a2 * (18 * a2 - 40))


@njit(cache=True)
def _nll_and_grad(x: np.ndarray, n_f: int, n_k: int, nom: np.ndarray, coef: np.ndarray,
                  log_hi: np.ndarray, log_lo: np.ndarray, du: np.ndarray, dd: np.ndarray,
                  nf_mask: np.ndarray, gamma_bin: np.ndarray, gamma_mask: np.ndarray,
                  data: np.ndarray, aux: np.ndarray, sigma: np.ndarray, grad: np.ndarray,
                  want_grad: bool) -> float:
    """``-2 ln L`` at ``x`` (and its gradient into ``grad`` when ``want_grad``).

    Shapes: nom (S, B); coef (6, K, S, B); log_hi, log_lo, du, dd (K, S, B); nf_mask
    (F, S, B); gamma_bin (B,) (-1: no gamma); gamma_mask (S, B); data (B,); aux (K + G,);
    sigma (G,); grad (P,).
    """
    n_s, n_b = nom.shape
    g0 = n_f + n_k
    total = 0.0
    if want_grad:
        grad[:] = 0.0
    r = np.empty(n_k)
    h1 = np.empty(n_k)
    d_alpha = np.empty(n_k)
    d_nf = np.empty(n_f)
    for b in range(n_b):
        lam = 0.0
        d_alpha[:] = 0.0
        d_nf[:] = 0.0
        d_gamma = 0.0
        gb = gamma_bin[b]
        for s in range(n_s):
            add = nom[s, b]
            prod = 1.0
            for k in range(n_k):
                a = x[n_f + k]
                nk, rk = _code4_scalar(a, coef, k, s, b, log_hi[k, s, b], log_lo[k, s, b])
                hk, h1k = _code4p_scalar(a, du[k, s, b], dd[k, s, b])
                add += hk
                prod *= nk
                r[k] = rk
                h1[k] = h1k
            nf = 1.0
            for f in range(n_f):
                if nf_mask[f, s, b]:
                    nf *= x[f]
            gam = x[g0 + gb] if (gb >= 0 and gamma_mask[s, b]) else 1.0
            mult = nf * prod * gam
            lam += add * mult
            if want_grad:
                for k in range(n_k):
                    d_alpha[k] += (h1[k] + add * r[k]) * mult
                for f in range(n_f):
                    if nf_mask[f, s, b]:
                        other = 1.0
                        for f2 in range(n_f):
                            if f2 != f and nf_mask[f2, s, b]:
                                other *= x[f2]
                        d_nf[f] += add * prod * gam * other
                if gb >= 0 and gamma_mask[s, b]:
                    d_gamma += add * nf * prod
        n = data[b]
        if n > 0:
            total -= 2.0 * (n * math.log(lam) - lam - math.lgamma(n + 1.0))
        else:
            total -= 2.0 * (-lam - math.lgamma(n + 1.0))
        if want_grad:
            w = -2.0 * (n / lam - 1.0)
            for k in range(n_k):
                grad[n_f + k] += w * d_alpha[k]
            for f in range(n_f):
                grad[f] += w * d_nf[f]
            if gb >= 0:
                grad[g0 + gb] += w * d_gamma
    for k in range(n_k):
        d = aux[k] - x[n_f + k]
        total += d * d + LOG_2PI
        if want_grad:
            grad[n_f + k] -= 2.0 * d
    for j in range(sigma.shape[0]):
        d = (aux[n_k + j] - x[g0 + j]) / sigma[j]
        total += d * d + 2.0 * math.log(sigma[j]) + LOG_2PI
        if want_grad:
            grad[g0 + j] -= 2.0 * d / sigma[j]
    return total
