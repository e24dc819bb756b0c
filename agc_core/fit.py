"""Fit the workspace: pyhf's likelihood minimized directly with iminuit (MIGRAD, HESSE, MINOS).

The likelihood is the pyhf model's (``-2 ln L`` of :func:`pyhf.infer.mle.twice_nll`): Poisson
terms of the main bins plus the Gaussian constraints of every normsys/histosys parameter
(N(0 | alpha, 1)) and staterror gamma (N(1 | gamma, sigma_b)). :class:`Likelihood` evaluates it
and its analytic gradient in one numba loop (numpy reference beside it) and its exact and
Gauss-Newton Hessians in numpy, for the modifiers our workspaces use (normfactor, staterror,
normsys code4, histosys code4p; equal to pyhf's ``logpdf`` to ~1e-13 relative, see
tests/test_fit.py); any other spec falls back to pyhf's own ``logpdf`` (numerical derivatives).
MIGRAD steers by the Gauss-Newton Hessian, HESSE uses the exact one.
Bounds, initial values and fixed parameters are the model's (pyhf's defaults, the measurement's
settings).

A minimization that MIGRAD does not declare valid is retried from where it stopped with
``fit.retry_strategy`` (2); still invalid, it raises :class:`FitError` naming the fit. Beyond the
best fit: :func:`scan` (profile likelihood of the POI), :func:`ranking` (pre- and post-fit
impact of every nuisance parameter on the POI), :func:`goodness_of_fit` (saturated model) and
:func:`asimov_uncertainty` (expected uncertainty). Scan and ranking fits start from the best fit.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from agc_core.config import FitConfig, MinimizerSettings, load_fit_config
from agc_core.errors import AGCError, ModelError
from agc_core.outputs import write_text_atomic

log = logging.getLogger(__name__)

FIT_RESULTS_FILE_NAME = "fit_results.json"
LOG_2PI = math.log(2.0 * math.pi)
DEFAULT_SETTINGS = MinimizerSettings(strategy=1, retry_strategy=2, tolerance=0.1,
                                     max_calls=100_000, scan_points=11, scan_sigmas=3.0)
#: pyhf's default bounds
ALPHA_BOUNDS = (-5.0, 5.0)
GAMMA_BOUNDS = (1e-10, 10.0)
NORMFACTOR_BOUNDS = (0.0, 10.0)
#: HESSE and MINOS (half width) disagreeing by more than this is flagged in the diagnostics
HESSE_MINOS_TOLERANCE = 0.2
#: what the minimizer sees where the likelihood is not defined (negative expectations)
UNDEFINED_NLL = 1e300


class FitError(AGCError):
    """A fit that did not converge (after the retry): the message names the fit."""


# ---------------------------------------------------------------------------------------------
# the likelihood


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


@dataclass(frozen=True)
class Likelihood:
    """``-2 ln L`` of a pyhf model with its analytic gradient and Hessian.

    Built by :meth:`from_spec`. Parameters are ordered: normfactors (the POI first), then the
    normsys/histosys parameters in order of first appearance, then the staterror gammas of each
    channel; labels are pyhf's (``staterror_4j1b-CR[3]``).

    Attributes:
        labels: parameter names.
        init: initial values; bounds: (low, high) per parameter; fixed: fixed parameters.
        poi_index: index of the POI.
        channels: (name, number of bins) in order; samples: sample names.
        data: observed main bins; aux: auxiliary data (0 per alpha, 1 per gamma).
        sigma: staterror sigma per gamma.
        pyhf_spec: the spec (for pyhf cross-checks and the fallback).
        analytic: False when the spec has modifiers this class does not implement: then
            every evaluation goes through pyhf's ``logpdf``.
    """

    labels: tuple[str, ...]
    init: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    fixed: tuple[bool, ...]
    poi_index: int
    channels: tuple[tuple[str, int], ...]
    samples: tuple[str, ...]
    data: np.ndarray
    aux: np.ndarray
    sigma: np.ndarray
    spec: dict[str, Any] = field(repr=False)
    analytic: bool = True
    # internals (arrays over normfactors F, alphas K, samples S, bins B, gammas G)
    _nf_mask: np.ndarray = field(default=None, repr=False)      # (F, S, B) bool
    _nom: np.ndarray = field(default=None, repr=False)          # (S, B)
    _hi: np.ndarray = field(default=None, repr=False)           # (K, S, B) normsys hi
    _lo: np.ndarray = field(default=None, repr=False)
    _coef: np.ndarray = field(default=None, repr=False)         # (6, K, S, B)
    _log_hi: np.ndarray = field(default=None, repr=False)       # (K, S, B)
    _log_lo: np.ndarray = field(default=None, repr=False)
    _du: np.ndarray = field(default=None, repr=False)           # (K, S, B) histosys up - nom
    _dd: np.ndarray = field(default=None, repr=False)           # nom - down
    _gamma_bin: np.ndarray = field(default=None, repr=False)    # (B,) gamma index or -1
    _gamma_mask: np.ndarray = field(default=None, repr=False)   # (S, B) sample has staterror
    _n_nf: int = 0
    _n_alpha: int = 0
    _pyhf: Any = field(default=None, repr=False)

    # --- construction --------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: dict[str, Any], measurement: str | None = None,
                  force_pyhf: bool = False) -> Likelihood:
        """Compile a pyhf JSON spec.

        Args:
            spec: a workspace spec (as :func:`agc_core.workspace.build` returns).
            measurement: the measurement to use (default: the first).
            force_pyhf: evaluate through pyhf's ``logpdf`` even if the analytic form applies.

        Raises:
            ModelError: the spec has no measurement or observations for a channel.
        """
        meas = _measurement(spec, measurement)
        supported = {"normfactor", "normsys", "histosys", "staterror"}
        types = {m["type"] for ch in spec["channels"] for s in ch["samples"]
                 for m in s["modifiers"]}
        if force_pyhf or not types <= supported:
            return cls._from_pyhf(spec, meas)
        obs = {o["name"]: np.asarray(o["data"], dtype=float) for o in spec["observations"]}
        channels = tuple((ch["name"], len(ch["samples"][0]["data"])) for ch in spec["channels"])
        offsets = np.cumsum([0] + [n for _, n in channels])
        n_bins = int(offsets[-1])
        samples: list[str] = []
        nf_names: list[str] = []
        alpha_names: list[str] = []
        stat_names: list[str] = []
        for ch in spec["channels"]:
            for s in ch["samples"]:
                if s["name"] not in samples:
                    samples.append(s["name"])
                for m in s["modifiers"]:
                    names = {"normfactor": nf_names, "staterror": stat_names}.get(m["type"],
                                                                                  alpha_names)
                    if m["name"] not in names:
                        names.append(m["name"])
        poi = meas["config"]["poi"]
        if poi not in nf_names:
            raise ModelError(f"the POI '{poi}' is not a normfactor of the workspace")
        nf_names.remove(poi)
        nf_names.insert(0, poi)
        n_s, n_f, n_k = len(samples), len(nf_names), len(alpha_names)
        nom = np.zeros((n_s, n_bins))
        nf_mask = np.zeros((n_f, n_s, n_bins), dtype=bool)
        hi = np.ones((n_k, n_s, n_bins))
        lo = np.ones((n_k, n_s, n_bins))
        du = np.zeros((n_k, n_s, n_bins))
        dd = np.zeros((n_k, n_s, n_bins))
        gamma_mask = np.zeros((n_s, n_bins), dtype=bool)
        unc2 = np.zeros(n_bins)
        stat_nom = np.zeros(n_bins)
        stat_of_bin = np.full(n_bins, -1)
        data = np.zeros(n_bins)
        for ic, ch in enumerate(spec["channels"]):
            sl = slice(offsets[ic], offsets[ic + 1])
            if ch["name"] not in obs:
                raise ModelError(f"the workspace has no observations for channel "
                                 f"'{ch['name']}'")
            data[sl] = obs[ch["name"]]
            for s in ch["samples"]:
                i_s = samples.index(s["name"])
                values = np.asarray(s["data"], dtype=float)
                nom[i_s, sl] = values
                for m in s["modifiers"]:
                    kind, name = m["type"], m["name"]
                    if kind == "normfactor":
                        nf_mask[nf_names.index(name), i_s, sl] = True
                    elif kind == "staterror":
                        stat_of_bin[sl] = stat_names.index(name)
                        gamma_mask[i_s, sl] = True
                        unc2[sl] += np.asarray(m["data"], dtype=float) ** 2
                        stat_nom[sl] += values
                    elif kind == "normsys":
                        k = alpha_names.index(name)
                        hi[k, i_s, sl] = m["data"]["hi"]
                        lo[k, i_s, sl] = m["data"]["lo"]
                    else:  # histosys
                        k = alpha_names.index(name)
                        du[k, i_s, sl] = np.asarray(m["data"]["hi_data"]) - values
                        dd[k, i_s, sl] = values - np.asarray(m["data"]["lo_data"])
        if np.any(hi <= 0) or np.any(lo <= 0):
            raise ModelError("a normsys of the workspace has hi or lo <= 0")
        # gammas: one per bin of each channel that has a staterror
        labels = list(nf_names) + list(alpha_names)
        gamma_bin = np.full(n_bins, -1)
        sigma: list[float] = []
        for ic, (_, n) in enumerate(channels):
            for j in range(n):
                b = offsets[ic] + j
                if stat_of_bin[b] < 0:
                    continue
                gamma_bin[b] = len(sigma)
                rel = math.sqrt(unc2[b]) / stat_nom[b] if stat_nom[b] > 0 else 0.0
                sigma.append(rel)
                labels.append(f"{stat_names[stat_of_bin[b]]}[{j}]")
        sig = np.asarray(sigma)
        n_g = len(sigma)
        init = np.concatenate([np.ones(n_f), np.zeros(n_k), np.ones(n_g)])
        bounds = [NORMFACTOR_BOUNDS] * n_f + [ALPHA_BOUNDS] * n_k + [GAMMA_BOUNDS] * n_g
        fixed = [False] * (n_f + n_k) + [bool(s == 0) for s in sigma]
        sig = np.where(sig == 0, 1.0, sig)  # pyhf: zero sigmas are fixed and set to 1
        _apply_measurement(meas, labels, init, bounds, fixed)
        aux = np.concatenate([np.zeros(n_k), np.ones(n_g)])
        return cls(labels=tuple(labels), init=init, bounds=tuple(bounds), fixed=tuple(fixed),
                   poi_index=0, channels=channels, samples=tuple(samples), data=data, aux=aux,
                   sigma=sig, spec=spec, analytic=True, _nf_mask=nf_mask, _nom=nom, _hi=hi,
                   _lo=lo, _coef=_code4_coefficients(hi, lo), _log_hi=np.log(hi),
                   _log_lo=np.log(lo), _du=du, _dd=dd,
                   _gamma_bin=gamma_bin, _gamma_mask=gamma_mask, _n_nf=n_f, _n_alpha=n_k)

    @classmethod
    def _from_pyhf(cls, spec: dict[str, Any], meas: dict[str, Any]) -> Likelihood:
        import pyhf

        ws = pyhf.Workspace(spec)
        model = ws.model(measurement_name=meas["name"])
        data = np.asarray(ws.data(model), dtype=float)
        n_main = model.config.nmaindata
        channels = tuple((c, model.config.channel_nbins[c]) for c in model.config.channels)
        return cls(labels=tuple(model.config.par_names), init=np.asarray(
                       model.config.suggested_init(), dtype=float),
                   bounds=tuple(tuple(b) for b in model.config.suggested_bounds()),
                   fixed=tuple(model.config.suggested_fixed()),
                   poi_index=model.config.poi_index, channels=channels,
                   samples=tuple(model.config.samples), data=data[:n_main],
                   aux=data[n_main:], sigma=np.zeros(0), spec=spec, analytic=False,
                   _pyhf=model)

    # --- evaluation ----------------------------------------------------------------------

    @property
    def poi(self) -> str:
        """Name of the POI."""
        return self.labels[self.poi_index]

    @property
    def n_pars(self) -> int:
        """Number of parameters."""
        return len(self.labels)

    def with_data(self, data: np.ndarray | None = None, aux: np.ndarray | None = None
                  ) -> Likelihood:
        """The same model with other main (and auxiliary) data."""
        return replace(self, data=self.data if data is None else np.asarray(data, float),
                       aux=self.aux if aux is None else np.asarray(aux, float))

    def _parts(self, x: np.ndarray) -> dict[str, np.ndarray]:
        nf = x[: self._n_nf]
        alpha = x[self._n_nf: self._n_nf + self._n_alpha]
        gamma = x[self._n_nf + self._n_alpha:]
        a = alpha[:, None, None]
        inside = np.abs(a) <= 1.0
        # code4 normsys factors N, their log-derivatives r = N'/N and q = N''/N
        c = self._coef
        poly = 1 + a * (c[0] + a * (c[1] + a * (c[2] + a * (c[3] + a * (c[4] + a * c[5])))))
        dpoly = c[0] + a * (2 * c[1] + a * (3 * c[2] + a * (4 * c[3] + a * (5 * c[4]
                                                                            + a * 6 * c[5]))))
        d2poly = 2 * c[1] + a * (6 * c[2] + a * (12 * c[3] + a * (20 * c[4] + a * 30 * c[5])))
        base_log = np.where(a > 1.0, np.log(self._hi), np.log(self._lo))
        expo = np.abs(a)
        sign = np.where(a > 1.0, 1.0, -1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            n_out = np.exp(expo * base_log)
        norm = np.where(inside, poly, n_out)
        r = np.where(inside, dpoly / poly, sign * base_log)
        q = np.where(inside, d2poly / poly, base_log ** 2)
        # code4p histosys deltas H, H', H''
        du, dd = self._du, self._dd
        s_ = 0.5 * (du + dd)
        a_ = 0.0625 * (du - dd)
        a2 = a * a
        h = np.where(a > 1.0, a * du, np.where(a < -1.0, a * dd,
                                                a * s_ + a2 * a_ * (15 + a2 * (3 * a2 - 10))))
        h1 = np.where(a > 1.0, du, np.where(a < -1.0, dd,
                                             s_ + a_ * a * (30 + a2 * (18 * a2 - 40))))
        h2 = np.where(inside, a_ * (30 + a2 * (90 * a2 - 120)), 0.0)
        add = self._nom + h.sum(axis=0)                                   # (S, B)
        nf_factor = np.ones_like(add)
        for f in range(self._n_nf):
            nf_factor = np.where(self._nf_mask[f], nf_factor * nf[f], nf_factor)
        gb = self._gamma_bin
        g_of_bin = np.where(gb >= 0, gamma[np.maximum(gb, 0)] if gamma.size else 1.0, 1.0)
        gam = np.where(self._gamma_mask, g_of_bin[None, :], 1.0)          # (S, B)
        prod = norm.prod(axis=0)                                          # (S, B)
        mult = nf_factor * prod * gam
        return {"nf": nf, "alpha": alpha, "gamma": gamma, "add": add, "mult": mult,
                "nf_factor": nf_factor, "prod": prod, "gam": gam, "r": r, "q": q, "h1": h1,
                "h2": h2}

    def expected_by_sample(self, x: np.ndarray) -> np.ndarray:
        """Expected yields per sample and main bin, shape (samples, bins)."""
        x = np.asarray(x, dtype=float)
        if not self.analytic:
            return np.asarray(self._pyhf.main_model.expected_data(x, return_by_sample=True))
        p = self._parts(x)
        return p["add"] * p["mult"]

    def expected_data(self, x: np.ndarray) -> np.ndarray:
        """Expected main bins (all channels concatenated)."""
        return self.expected_by_sample(x).sum(axis=0)

    def expected_aux(self, x: np.ndarray) -> np.ndarray:
        """Expected auxiliary data at ``x`` (the constrained parameters' values)."""
        x = np.asarray(x, dtype=float)
        if not self.analytic:
            full = np.asarray(self._pyhf.expected_data(x), dtype=float)
            return full[len(self.data):]
        return x[self._n_nf:].copy()

    def twice_nll(self, x: np.ndarray) -> float:
        """``-2 ln L(x)`` (pyhf's ``-2 * logpdf(x, data + aux)``)."""
        x = np.asarray(x, dtype=float)
        if not self.analytic:
            full = np.concatenate([self.data, self.aux])
            return float(-2.0 * self._pyhf.logpdf(x, full)[0])
        return _nll_and_grad(*self._kernel_args(x), self._grad_buffer(), False)

    def twice_nll_numpy(self, x: np.ndarray) -> float:
        """:meth:`twice_nll` in numpy (the reference of the numba loop)."""
        x = np.asarray(x, dtype=float)
        lam = self.expected_data(x)
        return _poisson_twice_nll(self.data, lam) + self.constraint_twice_nll(x)

    def _kernel_args(self, x: np.ndarray) -> tuple[Any, ...]:
        return (np.ascontiguousarray(x, dtype=np.float64), self._n_nf, self._n_alpha,
                self._nom, self._coef, self._log_hi, self._log_lo, self._du, self._dd,
                self._nf_mask, self._gamma_bin, self._gamma_mask, self.data, self.aux,
                self.sigma)

    def _grad_buffer(self) -> np.ndarray:
        return np.empty(self.n_pars)

    def constraint_twice_nll(self, x: np.ndarray) -> float:
        """The constraint terms' part of :meth:`twice_nll` (Gaussian, with constants)."""
        x = np.asarray(x, dtype=float)
        if not self.analytic:
            return float(-2.0 * self._pyhf.constraint_logpdf(self.aux, x)[0])
        k, n_f = self._n_alpha, self._n_nf
        alpha, gamma = x[n_f:n_f + k], x[n_f + k:]
        aux_a, aux_g = self.aux[:k], self.aux[k:]
        cons_a = ((aux_a - alpha) ** 2 + LOG_2PI).sum()
        cons_g = (((aux_g - gamma) / self.sigma) ** 2 + 2.0 * np.log(self.sigma)
                  + LOG_2PI).sum()
        return float(cons_a + cons_g)

    def n_unconstrained(self) -> int:
        """Free parameters without a constraint term (the normfactors)."""
        if not self.analytic:
            from agc_core import fit as _fit

            return _fit._pyhf_unconstrained(self._pyhf)
        return sum(1 for i in range(self._n_nf) if not self.fixed[i])

    def constrained_sigma(self) -> dict[int, float]:
        """Pre-fit uncertainty of every constrained parameter, by index."""
        if not self.analytic:
            out = {}
            for name in self._pyhf.config.par_order:
                ps = self._pyhf.config.param_set(name)
                if not ps.constrained:
                    continue
                sl = self._pyhf.config.par_slice(name)
                widths = ps.width() if hasattr(ps, "width") else [1.0] * ps.n_parameters
                for j, i in enumerate(range(sl.start, sl.stop)):
                    out[i] = float(widths[j])
            return out
        n_f, k = self._n_nf, self._n_alpha
        out = {n_f + j: 1.0 for j in range(k)}
        out.update({n_f + k + j: float(s) for j, s in enumerate(self.sigma)})
        return out

    def _jacobian(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """d nu_sb / d x_i, shape (P, S, B)."""
        n_f, k = self._n_nf, self._n_alpha
        n_g = p["gamma"].size
        jac = np.zeros((n_f + k + n_g, *p["add"].shape))
        base = p["add"] * p["prod"] * p["gam"]
        for f in range(n_f):
            other = np.ones_like(base)
            for f2 in range(n_f):
                if f2 != f:
                    other = np.where(self._nf_mask[f2], other * p["nf"][f2], other)
            jac[f] = np.where(self._nf_mask[f], base * other, 0.0)
        jac[n_f:n_f + k] = (p["h1"] + p["add"][None] * p["r"]) * p["mult"][None]
        if n_g:
            d_gamma = p["add"] * p["nf_factor"] * p["prod"] * self._gamma_mask   # (S, B)
            gb = self._gamma_bin
            cols = np.nonzero(gb >= 0)[0]
            jac[n_f + k + gb[cols], :, cols] = d_gamma[:, cols].T
        return jac

    def grad(self, x: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`twice_nll` (analytic)."""
        if not self.analytic:
            raise ModelError("no analytic gradient for this model (pyhf fallback)")
        out = self._grad_buffer()
        _nll_and_grad(*self._kernel_args(x), out, True)
        return out

    def grad_numpy(self, x: np.ndarray) -> np.ndarray:
        """:meth:`grad` in numpy (the reference of the numba loop)."""
        x = np.asarray(x, dtype=float)
        p = self._parts(x)
        lam = (p["add"] * p["mult"]).sum(axis=0)
        w = -2.0 * (self.data / lam - 1.0)
        jac = self._jacobian(p).sum(axis=1)                               # (P, B)
        g = jac @ w
        k = self._n_alpha
        g[self._n_nf:self._n_nf + k] += 2.0 * (p["alpha"] - self.aux[:k])
        g[self._n_nf + k:] += 2.0 * (p["gamma"] - self.aux[k:]) / self.sigma ** 2
        return g

    def objective(self, x: np.ndarray) -> float:
        """:meth:`twice_nll` for the minimizer: a huge finite value where the model is not
        defined (an expectation <= 0 makes pyhf's ``logpdf`` NaN), so that MIGRAD's line
        search backs off instead of giving up."""
        value = self.twice_nll(x)
        return value if math.isfinite(value) else UNDEFINED_NLL

    def safe_grad(self, x: np.ndarray) -> np.ndarray:
        """:meth:`grad` for the minimizer: zeros where the model is not defined."""
        g = self.grad(x)
        return g if np.all(np.isfinite(g)) else np.zeros_like(g)

    def g2(self, x: np.ndarray) -> np.ndarray:
        """Diagonal of :meth:`hessian`."""
        return np.diag(self.hessian(x)).copy()

    def fisher_hessian(self, x: np.ndarray) -> np.ndarray:
        """The Hessian without the terms of the second derivatives of the expectation
        (Gauss-Newton: ``J diag(2 n / lambda^2) J^T`` plus the constraints), positive
        semi-definite everywhere: what MIGRAD steers by (the exact :meth:`hessian` is
        indefinite away from the minimum, where Newton steps from it go astray)."""
        x = np.asarray(x, dtype=float)
        p = self._parts(x)
        lam = (p["add"] * p["mult"]).sum(axis=0)
        jac = self._jacobian(p).sum(axis=1)
        hess = (jac * (2.0 * self.data / lam ** 2)) @ jac.T
        n_f, k = self._n_nf, self._n_alpha
        idx = np.arange(n_f, n_f + k)
        hess[idx, idx] += 2.0
        gi = np.arange(n_f + k, self.n_pars)
        hess[gi, gi] += 2.0 / self.sigma ** 2
        return hess

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Hessian of :meth:`twice_nll` (analytic)."""
        x = np.asarray(x, dtype=float)
        p = self._parts(x)
        n_f, k = self._n_nf, self._n_alpha
        lam = (p["add"] * p["mult"]).sum(axis=0)
        n = self.data
        w = -2.0 * (n / lam - 1.0)
        jac_s = self._jacobian(p)
        jac = jac_s.sum(axis=1)
        hess = (jac * (2.0 * n / lam ** 2)) @ jac.T
        # second derivatives of lambda, contracted with w
        add, mult, r, q, h1, h2 = p["add"], p["mult"], p["r"], p["q"], p["h1"], p["h2"]
        mw = mult * w                                                     # (S, B)
        sa = slice(n_f, n_f + k)
        t1 = np.einsum("ksb,lsb,sb->kl", h1, r, mw)
        aa = t1 + t1.T + np.einsum("ksb,lsb,sb->kl", r, r, add * mw)
        aa[np.diag_indices(k)] += np.einsum("ksb,sb->k", h2 + add * (q - r * r), mw)
        hess[sa, sa] += aa
        for f in range(n_f):
            nf_f = p["nf"][f]
            mask = self._nf_mask[f]
            if nf_f != 0:
                d_af = jac_s[sa] * np.where(mask, 1.0 / nf_f, 0.0)
            else:  # d/d alpha of nu without the normfactor
                other = np.where(mask, mult / np.where(p["nf_factor"] == 0, 1.0,
                                                        p["nf_factor"]), 0.0)
                d_af = (h1 + add[None] * r) * other[None]
            v = np.einsum("ksb,b->k", d_af, w)
            hess[sa, f] += v
            hess[f, sa] += v
            for f2 in range(f + 1, n_f):
                both = mask & self._nf_mask[f2]
                if both.any():
                    others = np.ones_like(add)
                    for f3 in range(n_f):
                        if f3 not in (f, f2):
                            others = np.where(self._nf_mask[f3], others * p["nf"][f3], others)
                    val = float(((add * p["prod"] * p["gam"] * others * both).sum(axis=0)
                                 * w).sum())
                    hess[f, f2] += val
                    hess[f2, f] += val
        n_g = p["gamma"].size
        if n_g:
            gb = self._gamma_bin
            cols = np.nonzero(gb >= 0)[0]
            gi = n_f + k + gb[cols]
            gm = self._gamma_mask[:, cols]
            base = (add * p["nf_factor"] * p["prod"])[:, cols] * gm                # (S, C)
            # gamma x alpha
            d_ga = ((h1 + add[None] * r) * (p["nf_factor"] * p["prod"])[None])[:, :, cols]
            v = np.einsum("ksc,sc,c->kc", d_ga, gm, w[cols])
            hess[sa.start + np.arange(k)[:, None], gi[None, :]] += v
            hess[gi[None, :], sa.start + np.arange(k)[:, None]] += v
            # gamma x normfactor
            for f in range(n_f):
                other = np.ones_like(add)
                for f2 in range(n_f):
                    if f2 != f:
                        other = np.where(self._nf_mask[f2], other * p["nf"][f2], other)
                d_gf = (add * p["prod"] * other * self._nf_mask[f])[:, cols] * gm
                v = d_gf.sum(axis=0) * w[cols]
                hess[f, gi] += v
                hess[gi, f] += v
            del base
            hess[gi, gi] += 2.0 / self.sigma[gb[cols]] ** 2
        hess[np.arange(n_f, n_f + k), np.arange(n_f, n_f + k)] += 2.0
        return hess


_lgamma = np.vectorize(math.lgamma, otypes=[float])


def _poisson_twice_nll(n: np.ndarray, lam: np.ndarray) -> float:
    """``-2 sum ln Poisson(n | lam)`` with pyhf's continuous form (``xlogy``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        main = np.where(n > 0, n * np.log(lam), 0.0) - lam - _lgamma(n + 1.0)
    return float(-2.0 * main.sum())


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


def _pyhf_unconstrained(model: Any) -> int:
    n = 0
    for name in model.config.par_order:
        ps = model.config.param_set(name)
        if not ps.constrained:
            n += sum(1 for f in ps.suggested_fixed if not f)
    return n


def _measurement(spec: dict[str, Any], name: str | None) -> dict[str, Any]:
    measurements = spec.get("measurements") or []
    for meas in measurements:
        if name is None or meas["name"] == name:
            return meas
    raise ModelError(f"the workspace has no measurement{f' {name!r}' if name else ''}")


def _apply_measurement(meas: dict[str, Any], labels: list[str], init: np.ndarray,
                       bounds: list[tuple[float, float]], fixed: list[bool]) -> None:
    """Apply the measurement's parameter settings (inits, bounds, fixed) in place."""
    for par in meas["config"].get("parameters", []):
        name = par["name"]
        idx = ([labels.index(name)] if name in labels
               else [i for i, lab in enumerate(labels) if lab.startswith(name + "[")])
        for j, i in enumerate(idx):
            if "inits" in par:
                init[i] = par["inits"][j]
            if "bounds" in par:
                bounds[i] = tuple(par["bounds"][j])
            if par.get("fixed"):
                fixed[i] = True


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class FitDiagnostics:
    """What a careful physicist checks about a fit.

    Attributes:
        valid: MIGRAD's minimum is valid.
        edm: estimated distance to minimum; edm_goal: the goal it was compared with.
        nfcn: function calls (all minimizations); ngrad: gradient calls.
        strategies: the MIGRAD strategies tried, in order (a retry appends one).
        hesse_accurate: HESSE's covariance is accurate; hesse_forced_posdef: it had to be
            forced positive-definite (then the uncertainties are not trustworthy).
        at_limit: parameters whose best fit is at (or next to) a bound.
        minos_valid: per MINOS parameter, both sides valid.
        minos_method: per MINOS parameter, ``minos`` (iminuit's MINOS) or ``profile`` (MINOS
            was not valid: the same crossings found with profile fits, see :func:`fit`).
        hesse_minos_ratio: per MINOS parameter, (MINOS half width) / (HESSE uncertainty).
        hesse_minos_agree: every ratio within ``1 +- HESSE_MINOS_TOLERANCE``.
        analytic: the numpy likelihood with analytic derivatives was used (else pyhf's).
        seconds: wall time of the fit.
        warnings: human-readable problems (empty for a clean fit).
    """

    valid: bool
    edm: float
    edm_goal: float
    nfcn: int
    ngrad: int
    strategies: tuple[int, ...]
    hesse_accurate: bool
    hesse_forced_posdef: bool
    at_limit: tuple[str, ...]
    minos_valid: dict[str, bool]
    minos_method: dict[str, str]
    hesse_minos_ratio: dict[str, float]
    hesse_minos_agree: bool
    analytic: bool
    seconds: float
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class FitResult:
    """A maximum-likelihood fit.

    Attributes:
        labels: parameter names; bestfit: best-fit values; uncertainty: HESSE uncertainties
            (0 for fixed parameters); corr_mat: correlation matrix.
        best_twice_nll: ``-2 ln L`` at the best fit.
        minos: parameter -> (down, up) MINOS errors (down negative).
        diagnostics: :class:`FitDiagnostics`.
        poi_index: index of the POI in ``labels``.
        covariance: HESSE covariance matrix.
    """

    labels: tuple[str, ...]
    bestfit: np.ndarray
    uncertainty: np.ndarray
    corr_mat: np.ndarray
    best_twice_nll: float
    minos: dict[str, tuple[float, float]]
    diagnostics: FitDiagnostics
    poi_index: int = 0
    covariance: np.ndarray | None = None

    @property
    def poi(self) -> str:
        """Name of the POI."""
        return self.labels[self.poi_index]

    def value(self, name: str) -> tuple[float, float]:
        """(best fit, HESSE uncertainty) of a parameter."""
        i = self.labels.index(name)
        return float(self.bestfit[i]), float(self.uncertainty[i])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "poi": self.poi,
            "labels": list(self.labels),
            "bestfit": self.bestfit.tolist(),
            "uncertainty": self.uncertainty.tolist(),
            "corr_mat": self.corr_mat.tolist(),
            "best_twice_nll": self.best_twice_nll,
            "minos": {k: list(v) for k, v in self.minos.items()},
            "diagnostics": _clean(asdict(self.diagnostics)),
        }


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# minimization


def _as_likelihood(model: dict[str, Any] | Likelihood) -> Likelihood:
    return model if isinstance(model, Likelihood) else Likelihood.from_spec(model)


def _settings(fit_cfg: FitConfig | MinimizerSettings | None) -> MinimizerSettings:
    if isinstance(fit_cfg, MinimizerSettings):
        return fit_cfg
    if isinstance(fit_cfg, FitConfig):
        return fit_cfg.minimizer
    return DEFAULT_SETTINGS


class _SwitchableHessian:
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


def _minuit(lh: Likelihood, x0: np.ndarray, fixed: Sequence[bool],
            settings: MinimizerSettings, hessian: str = "fisher"
            ) -> tuple[Any, _SwitchableHessian | None]:
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
        switch = _SwitchableHessian(lh, exact=hessian == "exact")
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


def _minimize(lh: Likelihood, x0: np.ndarray, fixed: Sequence[bool],
              settings: MinimizerSettings, what: str
              ) -> tuple[Any, tuple[int, ...], _SwitchableHessian | None]:
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
        m, switch = _minuit(lh, start, fixed, replace(settings, strategy=strategy), exact)
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


def _polish(lh: Likelihood, m: Any, switch: _SwitchableHessian | None, fixed: Sequence[bool],
            settings: MinimizerSettings, what: str) -> tuple[Any, _SwitchableHessian | None]:
    """Newton steps from MIGRAD's minimum down to 1/1000 of its EDM goal (:func:`_newton`):
    MIGRAD stops anywhere within its EDM goal, up to ~1e-3 of a parameter's uncertainty
    along the profile's flat directions. Where they reach a lower -2 ln L, MIGRAD restarts
    there (for HESSE and MINOS, which work on its state); otherwise MIGRAD's minimum stays."""
    if not lh.analytic:
        return m, switch
    free = ~np.asarray(fixed, dtype=bool)
    out = _newton(lh, np.array(m.values, dtype=float), free,
                  0.002 * settings.tolerance * NEWTON_EDM_FRACTION)
    if out is None or not out[1] < float(m.fval):
        return m, switch
    try:
        polished, _, polished_switch = _minimize(lh, out[0], fixed, settings, what)
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
    lh = _as_likelihood(spec)
    settings = _settings(fit_cfg if fit_cfg is not None else _default_fit_cfg())
    x0 = np.array(lh.init if init is None else init, dtype=float)
    fixed = list(lh.fixed)
    for name, value in (fix or {}).items():
        i = lh.labels.index(name)
        x0[i] = value
        fixed[i] = True
    m, strategies, switch = _minimize(lh, x0, fixed, settings, what)
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
            m, _, _ = _minimize(lh, x, fix, settings, f"{what}: the profile fit at "
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


#: Newton profile fits (:func:`profile_fit`): EDM goal as a fraction of MIGRAD's
#: (``0.002 * tolerance``), and the most Newton steps before MIGRAD takes over
NEWTON_EDM_FRACTION = 1e-3
NEWTON_MAX_STEPS = 20


def _newton(lh: Likelihood, x0: np.ndarray, free: np.ndarray, edm_goal: float,
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


def profile_fit(lh: Likelihood, fix: dict[str, float], best: FitResult,
                settings: MinimizerSettings, what: str) -> tuple[np.ndarray, float, str]:
    """The fit with the parameters ``fix`` fixed, the others at their conditional minimum:
    one point of a scan or ranking.

    Started where the best fit's covariance puts the conditional minimum (the Gaussian
    conditional mean, exact for a parabolic ``-2 ln L``), it is minimized by Newton steps with
    the exact Hessian down to an EDM of :data:`NEWTON_EDM_FRACTION` times MIGRAD's goal (a few
    steps, ~1 ms); where Newton is not the right tool (:func:`_newton`), MIGRAD does it from
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
        out = _newton(lh, x0, free, goal)
        if out is not None:
            return out[0], out[1], "newton"
        log.debug("%s: Newton steps did not converge, MIGRAD from the best fit", what)
    r = fit(lh, minos=None, fit_cfg=settings, init=best.bestfit, fix=fix, hesse=False,
            what=what, quiet=True)
    return r.bestfit, r.best_twice_nll, "migrad"


def _default_fit_cfg() -> FitConfig | None:
    try:
        return load_fit_config()
    except AGCError:
        return None


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


def write_results(path: str | Path, result: FitResult, **extra: Any) -> Path:
    """Write ``fit_results.json``: the fit result plus any extra sections (scan, ranking...)."""
    record = {"fit": result.as_dict()}
    record.update({k: _clean(v) for k, v in extra.items()})
    return write_text_atomic(path, json.dumps(record, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# beyond the best fit


@dataclass(frozen=True)
class ScanResult:
    """A profile-likelihood scan of one parameter.

    Attributes:
        name: the scanned parameter; values: its fixed values; delta_twice_nll: ``-2 ln L``
            of each profile fit minus the best fit's (NaN where that fit failed); bestfit: its
            best-fit value; failures: the profile fits that did not converge, by name.
    """

    name: str
    values: np.ndarray
    delta_twice_nll: np.ndarray
    bestfit: float
    failures: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return _clean({"name": self.name, "values": self.values.tolist(),
                       "delta_twice_nll": self.delta_twice_nll.tolist(),
                       "bestfit": self.bestfit, "failures": list(self.failures)})


@dataclass(frozen=True)
class RankingResult:
    """Impact of each nuisance parameter on the POI (cabinetry's definition).

    The POI's best fit is refit with the parameter fixed at its best fit +- its pre-fit (1,
    or sigma_b of a gamma) and +- its post-fit (HESSE) uncertainty; the impact is the POI's
    shift. Sorted by the larger post-fit impact, largest first.

    Attributes:
        poi: the POI; labels: the parameters; bestfit, uncertainty: their post-fit values;
        prefit_up/down, postfit_up/down: the POI shifts (NaN where the fit failed).
        failures: the impact fits that did not converge, by name (the others are kept).
    """

    poi: str
    labels: tuple[str, ...]
    bestfit: np.ndarray
    uncertainty: np.ndarray
    prefit_up: np.ndarray
    prefit_down: np.ndarray
    postfit_up: np.ndarray
    postfit_down: np.ndarray
    failures: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)
                    if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class GoodnessOfFit:
    """Saturated-model goodness of fit (cabinetry's definition).

    Attributes:
        p_value: chi2 survival probability of ``twice_delta_nll`` with ``ndof``.
        twice_delta_nll: ``-2 ln L(best fit) - (-2 ln L_saturated)``, the saturated model
            having the observations as expectation and the best fit's constraint terms.
        ndof: main bins minus unconstrained parameters.
    """

    p_value: float
    twice_delta_nll: float
    ndof: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class ExpectedUncertainty:
    """The POI's expected uncertainty: a fit of the pre-fit Asimov data set.

    Attributes:
        hesse: HESSE uncertainty; minos_down, minos_up: MINOS errors; fit: the Asimov fit.
    """

    hesse: float
    minos_down: float
    minos_up: float
    fit: FitResult

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (without the full Asimov fit)."""
        return {"hesse": self.hesse, "minos_down": self.minos_down, "minos_up": self.minos_up,
                "bestfit": float(self.fit.bestfit[self.fit.poi_index])}


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
    lh = _as_likelihood(spec)
    settings = _settings(fit_cfg if fit_cfg is not None else _default_fit_cfg())
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
    lh = _as_likelihood(spec)
    settings = _settings(fit_cfg if fit_cfg is not None else _default_fit_cfg())
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
    lh = _as_likelihood(spec)
    settings = _settings(fit_cfg if fit_cfg is not None else _default_fit_cfg())
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
    lh = _as_likelihood(spec)
    asimov = lh.with_data(lh.expected_data(lh.init), lh.expected_aux(lh.init))
    r = fit(asimov, minos=(lh.poi,), fit_cfg=fit_cfg, what="the Asimov fit")
    down, up = r.minos.get(lh.poi, (float("nan"), float("nan")))
    return ExpectedUncertainty(float(r.uncertainty[lh.poi_index]), down, up, r)


# ---------------------------------------------------------------------------------------------
# yields, and the whole inference stage (workspace -> fit -> studies -> plots)


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


@dataclass(frozen=True)
class InferenceResult:
    """Everything the inference stage produced (see :func:`run_inference`).

    Attributes:
        workspace: path of ``workspace.json``; results_file: path of ``fit_results.json``.
        fit: the best fit (None if it failed); gof, asimov, scan, ranking: the studies
            (None if not run or failed).
        prefit, postfit: :func:`yield_table` at the initial values and at the best fit.
        channels: the workspace's channel names; split: split by MLP classification.
        errors: the best fit's failure (then there is no measurement: exit code 1).
        study_errors: fits of the studies (GoF, Asimov, scan points, ranking impacts) that did
            not converge, by name; their values are left out (NaN), the measurement stands.
        plots: the PNG files drawn; seconds: time per step.
    """

    workspace: Path
    results_file: Path
    fit: FitResult | None
    gof: GoodnessOfFit | None
    asimov: ExpectedUncertainty | None
    scan: ScanResult | None
    ranking: RankingResult | None
    prefit: dict[str, dict[str, Any]]
    postfit: dict[str, dict[str, Any]]
    channels: tuple[str, ...]
    split: bool
    errors: tuple[str, ...]
    study_errors: tuple[str, ...]
    plots: tuple[Path, ...]
    seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        """The best fit converged (the studies may still have failed fits: study_errors)."""
        return not self.errors

    def summary_line(self) -> str:
        """``ttbar_norm = 0.976 +- 0.059 (HESSE), -0.058 / +0.061 (MINOS)``, or the failure."""
        if self.fit is None:
            return f"FIT FAILED: {self.errors[0] if self.errors else 'no result'}"
        r = self.fit
        value, err = r.value(r.poi)
        line = f"{r.poi} = {value:.4f} +- {err:.4f} (HESSE)"
        if r.poi in r.minos:
            lo, hi = r.minos[r.poi]
            line += f", {lo:+.4f} / {hi:+.4f} (MINOS)"
        if self.asimov is not None:
            line += f"; expected +- {self.asimov.hesse:.4f}"
        return line

    def metrics(self) -> dict[str, Any]:
        """The record for ``metrics.json`` (compact: no matrices)."""
        record: dict[str, Any] = {"ok": self.ok, "errors": list(self.errors),
                                  "study_errors": list(self.study_errors),
                                  "split_by_classification": self.split,
                                  "channels": list(self.channels), "seconds": self.seconds,
                                  "workspace": str(self.workspace),
                                  "results": str(self.results_file)}
        if self.fit is not None:
            r = self.fit
            value, err = r.value(r.poi)
            d = r.diagnostics
            record.update({"poi": r.poi, "bestfit": value, "hesse": err,
                           "minos": list(r.minos.get(r.poi, (None, None))),
                           "best_twice_nll": r.best_twice_nll,
                           "diagnostics": {"valid": d.valid, "edm": d.edm,
                                           "hesse_accurate": d.hesse_accurate,
                                           "hesse_forced_posdef": d.hesse_forced_posdef,
                                           "strategies": list(d.strategies),
                                           "minos_method": d.minos_method,
                                           "hesse_minos_ratio": d.hesse_minos_ratio,
                                           "warnings": list(d.warnings)}})
        if self.gof is not None:
            record["gof"] = self.gof.as_dict()
        if self.asimov is not None:
            record["expected"] = self.asimov.as_dict()
        return _clean(record)


_scan, _ranking = scan, ranking  # run_inference's flags of the same names shadow them


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
    profile_fit(lh, {"n": 0.5}, best, _settings(_default_fit_cfg()), "the warm-up fit")
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
        from agc_core import fit_plots

        t0 = time.perf_counter()
        submitted += plot_pool.submit_all(fit_plots.plot_jobs(
            out / "plots", lh, best, prefit, postfit, None, None, cfg, fit_cfg))
        seconds["plots"] = time.perf_counter() - t0
    if best is not None:
        gof = attempt("gof", lambda: goodness_of_fit(lh, best, fit_cfg))
        if scan:
            scan_r = attempt("scan", lambda: _scan(lh, best=best, fit_cfg=fit_cfg))
            if scan_r is not None:
                study_errors.extend(scan_r.failures)
        if ranking:
            rank_r = attempt("ranking", lambda: _ranking(lh, best=best, fit_cfg=fit_cfg))
            if rank_r is not None:
                study_errors.extend(rank_r.failures)
    asimov = attempt("asimov", lambda: asimov_uncertainty(lh, fit_cfg))
    drawn: tuple[Path, ...] = ()
    if plots and plot_pool is not None:  # the scan and ranking plots, then all of them back
        from agc_core import fit_plots

        t0 = time.perf_counter()
        submitted += plot_pool.submit_all(fit_plots.plot_jobs(
            out / "plots", lh, None, {}, {}, scan_r, rank_r, cfg, fit_cfg))
        drawn = tuple(plot_pool.wait(submitted))
        seconds["plots"] += time.perf_counter() - t0
    elif plots:
        from agc_core import fit_plots

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
        write_text_atomic(results_path, json.dumps(_clean(record), indent=1) + "\n")
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
# command line: python -m agc_core fit


def add_cli(subparsers: Any) -> None:
    """Register the ``fit`` subcommand."""
    import argparse

    from agc_core.cli import HelpFormatter

    parser = subparsers.add_parser(
        "fit", help="statistical inference alone: workspace, fit, scan, ranking, report",
        description="Build the pyhf workspace from a cabinetry-style histograms.root (ours or "
                    "the seed's) or histograms_full.npz, fit it with iminuit (MIGRAD, HESSE, "
                    "MINOS on the POI), run the goodness of fit, the expected uncertainty, "
                    "the scan and the ranking, draw the fit plots and write report.html. Exit "
                    "code 1 if a fit did not converge.",
        formatter_class=HelpFormatter)
    parser.add_argument("--histograms", type=Path, required=True,
                        help="histograms.root or histograms_full.npz")
    parser.add_argument("--fit-config", type=Path, default=None,
                        help="fit YAML (default: the packaged configs/fit.yaml)")
    parser.add_argument("--config", type=Path, default=None,
                        help="analysis YAML (default: the packaged configs/analysis.yaml)")
    parser.add_argument("--split-by-classification", action="store_true",
                        help="two channels per region by MLP classification (needs "
                             "histograms_full.npz)")
    parser.add_argument("--ranking", action=argparse.BooleanOptionalAction, default=True,
                        help="rank the nuisance parameters by impact on the POI")
    parser.add_argument("--scan", action="store_true", help="profile-likelihood scan of the POI")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="output folder (default: the folder of --histograms)")
    parser.set_defaults(func=_cli_fit)


def _cli_fit(args: Any) -> int:
    from agc_core.config import load_analysis_config

    cfg = load_analysis_config(args.config)
    fit_cfg = load_fit_config(args.fit_config, cfg)
    out = args.output_dir or args.histograms.parent
    result = run_inference(args.histograms, out, fit_cfg, cfg, args.split_by_classification,
                           ranking=args.ranking, scan=args.scan, plots=not args.no_plots)
    from agc_core import report_html

    report = report_html.write_report(out / report_html.REPORT_FILE_NAME, inference=result)
    print(f"agc_core fit: {result.summary_line()}")
    if result.gof is not None:
        print(f"  goodness of fit : p = {result.gof.p_value:.3f} "
              f"(-2 dlnL = {result.gof.twice_delta_nll:.2f}, {result.gof.ndof} dof)")
    for message in result.errors:
        print(f"  FAILED          : {message}")
    for message in result.study_errors:
        print(f"  study fit failed: {message}")
    print(f"  outputs in      : {out} (workspace.json, {FIT_RESULTS_FILE_NAME}, "
          f"{report.name})")
    return 0 if result.ok else 1
