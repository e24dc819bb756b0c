"""Object and event selection: leptons, jets with a pt variation factor, event filter, regions.

Comparison precision follows the seed's numpy/awkward arithmetic: lepton pt and b-tag scores
are float32 compared with a float32 cut (numpy casts the Python cut to the array's dtype); jet
pt is multiplied by a float64 variation factor and compared in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kinematics import max_multiplicity

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
def add_selected_jet(j: int, pt: np.float32, tag: np.float32, btag_threshold: np.float32,
                     selected: np.ndarray, n: int, n_ge: int, n_gt: int, lead: np.float32,
                     mask: np.uint64) -> tuple[int, int, int, np.float32, np.uint64]:
    """Record a jet that passed the cut in an event's running jet summaries.

    Args:
        j: the jet's local index in its event (0..n_jets-1), stored order.
        pt: its float32 unscaled pt (GeV); tag: its float32 b-tag score.
        btag_threshold: float32 working point.
        selected: int64 output, local indices of the selected jets; ``selected[n] = j``.
        n, n_ge, n_gt, lead, mask: the summaries so far (selected jets, tags ``>=`` and ``>``
            the threshold, leading unscaled pt, bit mask of the selected local indices < 64).

    Returns:
        The updated (n, n_ge, n_gt, lead, mask).
    """
    selected[n] = j
    if n == 0 or pt > lead:
        lead = pt
    if tag >= btag_threshold:
        n_ge += 1
    if tag > btag_threshold:
        n_gt += 1
    if j < 64:
        mask |= np.uint64(1) << np.uint64(j)
    return n + 1, n_ge, n_gt, lead, mask


@njit(cache=True)
def select_event_jets(jet_pt: np.ndarray, jet_btag: np.ndarray, j0: int, nj: int,
                      factors: np.ndarray, stride: int, jet_cut: float,
                      btag_threshold: np.float32, selected: np.ndarray
                      ) -> tuple[int, int, int, float, np.float32, np.uint64]:
    """Select one event's jets, each scaled by its pt factor.

    Args:
        jet_pt, jet_btag: float32 flat jet pt (GeV) and b-tag score.
        j0, nj: first flat index and number of the event's jets.
        factors, stride: float64 pt factors; jet ``j`` of the event uses
            ``factors[(j0 + j) * stride]``: stride 1 for a factor per jet (JER), 0 for one
            factor for all of them, ``factors[0]`` (the seed's scalar variations: nominal,
            jet energy scale).
        jet_cut: float64 strict cut on ``float64(pt) * factor`` (GeV).
        btag_threshold: float32 working point.
        selected: int64 output, local indices (0..nj-1) of the selected jets in stored order.

    Returns:
        (n selected, n with btag >= thr, n with btag > thr, HT float64 GeV (sequential sum of
        ``float64(pt) * factor``), leading unscaled pt float32 GeV, bit mask of the selected
        local indices (first 64 jets)).
    """
    ns = 0
    n_ge = 0
    n_gt = 0
    ht = 0.0
    lead = np.float32(0.0)
    mask = np.uint64(0)
    for j in range(nj):
        pt = jet_pt[j0 + j]
        f = factors[(j0 + j) * stride]
        if jet_passes(pt, f, jet_cut):
            ht += np.float64(pt) * f
            ns, n_ge, n_gt, lead, mask = add_selected_jet(
                j, pt, jet_btag[j0 + j], btag_threshold, selected, ns, n_ge, n_gt, lead, mask)
    return ns, n_ge, n_gt, ht, lead, mask


@njit(cache=True)
def select_jets(offsets: np.ndarray, pt: np.ndarray, btag: np.ndarray, factor: np.ndarray,
                cut: float, btag_threshold: np.float32
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                           np.ndarray]:
    """Jet selection with per-jet pt variation factors and the per-event jet summaries.

    The per-event work is :func:`select_event_jets` (the pieces the fused chunk
    kernel uses).

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
    selected = np.empty(max_multiplicity(offsets), dtype=np.int64)
    for i in range(n_events):
        j0 = offsets[i]
        ns, n_ge[i], n_gt[i], ht[i], lead[i], _ = select_event_jets(
            pt, btag, j0, offsets[i + 1] - j0, factor, 1, cut, btag_threshold, selected)
        n_jets[i] = ns
        for a in range(ns):
            mask[j0 + selected[a]] = True
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
