"""Event weights of the weight-based systematic variations (b-tag and W+jets scale)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def btag_factor(jet_pt: np.float32, magnitude: float, pt_ref: np.float32) -> float:
    """The seed's b-tag weight factor ``1 + magnitude * float64(float32(jet_pt / pt_ref))``.

    Args:
        jet_pt: float32 unscaled pt (GeV) of the i-th selected jet.
        magnitude: float64 signed magnitude (``+m`` for up, ``-m`` for down).
        pt_ref: float32 reference pt (GeV); the division is float32.

    Returns:
        float64 multiplicative weight factor.
    """
    return 1.0 + magnitude * np.float64(jet_pt / pt_ref)


@njit(cache=True)
def flat_factor(magnitude: np.float32) -> float:
    """The seed's flat weight factor ``1 + magnitude`` built in float32, as float64."""
    return np.float64(np.float32(1.0) + magnitude)


@njit(cache=True)
def btag_weights(jet_pt: np.ndarray, weight: float, magnitude: float, pt_ref: np.float32
                 ) -> np.ndarray:
    """b-tag variation weights of selected events.

    Args:
        jet_pt: float32 (n_events, n_jets) unscaled pt (GeV) of the first selected jets.
        weight: float64 base event weight (xsec_weight).
        magnitude: float64 variation magnitude m.
        pt_ref: float32 reference pt (GeV).

    Returns:
        float64 (n_jets, 2, n_events): ``weight * (1 +/- m * pt_i / pt_ref)``, [i, 0] up,
        [i, 1] down.
    """
    n, n_jets = jet_pt.shape
    out = np.empty((n_jets, 2, n), dtype=np.float64)
    for e in range(n):
        for i in range(n_jets):
            out[i, 0, e] = weight * btag_factor(jet_pt[e, i], magnitude, pt_ref)
            out[i, 1, e] = weight * btag_factor(jet_pt[e, i], -magnitude, pt_ref)
    return out
