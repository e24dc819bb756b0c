"""The inference's results as small containers: the fit (:class:`FitResult` with its
:class:`FitDiagnostics`), the studies (:class:`ScanResult`, :class:`RankingResult`,
:class:`GoodnessOfFit`, :class:`ExpectedUncertainty`), the whole stage
(:class:`InferenceResult`), and ``fit_results.json`` (:func:`write_results`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.outputs import write_text_atomic

FIT_RESULTS_FILE_NAME = "fit_results.json"


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


@dataclass(frozen=True, repr=False)
class FitResult:
    """A maximum-likelihood fit (shown as one line, or a small table in a notebook:
    :mod:`agc_core.display`).

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

    def __repr__(self) -> str:
        from agc_core.display import result_text

        return result_text(self)

    def _repr_html_(self) -> str:
        from agc_core.display import result_html

        return result_html(self)

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
            "diagnostics": json_ready(asdict(self.diagnostics)),
        }


def json_ready(value: Any) -> Any:
    """``value`` for JSON: dict keys as strings, tuples as lists, numpy scalars as Python
    ones, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(path: str | Path, result: FitResult, **extra: Any) -> Path:
    """Write ``fit_results.json``: the fit result plus any extra sections (scan, ranking...)."""
    record = {"fit": result.as_dict()}
    record.update({k: json_ready(v) for k, v in extra.items()})
    return write_text_atomic(path, json.dumps(record, indent=1) + "\n")



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
        return json_ready({"name": self.name, "values": self.values.tolist(),
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


@dataclass(frozen=True, repr=False)
class InferenceResult:
    """Everything the inference stage produced (see :func:`run_inference`); shown as a few
    lines, or a small table in a notebook (:mod:`agc_core.display`).

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

    def __repr__(self) -> str:
        from agc_core.display import inference_text

        return inference_text(self)

    def _repr_html_(self) -> str:
        from agc_core.display import inference_html

        return inference_html(self)

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
        return json_ready(record)


