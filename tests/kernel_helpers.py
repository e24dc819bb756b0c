"""Shared helpers of the kernel tests (not a test module)."""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from agc_core import reference
from agc_core.config import AnalysisConfig


def selected_jets(chunk: Any, cfg: AnalysisConfig
                  ) -> tuple[ak.Array, np.ndarray, dict[str, np.ndarray]]:
    """Jets with pt > cut of the events that have one: awkward, and flat kernel arrays.

    Returns:
        (jagged jets, int64 offsets, {property: flat float32 array}).
    """
    events = reference.build_events(chunk)
    jets = events.jet[events.jet.pt > cfg.selection.jet_pt_min]
    jets = jets[ak.num(jets) >= 1]
    off = np.zeros(len(jets) + 1, dtype=np.int64)
    np.cumsum(ak.to_numpy(ak.num(jets)), out=off[1:])
    flat = {p: np.ascontiguousarray(ak.to_numpy(ak.flatten(jets[p])), dtype=np.float32)
            for p in ("pt", "eta", "phi", "e", "btag")}
    return jets, off, flat
