"""Fit inputs shared by the workspace, fit and report tests (built once per test process).

- :func:`embedded_run`: a small embedded (synthetic) dataset processed with the MLP: the run's
  full histogram and its ``histograms.root`` / ``histograms_full.npz``;
- :func:`reference_inputs`: the real CMS reference histograms of ``../shared/agc`` as a full
  histogram and a cabinetry-style ``histograms.root`` (skips when ``../shared`` is absent).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boost_histogram as bh
import pytest

from agc_core.reference_histograms import FILESET_FILE, REFERENCE_FILE

EVENTS_PER_FILE = 4000


@dataclass(frozen=True)
class FitInputs:
    """A full histogram and the files written from it."""

    hist: bh.Histogram
    root: Path
    full: Path
    folder: Path
    run: Any = None


@functools.cache
def _tmp() -> Path:
    path = Path(tempfile.mkdtemp(prefix="agc-fit-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def embedded_run() -> FitInputs:
    """Run the analysis (numba MLP, every systematic, the fit without plots, scan or ranking)
    on a small generated dataset."""
    from agc_core.results import RunOptions
    from agc_core.runner import run_analysis
    from agc_core.synthetic import generate_dataset

    fileset = generate_dataset(_tmp() / "dataset", events_per_file=EVENTS_PER_FILE,
                               files_per_sample=1, progress=False)
    out = _tmp() / "run"
    result = run_analysis(RunOptions(fileset=fileset, output_dir=out, executor="iterative",
                                     plots=False, progress=False))
    assert result.complete and result.hist is not None
    return FitInputs(result.hist, out / "histograms.root", out / "histograms_full.npz", out,
                     result)


@functools.cache
def _reference() -> FitInputs:
    from agc_core.config import load_analysis_config
    from agc_core.outputs import save_full_histogram, write_fit_histograms
    from agc_core.reference_histograms import reference_histogram

    cfg = load_analysis_config()
    hist = reference_histogram(cfg=cfg)
    out = _tmp() / "reference"
    write_fit_histograms(hist, cfg, out / "histograms.root")
    save_full_histogram(hist, out / "histograms_full.npz")
    return FitInputs(hist, out / "histograms.root", out / "histograms_full.npz", out)


def reference_inputs() -> FitInputs:
    """The real CMS reference histograms (skips the test when ``../shared`` is absent)."""
    if not (REFERENCE_FILE.exists() and FILESET_FILE.exists()):
        pytest.skip(f"{REFERENCE_FILE} not available")
    return _reference()
