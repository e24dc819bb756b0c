"""agc-core: the AGC CMS 2015 ttbar analysis on uproot + numba kernels, without coffea.

The Python API (:mod:`agc_core.api`)::

    import agc_core

    result = agc_core.run(n_files_max_per_sample=1)        # RunOptions fields as keywords
    result.hist                                             # the seed's hist.Hist
    fit = agc_core.fit(result.outputs["histograms.root"])   # or a hist.Hist, a workspace
    h = agc_core.load_histograms("agc_output/histograms_full.npz")

The names are loaded on first use: ``import agc_core`` stays cheap (every worker process
imports the package).
"""

__version__ = "0.1.0"

#: the top-level names and the modules that define them
_API = {
    "run": "agc_core.api",
    "fit": "agc_core.api",
    "load_histograms": "agc_core.api",
    "inspect_workspace": "agc_core.api",
    "FitSummary": "agc_core.api",
    "RunOptions": "agc_core.results",
    "RunResult": "agc_core.results",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    import importlib

    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'agc_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
