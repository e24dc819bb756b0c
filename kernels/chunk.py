"""One fused pass over a chunk: selection, regions, observables and MLP features for every
kinematic variation (nominal, jet energy scale, jet energy resolution) at once.

Per event, leptons are selected once (they do not depend on the jet variations), then each
kinematic variation selects its jets; the jet four-vector components are computed once per
event and shared, and a variation whose selected jets equal an earlier variation's reuses its
sphericity / trijet result (only HT differs). JER factors are drawn only for jets that could
pass the cut with the largest possible draw.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.kinematics import momentum_xyz
from kernels.rng import standard_normal, stream_key
from kernels.selection import REGION_4J1B, REGION_4J2B, count_and_sum_above, event_region
from kernels.sphericity import aplanarity
from kernels.trijet import best_trijet, invariant_mass, trijet_avg_dr

N_FEATURES_4J1B = 4  # A, lepton_pt, leading_jet_pt, HT
N_FEATURES_4J2B = 5  # trijet_mass, trijet_avg_dR, lepton_pt, leading_jet_pt, HT

# Largest |N(0, 1)| that kernels.rng.standard_normal can return is sqrt(2 * 53 * ln 2) = 8.5716
# (Box-Muller with u1 >= 2**-53); the bound below adds a margin for rounding.
MAX_STANDARD_NORMAL = 8.6


@njit(cache=True)
def jer_key(seed: int, sample_id: int, file_id: int) -> np.uint64:
    """Stream key of a file's JER draws (the one :func:`kernels.rng.jer_factors` uses)."""
    return stream_key(seed, sample_id, file_id)


@njit(cache=True)
def max_multiplicity(offsets: np.ndarray) -> int:
    """Largest number of objects in one event (int64 offsets of length n_events + 1)."""
    m = 0
    for i in range(offsets.shape[0] - 1):
        m = max(m, offsets[i + 1] - offsets[i])
    return m


