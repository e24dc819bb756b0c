"""The configuration: every number of the analysis and of the fit lives in ``configs/``; this
package loads and validates it.

- :mod:`~agc_core.config.analysis`: ``configs/analysis.yaml`` (:class:`AnalysisConfig`:
  cuts, binning, luminosity, cross sections, samples, systematics, the dataset's parameters);
- :mod:`~agc_core.config.fit`: ``configs/fit.yaml`` (:class:`FitConfig`: channels, samples,
  systematics, minimizer settings);
- :mod:`~agc_core.config.reading`: typed YAML access whose errors name the file, key and line.
"""

from agc_core.config.analysis import (
    CONFIG_DIR,
    DEFAULT_ANALYSIS_CONFIG,
    REGIONS,
    AnalysisConfig,
    Binning,
    DatasetParams,
    GeneratorFilter,
    InputChecks,
    Region,
    Selection,
    Systematics,
    load_analysis_config,
    parse_analysis_config,
)
from agc_core.config.fit import (
    DEFAULT_FIT_CONFIG,
    SYMMETRIZE,
    FitChannel,
    FitConfig,
    FitSample,
    FitSystematic,
    MinimizerSettings,
    load_fit_config,
    parse_fit_config,
)
from agc_core.config.reading import evaluate_number

__all__ = [
    "CONFIG_DIR", "DEFAULT_ANALYSIS_CONFIG", "DEFAULT_FIT_CONFIG", "REGIONS", "SYMMETRIZE",
    "AnalysisConfig", "Binning", "DatasetParams", "FitChannel", "FitConfig", "FitSample",
    "FitSystematic", "GeneratorFilter", "InputChecks", "MinimizerSettings", "Region",
    "Selection", "Systematics", "evaluate_number", "load_analysis_config", "load_fit_config",
    "parse_analysis_config", "parse_fit_config",
]
