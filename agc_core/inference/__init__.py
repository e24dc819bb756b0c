"""Statistical inference: the pyhf workspace's likelihood fitted with iminuit.

What it holds, one module per responsibility:

- :mod:`~agc_core.inference.kernels` and :mod:`~agc_core.inference.likelihood`: ``-2 ln L``
  of a pyhf workspace with its analytic gradient and Hessians (:class:`Likelihood`);
- :mod:`~agc_core.inference.minimize`: MIGRAD with its retries, Newton steps;
- :mod:`~agc_core.inference.mle`: the best fit with HESSE and MINOS (:func:`fit`);
- :mod:`~agc_core.inference.profile`: profile fits (a point of a scan or ranking);
- :mod:`~agc_core.inference.studies`: scan, ranking, goodness of fit, Asimov;
- :mod:`~agc_core.inference.yields`: pre- and post-fit yield tables;
- :mod:`~agc_core.inference.results`: the result containers and ``fit_results.json``;
- :mod:`~agc_core.inference.stage`: the post-histogram stage (:func:`run_inference`);
- :mod:`~agc_core.inference.plots`: the fit plots.

What it offers: the names below.
"""

from agc_core.inference.likelihood import Likelihood
from agc_core.inference.minimize import FitError
from agc_core.inference.mle import fit
from agc_core.inference.profile import profile_fit
from agc_core.inference.results import (
    FIT_RESULTS_FILE_NAME,
    ExpectedUncertainty,
    FitDiagnostics,
    FitResult,
    GoodnessOfFit,
    InferenceResult,
    RankingResult,
    ScanResult,
    write_results,
)
from agc_core.inference.stage import prepare, run_inference, run_stage
from agc_core.inference.studies import asimov_uncertainty, chi2_sf, goodness_of_fit, ranking, scan
from agc_core.inference.yields import prefit_covariance, yield_table

__all__ = [
    "FIT_RESULTS_FILE_NAME", "ExpectedUncertainty", "FitDiagnostics", "FitError", "FitResult",
    "GoodnessOfFit", "InferenceResult", "Likelihood", "RankingResult", "ScanResult",
    "asimov_uncertainty", "chi2_sf", "fit", "goodness_of_fit", "prefit_covariance", "prepare",
    "profile_fit", "ranking", "run_inference", "run_stage", "scan", "write_results",
    "yield_table",
]
