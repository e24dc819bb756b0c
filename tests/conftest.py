"""Shared pytest fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agc_core.config import AnalysisConfig, load_analysis_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# the https tests trust the session's self-signed certificate; set before anything imports
# aiohttp (which builds its default SSL context at import)
from xrootd_server import BUNDLE_FILE, CERT_DIR, XRootDServer, session_certificate  # noqa: E402

# the byte and plan caches of remote inputs: the session's own, never the user's
os.environ["AGC_CORE_CACHE"] = tempfile.mkdtemp(prefix="agc-core-test-cache-")
atexit.register(shutil.rmtree, os.environ["AGC_CORE_CACHE"], True)

if shutil.which("xrootd") and session_certificate():
    os.environ["SSL_CERT_FILE"] = str(BUNDLE_FILE)
    atexit.register(shutil.rmtree, CERT_DIR, True)


@pytest.fixture(scope="session")
def cfg() -> AnalysisConfig:
    """The packaged analysis configuration."""
    return load_analysis_config()


@pytest.fixture(scope="session")
def shared_agc() -> Path:
    """The read-only AGC reference material (skips when ../shared is absent)."""
    path = SHARED / "agc"
    if not path.is_dir():
        pytest.skip("../shared/agc is not available")
    return path


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """A real XRootD server on 127.0.0.1 (root://, http://, https:// on one free port).

    Skips where the ``xrootd`` binary is missing, except in CI (``CI`` set), where it fails.
    """
    if shutil.which("xrootd") is None or shutil.which("openssl") is None:
        message = ("xrootd (Debian xrootd-server, xrootd-server-plugins) or openssl is not "
                   "installed")
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required in CI")
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="agc-core-xrootd-"))
    server = XRootDServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


#: events per file of the small dataset (and the served one); entries per chunk of its runs
SERVED_EVENTS = 2000
SMALL_CHUNK = 700


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A tiny embedded dataset (one file of 2000 events per sample): its fileset JSON."""
    from agc_core.synthetic import generate_dataset

    return Path(generate_dataset(tmp_path_factory.mktemp("small_dataset"),
                                 events_per_file=SERVED_EVENTS, files_per_sample=1,
                                 progress=False))


@pytest.fixture(scope="session")
def served_dataset(xrootd_server, small_dataset) -> Path:
    """:func:`small_dataset` inside the XRootD server's export: its fileset JSON."""
    folder = xrootd_server.root / "ds"
    shutil.copytree(small_dataset.parent, folder)
    xrootd_server.publish()
    return folder / small_dataset.name


@pytest.fixture(scope="session")
def small_run(small_dataset, tmp_path_factory):
    """The clean local run on :func:`small_dataset` that the remote and fault runs equal
    (in process, no MLP, short timeouts and retry delays for the fault tests)."""
    from agc_core.results import RunOptions
    from agc_core.runner import run_analysis

    out = tmp_path_factory.mktemp("small_run")
    return run_analysis(RunOptions(fileset=small_dataset, output_dir=out,
                                   chunksize=SMALL_CHUNK, inference="none", plots=False,
                                   executor="iterative", progress=False, io_timeout=1.0,
                                   retry_backoff=0.2, **_NO_FIT))


# the fit stage (when RunOptions has it) is not what these runs test
_NO_FIT = {"fit": False} if "fit" in getattr(
    __import__("agc_core.results").results.RunOptions, "__dataclass_fields__", {}) else {}
