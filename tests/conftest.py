"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from agc_core.config import AnalysisConfig, load_analysis_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
