"""The tests' real XRootD server: :mod:`agc_core.bench.xrootd` (moved into the package, where
the remote benchmark uses it too), re-exported under the name the tests import."""

from agc_core.bench.xrootd import *  # noqa: F403
from agc_core.bench.xrootd import (
    BUNDLE_FILE,
    CERT_DIR,
    CERT_FILE,
    KEY_FILE,
    PROBE,
    START_TIMEOUT,
    DroppingProxy,
    XRootDServer,
    free_port,
    https_context,
    make_certificate,
    session_certificate,
    url_fileset,
)

__all__ = [
    "BUNDLE_FILE",
    "CERT_DIR",
    "CERT_FILE",
    "KEY_FILE",
    "PROBE",
    "START_TIMEOUT",
    "DroppingProxy",
    "XRootDServer",
    "free_port",
    "https_context",
    "make_certificate",
    "session_certificate",
    "url_fileset",
]
