"""One fused pass over a chunk: selection, regions, observables and MLP features for every
kinematic variation (nominal, jet energy scale, jet energy resolution) at once.

Per event, leptons are selected once (they do not depend on the jet variations), then each
kinematic variation selects its jets; the jet four-vector components are computed once per
event and shared (pz only where needed: all selected jets in 4j1b, the best trijet's in 4j2b),
and a variation whose selected jets equal an earlier variation's reuses its sphericity /
trijet result (only HT differs). JER factors are drawn only where they decide the selection
and, for events that land in a region, for the selected jets (HT).

Every piece of arithmetic is one of the scalar helpers the per-kernel functions are built from
(``selection.count_and_sum_above``, ``jet_passes``, ``add_selected_jet``,
``select_event_jets``, ``event_region``; ``kinematics.momentum_xy/z``;
``sphericity.pair_tensor``, ``min_abs_eigenvalue``; ``trijet.best_trijet``, ``trijet_mass``,
``trijet_avg_dr``), so the kernel tests of those functions test this loop's code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kinematics import max_multiplicity, momentum_xy, momentum_z
from .rng import MAX_STANDARD_NORMAL, standard_normal, stream_key
from .selection import (
    REGION_4J1B,
    add_selected_jet,
    count_and_sum_above,
    event_region,
    jet_passes,
    select_event_jets,
)
from .sphericity import min_abs_eigenvalue, pair_tensor
from .trijet import best_trijet, trijet_avg_dr, trijet_mass

N_FEATURES_4J1B = 4  # A, lepton_pt, leading_jet_pt, HT
N_FEATURES_4J2B = 5  # trijet_mass, trijet_avg_dR, lepton_pt, leading_jet_pt, HT



@njit(cache=True)
def jer_key(seed: int, sample_id: int, file_id: int) -> np.uint64:
    """Stream key of a file's JER draws (the one :func:`kernels.rng.jer_factors` uses)."""
    return stream_key(seed, sample_id, file_id)


@njit(cache=True)
def jer_bounds(jer_width: float) -> tuple[float, float]:
    """(lower, upper) bounds of every JER factor ``1 + w * N`` the keyed generator can draw.

    A jet with ``pt * upper <= cut`` never passes, one with ``pt * lower > cut`` always does
    (``lower`` may be <= 0, then no jet is sure), so only the jets in between need their draw to
    decide the selection.
    """
    w = abs(jer_width) * MAX_STANDARD_NORMAL
    return 1.0 - w, 1.0 + w


