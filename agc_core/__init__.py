"""agc-core: the AGC CMS 2015 ttbar analysis on uproot + numba kernels, without coffea."""

__version__ = "0.1.0"