@njit(cache=True)
def analyse_events(
    jet_offsets: np.ndarray, jet_pt: np.ndarray, jet_eta: np.ndarray, jet_phi: np.ndarray,
    jet_e: np.ndarray, jet_btag: np.ndarray,
    el_offsets: np.ndarray, el_pt: np.ndarray, mu_offsets: np.ndarray, mu_pt: np.ndarray,
    scale_factors: np.ndarray, jer: bool, key: np.uint64, jer_width: float, entry_start: int,
    el_cut: np.float32, mu_cut: np.float32, jet_cut: float, n_leptons: int, n_jets_min: int,
    btag_threshold: np.float32, n_btag_min: int,
    count: np.ndarray, event_index: np.ndarray, observable: np.ndarray,
    features_4j1b: np.ndarray, features_4j2b: np.ndarray, btag_pt: np.ndarray,
) -> None:
    """Analyse a chunk for all kinematic variations in one pass over the events.

    Kinematic variations, in this order: one per entry of ``scale_factors`` (every jet's pt
    times that float64 factor; 1.0 = nominal), then, if ``jer``, per-jet factors
    ``1 + jer_width * standard_normal(key, entry_start + event, jet)``.

    Args:
        jet_offsets, el_offsets, mu_offsets: int64 (n_events + 1), starting at 0.
        jet_pt, jet_eta, jet_phi, jet_e, jet_btag: float32 flat jet columns (GeV for pt, e).
        el_pt, mu_pt: float32 flat lepton pt (GeV).
        scale_factors: float64 (n_scale,) jet pt factors.
        jer: whether to add the JER variation last.
        key: uint64 JER stream key (:func:`jer_key`).
        jer_width: float64 relative JER width (> 0).
        entry_start: index in the file of the chunk's first event.
        el_cut, mu_cut: float32 strict lepton pt cuts (GeV).
        jet_cut: float64 strict cut on ``float64(pt) * factor`` (GeV).
        n_leptons: required number of selected leptons (exactly).
        n_jets_min: minimum number of selected jets.
        btag_threshold: float32 working point (``>=`` for the filter and 4j1b, ``>`` for 4j2b).
        n_btag_min: minimum number of ``>=`` tagged jets.
        count: int64 (n_var, 2) output, set to the number of events per (variation, region).
        event_index: int64 (n_var, 2, n_events) output, chunk index of each selected event.
        observable: float64 (n_var, 2, n_events) output: HT (4j1b) or trijet mass (4j2b), GeV.
        features_4j1b: float32 (n_var, n_events, 4) output: A, lepton pt, leading jet pt
            (unscaled), HT.
        features_4j2b: float32 (n_var, n_events, 5) output: trijet mass, trijet average dR,
            lepton pt, leading jet pt (unscaled), HT.
        btag_pt: float32 (2, n_events, n_btag_jets) output for variation 0 only: unscaled pt of
            the first selected jets (stored order) of each selected event, per region.

    Only the first ``count[v, r]`` entries along the event axis of the outputs are written.
    """
    n_events = jet_offsets.shape[0] - 1
    n_scale = scale_factors.shape[0]
    n_var = n_scale + (1 if jer else 0)
    n_btag_pt = btag_pt.shape[2]
    max_jets = max_multiplicity(jet_offsets)
    jer_upper = 1.0 + abs(jer_width) * MAX_STANDARD_NORMAL

    selected = np.empty((n_var, max_jets), dtype=np.int64)
    masks = np.zeros(n_var, dtype=np.uint64)
    regions = np.full(n_var, -1, dtype=np.int64)
    result_a = np.zeros(n_var, dtype=np.float64)
    result_mass = np.zeros(n_var, dtype=np.float32)
    result_dr = np.zeros(n_var, dtype=np.float32)
    px = np.empty(max_jets, dtype=np.float32)
    py = np.empty(max_jets, dtype=np.float32)
    pz = np.empty(max_jets, dtype=np.float32)
    tag_gt = np.empty(max_jets, dtype=np.bool_)
    stamp = np.full(max_jets, -1, dtype=np.int64)
    count[:, :] = 0

    for i in range(n_events):
        j0 = jet_offsets[i]
        nj = jet_offsets[i + 1] - j0
        if nj < n_jets_min:
            continue
        ne, se = count_and_sum_above(el_offsets, el_pt, i, el_cut)
        nm, sm = count_and_sum_above(mu_offsets, mu_pt, i, mu_cut)
        if ne + nm != n_leptons:
            continue
        lepton_pt = se + sm
        use_mask = nj <= 64
        entry = entry_start + i

        for v in range(n_var):
            regions[v] = -1
            is_jer = v >= n_scale
            if is_jer:
                n_cand = 0
                for j in range(nj):
                    if np.float64(jet_pt[j0 + j]) * jer_upper > jet_cut:
                        n_cand += 1
                if n_cand < n_jets_min:
                    continue
                factor = 1.0
            else:
                factor = scale_factors[v]
            ns = 0
            n_ge = 0
            n_gt = 0
            ht = 0.0
            lead = np.float32(0.0)
            mask = np.uint64(0)
            for j in range(nj):
                pt = jet_pt[j0 + j]
                if is_jer:
                    if np.float64(pt) * jer_upper <= jet_cut:
                        continue
                    factor = 1.0 + jer_width * standard_normal(key, entry, j)
                scaled = np.float64(pt) * factor
                if scaled > jet_cut:
                    selected[v, ns] = j
                    if ns == 0 or pt > lead:
                        lead = pt
                    ns += 1
                    ht += scaled
                    tag = jet_btag[j0 + j]
                    if tag >= btag_threshold:
                        n_ge += 1
                    if tag > btag_threshold:
                        n_gt += 1
                    if use_mask:
                        mask |= np.uint64(1) << np.uint64(j)
            region = event_region(ne + nm, ns, n_ge, n_gt, n_leptons, n_jets_min, n_btag_min)
            if region < 0:
                continue
            regions[v] = region
            masks[v] = mask

            # an earlier variation with the same selected jets has the same A / trijet
            same = -1
            if use_mask:
                for u in range(v):
                    if regions[u] == region and masks[u] == mask:
                        same = u
                        break
            sel = selected[v]
            if same < 0:
                for a in range(ns):
                    j = sel[a]
                    if stamp[j] != i:
                        stamp[j] = i
                        k = j0 + j
                        px[j], py[j], pz[j] = momentum_xyz(jet_pt[k], jet_eta[k], jet_phi[k])
                        tag_gt[j] = jet_btag[k] > btag_threshold
                if region == REGION_4J1B:
                    result_a[v] = aplanarity(px, py, pz, sel, ns)
                else:
                    t0, t1, t2 = best_trijet(px, py, tag_gt, sel, ns)
                    if t0 < 0:  # cannot happen with two tags > threshold; stay defined
                        result_mass[v] = np.float32(np.nan)
                        result_dr[v] = np.float32(np.nan)
                    else:
                        ja = sel[t0]
                        jb = sel[t1]
                        jc = sel[t2]
                        result_mass[v] = invariant_mass(
                            (jet_e[j0 + ja] + jet_e[j0 + jb]) + jet_e[j0 + jc],
                            (px[ja] + px[jb]) + px[jc], (py[ja] + py[jb]) + py[jc],
                            (pz[ja] + pz[jb]) + pz[jc])
                        result_dr[v] = trijet_avg_dr(jet_eta[j0:], jet_phi[j0:], ja, jb, jc)
            else:
                result_a[v] = result_a[same]
                result_mass[v] = result_mass[same]
                result_dr[v] = result_dr[same]

            row = count[v, region]
            count[v, region] = row + 1
            event_index[v, region, row] = i
            ht32 = np.float32(ht)
            if region == REGION_4J1B:
                observable[v, region, row] = ht
                features_4j1b[v, row, 0] = np.float32(result_a[v])
                features_4j1b[v, row, 1] = lepton_pt
                features_4j1b[v, row, 2] = lead
                features_4j1b[v, row, 3] = ht32
            else:
                observable[v, region, row] = np.float64(result_mass[v])
                features_4j2b[v, row, 0] = result_mass[v]
                features_4j2b[v, row, 1] = result_dr[v]
                features_4j2b[v, row, 2] = lepton_pt
                features_4j2b[v, row, 3] = lead
                features_4j2b[v, row, 4] = ht32
            if v == 0:
                for k in range(min(n_btag_pt, ns)):
                    btag_pt[region, row, k] = jet_pt[j0 + sel[k]]

