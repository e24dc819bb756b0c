"""The likelihood: pyhf's ``-2 ln L`` of a workspace, compiled for the fit.

The likelihood is the pyhf model's (``-2 ln L`` of :func:`pyhf.infer.mle.twice_nll`): Poisson
terms of the main bins plus the Gaussian constraints of every normsys/histosys parameter
(N(0 | alpha, 1)) and staterror gamma (N(1 | gamma, sigma_b)). :class:`Likelihood` evaluates it
and its analytic gradient in one numba loop (:mod:`agc_core.inference.kernels`; numpy reference
beside it) and its exact and Gauss-Newton Hessians in numpy, for the modifiers our workspaces
use (normfactor, staterror, normsys code4, histosys code4p; equal to pyhf's ``logpdf`` to
~1e-13 relative, see tests/test_inference.py); any other spec falls back to pyhf's own
``logpdf`` (numerical derivatives). Bounds, initial values and fixed parameters are the
model's (pyhf's defaults, the measurement's settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agc_core.errors import ModelError
from agc_core.inference.kernels import (
    LOG_2PI,
    _code4_coefficients,
    _nll_and_grad,
)

#: pyhf's default bounds
ALPHA_BOUNDS = (-5.0, 5.0)
GAMMA_BOUNDS = (1e-10, 10.0)
NORMFACTOR_BOUNDS = (0.0, 10.0)
#: what the minimizer sees where the likelihood is not defined (negative expectations)
UNDEFINED_NLL = 1e300



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
            return _pyhf_unconstrained(self._pyhf)
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

