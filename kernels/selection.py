"""Object and event selection: leptons, jets with a pt variation factor, event filter, regions.

Comparison precision follows the seed's numpy/awkward arithmetic: lepton pt and b-tag scores
are float32 compared with a float32 cut (numpy casts the Python cut to the array's dtype); jet
pt is multiplied by a float64 variation factor and compared in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

REGION_NONE = -1
REGION_4J1B = 0
REGION_4J2B = 1


@njit(cache=True)
def count_and_sum_above(offsets: np.ndarray, pt: np.ndarray, event: int, cut: np.float32
                        ) -> tuple[int, np.float32]:
    """Number and float32 sum (stored order) of an event's objects with ``pt > cut``.

    Args:
        offsets: int64 offsets of the collection (n_events + 1).
        pt: float32 flat pt (GeV).
        event: event index.
        cut: float32 threshold (GeV), strict.

    Returns:
        (count, float32 sum of the selected pt in GeV).
    """
    n = 0
    total = np.float32(0.0)
    for k in range(offsets[event], offsets[event + 1]):
        p = pt[k]
        if p > cut:
            n += 1
            total += p
    return n, total


@njit(cache=True)
def jet_passes(pt: np.float32, factor: float, cut: float) -> bool:
    """The seed's jet cut ``float64(pt) * factor > cut`` (pt in GeV, factor float64)."""
    return np.float64(pt) * factor > cut


@njit(cache=True)
def event_region(n_leptons: int, n_jets: int, n_btag_ge: int, n_btag_gt: int,
                 n_leptons_req: int, n_jets_min: int, n_btag_min: int) -> int:
    """Region of an event from its selected-object counts.

    Args:
        n_leptons: selected electrons + muons.
        n_jets: selected jets.
        n_btag_ge: selected jets with ``btag >= threshold``.
        n_btag_gt: selected jets with ``btag > threshold``.
        n_leptons_req: required number of leptons (exactly).
        n_jets_min: minimum number of jets.
        n_btag_min: minimum number of ``btag >= threshold`` jets.

    Returns:
        REGION_4J1B (0) for exactly one ``>=`` tag, REGION_4J2B (1) for at least two ``>``
        tags, REGION_NONE (-1) if the event fails the filter or is in neither region.
    """
    if n_leptons != n_leptons_req or n_jets < n_jets_min or n_btag_ge < n_btag_min:
        return REGION_NONE
    if n_btag_ge == 1:
        return REGION_4J1B
    if n_btag_gt >= 2:
        return REGION_4J2B
    return REGION_NONE


@njit(cache=True)
def select_leptons(el_offsets: np.ndarray, el_pt: np.ndarray, mu_offsets: np.ndarray,
                   mu_pt: np.ndarray, el_cut: np.float32, mu_cut: np.float32
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Selected lepton multiplicity and lepton pt per event.

    Args:
        el_offsets, mu_offsets: int64 offsets (n_events + 1) of electrons and muons.
        el_pt, mu_pt: float32 flat pt (GeV).
        el_cut, mu_cut: float32 strict pt thresholds (GeV).

    Returns:
        (n_leptons int64 (n_events,), lepton_pt float32 (n_events,)) where lepton_pt is
        ``float32(sum electrons) + float32(sum muons)`` of the selected ones (GeV).
    """
    n_events = el_offsets.shape[0] - 1
    n_lep = np.empty(n_events, dtype=np.int64)
    lep_pt = np.empty(n_events, dtype=np.float32)
    for i in range(n_events):
        ne, se = count_and_sum_above(el_offsets, el_pt, i, el_cut)
        nm, sm = count_and_sum_above(mu_offsets, mu_pt, i, mu_cut)
        n_lep[i] = ne + nm
        lep_pt[i] = se + sm
    return n_lep, lep_pt


@njit(cache=True)
def select_jets(offsets: np.ndarray, pt: np.ndarray, btag: np.ndarray, factor: np.ndarray,
                cut: float, btag_threshold: np.float32
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                           np.ndarray]:
    """Jet selection with per-jet pt variation factors and the per-event jet summaries.

    Args:
        offsets: int64 jet offsets (n_events + 1).
        pt: float32 jet pt (GeV, unscaled), flat.
        btag: float32 b-tag score, flat.
        factor: float64 pt factor per jet (flat, same length as pt).
        cut: float64 strict threshold on ``pt * factor`` (GeV).
        btag_threshold: float32 b-tag working point.

    Returns:
        mask (bool per jet), n_jets, n_btag_ge, n_btag_gt (int64 per event), HT (float64 per
        event: sequential sum of ``float64(pt) * factor`` over selected jets, GeV) and the
        leading selected jet's unscaled pt (float32 per event, 0 if none, GeV).
    """
    n_events = offsets.shape[0] - 1
    mask = np.zeros(pt.shape[0], dtype=np.bool_)
    n_jets = np.zeros(n_events, dtype=np.int64)
    n_ge = np.zeros(n_events, dtype=np.int64)
    n_gt = np.zeros(n_events, dtype=np.int64)
    ht = np.zeros(n_events, dtype=np.float64)
    lead = np.zeros(n_events, dtype=np.float32)
    for i in range(n_events):
        first = True
        for k in range(offsets[i], offsets[i + 1]):
            if jet_passes(pt[k], factor[k], cut):
                mask[k] = True
                n_jets[i] += 1
                ht[i] += np.float64(pt[k]) * factor[k]
                if first or pt[k] > lead[i]:
                    lead[i] = pt[k]
                    first = False
                b = btag[k]
                if b >= btag_threshold:
                    n_ge[i] += 1
                if b > btag_threshold:
                    n_gt[i] += 1
    return mask, n_jets, n_ge, n_gt, ht, lead


@njit(cache=True)
def event_regions(n_leptons: np.ndarray, n_jets: np.ndarray, n_btag_ge: np.ndarray,
                  n_btag_gt: np.ndarray, n_leptons_req: int, n_jets_min: int,
                  n_btag_min: int) -> np.ndarray:
    """:func:`event_region` over arrays of int64 counts; returns int8 regions (-1, 0, 1)."""
    n = n_leptons.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        out[i] = event_region(n_leptons[i], n_jets[i], n_btag_ge[i], n_btag_gt[i],
                              n_leptons_req, n_jets_min, n_btag_min)
    return out