@njit(cache=True, inline="always")
def jer_factor(key: np.uint64, entry: int, jet: int, jer_width: float) -> float:
    """The JER pt factor ``1 + w * standard_normal(key, entry, jet)`` (float64), exactly the
    value :func:`kernels.rng.jer_factors` gives that jet."""
    return 1.0 + jer_width * standard_normal(key, entry, jet)


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
        jet_offsets, el_offsets, mu_offsets: int64 (n_events + 1), indices into the flat
            columns (they need not start at 0, e.g. views of a sliced awkward array).
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
        event_index: int64 (n_var, 2, >= n_events) output, chunk index of each selected event.
        observable: float64 (n_var, 2, >= n_events) output: HT (4j1b) or trijet mass (4j2b),
            GeV.
        features_4j1b: float32 (n_var, >= n_events, 4) output: A, lepton pt, leading jet pt
            (unscaled), HT.
        features_4j2b: float32 (n_var, >= n_events, 5) output: trijet mass, trijet average
            dR, lepton pt, leading jet pt (unscaled), HT.
        btag_pt: float32 (2, >= n_events, n_btag_jets) output for variation 0 only: unscaled
            pt of the first selected jets (stored order) of each selected event, per region.

    Only the first ``count[v, r]`` entries along the event axis of the outputs are written.
    """
    n_events = jet_offsets.shape[0] - 1
    n_scale = scale_factors.shape[0]
    n_var = n_scale + (1 if jer else 0)
    n_btag_pt = btag_pt.shape[2]
    max_jets = max_multiplicity(jet_offsets)
    jer_lower, jer_upper = jer_bounds(jer_width)

    sel = np.empty(max_jets, dtype=np.int64)  # local indices of the selected jets
    sel0 = np.empty(max_jets, dtype=np.int64)  # the same for the first factor
    ht_scale = np.zeros(n_scale, dtype=np.float64)
    same_scale = np.zeros(n_scale, dtype=np.bool_)
    masks = np.zeros(n_var, dtype=np.uint64)
    regions = np.full(n_var, -1, dtype=np.int64)
    result_a = np.zeros(n_var, dtype=np.float64)
    result_mass = np.zeros(n_var, dtype=np.float32)
    result_dr = np.zeros(n_var, dtype=np.float32)
    px = np.empty(max_jets, dtype=np.float32)
    py = np.empty(max_jets, dtype=np.float32)
    pz = np.empty(max_jets, dtype=np.float32)
    tag_gt = np.empty(max_jets, dtype=np.bool_)
    gx = np.empty(max_jets, dtype=np.float32)
    gy = np.empty(max_jets, dtype=np.float32)
    gt = np.empty(max_jets, dtype=np.bool_)
    factors = np.empty(max_jets, dtype=np.float64)
    stamp_xy = np.full(max_jets, -1, dtype=np.int64)
    stamp_z = np.full(max_jets, -1, dtype=np.int64)
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

        # one pass over the jets: the first factor's selection (into sel0), the HT of every
        # other scalar factor whose selection is the same, and the JER candidates
        f0 = scale_factors[0]
        ns0 = 0
        ge0 = 0
        gt0 = 0
        ht0 = 0.0
        lead0 = np.float32(0.0)
        mask0 = np.uint64(0)
        n_cand = 0
        for v in range(1, n_scale):
            ht_scale[v] = 0.0
            same_scale[v] = True
        for j in range(nj):
            pt = jet_pt[j0 + j]
            pt64 = np.float64(pt)
            if jet_passes(pt, jer_upper, jet_cut):
                n_cand += 1
            passed = jet_passes(pt, f0, jet_cut)
            for v in range(1, n_scale):
                if jet_passes(pt, scale_factors[v], jet_cut) != passed:
                    same_scale[v] = False
                elif passed:
                    ht_scale[v] += pt64 * scale_factors[v]
            if passed:
                ht0 += pt64 * f0
                ns0, ge0, gt0, lead0, mask0 = add_selected_jet(
                    j, pt, jet_btag[j0 + j], btag_threshold, sel0, ns0, ge0, gt0, lead0, mask0)
        sel_is_sel0 = False

        for v in range(n_var):
            regions[v] = -1
            if v == 0 or (v < n_scale and same_scale[v]):
                ns = ns0
                n_ge = ge0
                n_gt = gt0
                ht = ht0 if v == 0 else ht_scale[v]
                lead = lead0
                mask = mask0
                if not sel_is_sel0 and event_region(ne + nm, ns, n_ge, n_gt, n_leptons,
                                                    n_jets_min, n_btag_min) >= 0:
                    for a in range(ns0):
                        sel[a] = sel0[a]
                    sel_is_sel0 = True
            elif v < n_scale:
                ns, n_ge, n_gt, ht, lead, mask = select_event_jets(
                    jet_pt, jet_btag, j0, nj, scale_factors[v:v + 1], 0, jet_cut,
                    btag_threshold, sel)
                sel_is_sel0 = False
            else:
                # JER: draw only the factors that decide the selection (see jer_bounds)
                ns = 0
                n_ge = 0
                n_gt = 0
                ht = 0.0
                lead = np.float32(0.0)
                mask = np.uint64(0)
                if n_cand < n_jets_min:
                    continue
                sel_is_sel0 = False
                for j in range(nj):
                    pt = jet_pt[j0 + j]
                    factors[j] = np.nan
                    if not jet_passes(pt, jer_upper, jet_cut):
                        continue
                    if not jet_passes(pt, jer_lower, jet_cut):
                        s = jer_factor(key, entry, j, jer_width)
                        factors[j] = s
                        if not jet_passes(pt, s, jet_cut):
                            continue
                    ns, n_ge, n_gt, lead, mask = add_selected_jet(
                        j, pt, jet_btag[j0 + j], btag_threshold, sel, ns, n_ge, n_gt, lead,
                        mask)
            region = event_region(ne + nm, ns, n_ge, n_gt, n_leptons, n_jets_min, n_btag_min)
            if region < 0:
                continue
            if v >= n_scale:
                # the event is in a region: draw the sure jets' factors too, HT in stored order
                for a in range(ns):
                    j = sel[a]
                    s = factors[j]
                    if np.isnan(s):
                        s = jer_factor(key, entry, j, jer_width)
                        factors[j] = s
                    ht += np.float64(jet_pt[j0 + j]) * s
            regions[v] = region
            masks[v] = mask

            # an earlier variation with the same selected jets has the same A / trijet
            same = -1
            if use_mask:
                for u in range(v):
                    if regions[u] == region and masks[u] == mask:
                        same = u
                        break
            if same >= 0:
                result_a[v] = result_a[same]
                result_mass[v] = result_mass[same]
                result_dr[v] = result_dr[same]
            else:
                for a in range(ns):
                    j = sel[a]
                    if stamp_xy[j] != i:
                        stamp_xy[j] = i
                        px[j], py[j] = momentum_xy(jet_pt[j0 + j], jet_phi[j0 + j])
                        tag_gt[j] = jet_btag[j0 + j] > btag_threshold
                if region == REGION_4J1B:
                    for a in range(ns):
                        j = sel[a]
                        if stamp_z[j] != i:
                            stamp_z[j] = i
                            pz[j] = momentum_z(jet_pt[j0 + j], jet_eta[j0 + j])
                    sxx, syy, szz, sxy, sxz, syz = pair_tensor(px, py, pz, sel, ns)
                    result_a[v] = 1.5 * min_abs_eigenvalue(
                        np.float64(sxx), np.float64(syy), np.float64(szz), np.float64(sxy),
                        np.float64(sxz), np.float64(syz))
                else:
                    for a in range(ns):  # contiguous copies for the triple loop
                        j = sel[a]
                        gx[a] = px[j]
                        gy[a] = py[j]
                        gt[a] = tag_gt[j]
                    t0, t1, t2 = best_trijet(gx, gy, gt, ns)
                    if t0 < 0:  # cannot happen with two tags > threshold; stay defined
                        result_mass[v] = np.float32(np.nan)
                        result_dr[v] = np.float32(np.nan)
                    else:
                        ja = sel[t0]
                        jb = sel[t1]
                        jc = sel[t2]
                        for j in (ja, jb, jc):
                            if stamp_z[j] != i:
                                stamp_z[j] = i
                                pz[j] = momentum_z(jet_pt[j0 + j], jet_eta[j0 + j])
                        result_mass[v] = trijet_mass(px, py, pz, jet_e[j0:], ja, jb, jc)
                        result_dr[v] = trijet_avg_dr(jet_eta, jet_phi, j0 + ja, j0 + jb,
                                                      j0 + jc)

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
