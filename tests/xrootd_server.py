"""The tests' real XRootD server: :mod:`agc_core.bench.xrootd` (moved into the package, where
the remote benchmark uses it too), re-exported under the name the tests import."""

from agc_core.bench.xrootd import *  # noqa: F403
from agc_core.bench.xrootd import __all__  # noqa: F401 (the same names)
