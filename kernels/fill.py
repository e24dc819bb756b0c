"""Histogram filling into dense (variation, region, classification, bin) weight arrays."""

from __future__ import annotations

import numpy as np
from numba import njit

from .weights import btag_factor


@njit(cache=True)
def regular_bin(x: float, bins: int, low: float, high: float) -> int:
    """Bin of ``x`` on a regular axis with flow bins, exactly like boost-histogram.

    Args:
        x: value (float64; GeV for the observables).
        bins: number of bins.
        low, high: axis edges (float64).

    Returns:
        0 for underflow (incl. -inf), 1..bins for the bins, bins + 1 for overflow (incl.
        ``x == high``, +inf and NaN).
    """
    z = (x - low) / (high - low)
    if z < 1.0:
        if z >= 0.0:
            return int(z * bins) + 1
        return 0
    return bins + 1


@njit(cache=True)
def fill_weighted(sumw: np.ndarray, sumw2: np.ndarray, variation: int, region: int,
                  observable: np.ndarray, classification: np.ndarray, weight: np.ndarray,
                  n: int, low: float, high: float) -> None:
    """Add weighted entries to one (variation, region) slice.

    Args:
        sumw, sumw2: float64 (n_variations, n_regions, n_classes, bins + 2), updated in place.
        variation, region: indices on the first two axes.
        observable: float64 values (GeV), first n used.
        classification: int64 class per entry; entries outside [0, n_classes) are dropped.
        weight: float64 weight per entry.
        n: number of entries.
        low, high: axis edges (float64); bins = sumw.shape[3] - 2.
    """
    bins = sumw.shape[3] - 2
    n_classes = sumw.shape[2]
    for e in range(n):
        c = classification[e]
        if c < 0 or c >= n_classes:
            continue
        b = regular_bin(observable[e], bins, low, high)
        w = weight[e]
        sumw[variation, region, c, b] += w
        sumw2[variation, region, c, b] += w * w


@njit(cache=True)
def fill_region(sumw: np.ndarray, sumw2: np.ndarray, region: int, observable: np.ndarray,
                classification: np.ndarray, n: int, low: float, high: float, weight: float,
                own: int, flat: int, flat_up: float, flat_down: float, btag: int,
                btag_pt: np.ndarray, btag_magnitude: float, btag_pt_ref: np.float32) -> None:
    """Fill one region of one kinematic variation with its weight-based variations.

    Every entry goes with ``weight`` into variation ``own``; if ``flat >= 0`` also with
    ``weight * flat_up`` into ``flat`` and ``weight * flat_down`` into ``flat + 1``; if
    ``btag >= 0`` also into ``btag + 2 i`` (up) and ``btag + 2 i + 1`` (down), i over the
    columns of ``btag_pt``, with ``weight * (1 +/- m * pt_i / pt_ref)``.

    Args:
        sumw, sumw2: float64 (n_variations, n_regions, n_classes, bins + 2), in place.
        region: region index.
        observable: float64 (GeV), classification: int64; first n entries used.
        n: number of entries.
        low, high: axis edges (float64).
        weight: float64 base weight (xsec_weight).
        own: variation index of the plain weight.
        flat: first of the two flat variation indices, or -1.
        flat_up, flat_down: float64 flat factors.
        btag: first b-tag variation index, or -1.
        btag_pt: float32 (>= n, n_btag) unscaled pt (GeV) of the first selected jets.
        btag_magnitude: float64 m; btag_pt_ref: float32 pt_ref (GeV).
    """
    bins = sumw.shape[3] - 2
    n_classes = sumw.shape[2]
    n_btag = btag_pt.shape[1]
    w2 = weight * weight
    for e in range(n):
        c = classification[e]
        if c < 0 or c >= n_classes:
            continue
        b = regular_bin(observable[e], bins, low, high)
        sumw[own, region, c, b] += weight
        sumw2[own, region, c, b] += w2
        if flat >= 0:
            w = weight * flat_up
            sumw[flat, region, c, b] += w
            sumw2[flat, region, c, b] += w * w
            w = weight * flat_down
            sumw[flat + 1, region, c, b] += w
            sumw2[flat + 1, region, c, b] += w * w
        if btag >= 0:
            for i in range(n_btag):
                pt = btag_pt[e, i]
                w = weight * btag_factor(pt, btag_magnitude, btag_pt_ref)
                sumw[btag + 2 * i, region, c, b] += w
                sumw2[btag + 2 * i, region, c, b] += w * w
                w = weight * btag_factor(pt, -btag_magnitude, btag_pt_ref)
                sumw[btag + 2 * i + 1, region, c, b] += w
                sumw2[btag + 2 * i + 1, region, c, b] += w * w
