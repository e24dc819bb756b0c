"""The detector level: reconstructed jets (response, resolution, b-tagging), leptons,
pile-up and fakes, trigger objects; flat arrays of the valid slots with their event index."""

from __future__ import annotations

import numpy as np
from numba import njit

from agc_core.synthetic.partons import _Partons, _VisibleLeptons
from agc_core.synthetic.physics import (
    FLAV_B,
    FLAV_C,
    N_FAKE,
    N_PILEUP,
    N_TRIG_EXTRA,
    OOF_GAMMA_SHAPE,
    PDG_E,
    PDG_MU,
    TAG_SCORE_SPLIT,
    Detector,
)
from agc_core.synthetic.vectors import _kinematics, _wrap


def _uniforms(rng: np.random.Generator, k: int, shape: tuple[int, ...]) -> np.ndarray:
    """k uniform [0, 1) arrays of a slot shape (float32: fast, and fine for smearing)."""
    return rng.random((k, *shape), dtype=np.float32)


def _gauss(u1: np.ndarray, u2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normal arrays from two uniform arrays (Box-Muller)."""
    r = np.sqrt(-2.0 * np.log1p(-u1.astype(np.float64)))
    angle = 2.0 * np.pi * u2.astype(np.float64)
    return r * np.cos(angle), r * np.sin(angle)


def _concat_flat(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Join (event index, flat fields) pieces."""
    return (np.concatenate([ev for ev, _ in parts]),
            {k: np.concatenate([f[k] for _, f in parts]) for k in parts[0][1]})


def _reco_jets(rng: np.random.Generator, blocks: list[tuple[_Partons, float, float]],
               b_fragmentation: float, det: Detector) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Jets from partons: response and resolution, angular smearing, jet mass, b-tag score.

    Random numbers are drawn for every slot (so samples that share the nominal's random
    numbers stay aligned), the arithmetic is done on the valid slots only.

    Args:
        rng: the jets' random generator.
        blocks: parton slot blocks (arrays of shape (n, s)) with their mean jet response and
            their mean out-of-cone loss.
        b_fragmentation: factor on the b jets' tagging efficiency.
        det: detector knobs.

    Returns:
        (event index, flat arrays ``pt, eta, phi, mass, btag, ch``) of the stored jets.
    """
    return _concat_flat([_reco_jet_block(rng, p, r, loss, b_fragmentation, det)
                         for p, r, loss in blocks])


def _reco_jet_block(rng: np.random.Generator, partons: _Partons, response: float,
                    oof_loss: float, b_fragmentation: float, det: Detector
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`_reco_jets` for one block of parton slots."""
    shape = partons.valid.shape
    u = _uniforms(rng, 6, shape)
    charge = rng.integers(-1, 2, shape, dtype=np.int8)
    v = partons.valid
    ev = np.nonzero(v)[0]
    g = [*_gauss(u[2][v], u[3][v]), *_gauss(u[4][v], u[5][v])]
    pt_true = np.maximum(partons.pt[v], 1e-3)
    flav = partons.flavour[v]
    is_b, is_c = flav == FLAV_B, flav == FLAV_C
    # out-of-cone radiation: soft wide-angle gluons carry away a Gamma-distributed momentum
    # whose mean hardly depends on the jet's (at most half of it); the jet energy correction
    # restores the nominal mean (det.jet_oof_correction)
    lost = (oof_loss / OOF_GAMMA_SHAPE
            * rng.gamma(OOF_GAMMA_SHAPE, 1.0, shape)[v])
    correction = det.jet_oof_correction if oof_loss > 0 else 0.0
    pt_true = np.maximum(pt_true - np.minimum(lost, 0.5 * pt_true) + correction, 1e-3)
    mean = response * np.where(is_b, det.b_response, 1.0)
    sigma = np.sqrt((det.jet_noise / pt_true) ** 2 + det.jet_stochastic ** 2 / pt_true
                    + det.jet_constant ** 2)
    pt = pt_true * mean * np.maximum(1.0 + sigma * g[0], 0.2)
    eta = partons.eta[v] + 0.01 * g[1]
    phi = _wrap(partons.phi[v] + 0.01 * g[2])
    mass = pt * det.jet_mass_frac * np.exp(0.35 * g[3])
    eff = np.where(is_b, det.btag_eff_b * b_fragmentation,
                   np.where(is_c, det.btag_eff_c, det.btag_eff_light))
    power = np.where(is_b, 0.6, np.where(is_c, 1.0, 2.0))
    u_tag, v_tag = u[0][v], u[1][v].astype(np.float64)
    split = TAG_SCORE_SPLIT
    btag = np.where(u_tag < eff, 1.0 - (1.0 - split) * v_tag ** 3, split * v_tag ** power)
    btag = np.where(np.abs(eta) < det.btag_eta_max, btag, 0.0)
    keep = (pt > det.jet_store_pt_min) & (np.abs(eta) < det.jet_eta_max)
    out = {"pt": pt, "eta": eta, "phi": phi, "mass": mass, "btag": btag, "ch": charge[v]}
    return ev[keep], {k: a[keep] for k, a in out.items()}


def _pileup_jets(rng: np.random.Generator, npv: np.ndarray, det: Detector) -> _Partons:
    """Soft pileup jets (light flavour) in N_PILEUP slots."""
    n = npv.shape[0]
    count = rng.poisson(det.pileup_jets_per_vertex * npv)
    shape = (n, N_PILEUP)
    pt = det.pileup_pt_min + rng.exponential(det.pileup_pt_slope, shape)
    eta = rng.uniform(-det.jet_eta_max, det.jet_eta_max, shape)
    phi = rng.uniform(-np.pi, np.pi, shape)
    valid = np.arange(N_PILEUP)[None, :] < count[:, None]
    return _Partons(pt, eta, phi, np.zeros(shape), np.zeros(shape, np.int8), valid)


def _reco_leptons(rng: np.random.Generator, vis: _VisibleLeptons, quark_blocks: list[_Partons],
                  det: Detector) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reconstructed leptons: prompt (from W / tau), non-prompt (b, c decays) and fakes.

    Returns:
        (event index, flat arrays ``pt, eta, phi, pdg, ch, iso``) of the stored leptons.
    """
    n = vis.valid.shape[0]
    # prompt: resolution, identification efficiency, isolation
    u = _uniforms(rng, 4, vis.valid.shape)
    v = vis.valid & (u[0] < det.lepton_eff)
    ev_p = np.nonzero(v)[0]
    g = _gauss(u[2][v], u[3][v])
    pdg_p, pt_v = vis.pdg[v], vis.pt[v]
    res = np.where(pdg_p == PDG_E, det.electron_res,
                   det.muon_res * np.sqrt(1.0 + (pt_v / 100.0) ** 2))
    prompt = {"pt": pt_v * (1.0 + res * g[0]), "eta": vis.eta[v] + 0.001 * g[1],
              "phi": _wrap(vis.phi[v] + 0.001 * g[1]), "pdg": pdg_p,
              "ch": vis.charge[v], "iso": -0.03 * np.log1p(-u[1][v].astype(np.float64))}
    # non-prompt: one slot per quark, from semileptonic b and c decays inside jets
    ev_np, nonprompt = _concat_flat([_nonprompt_leptons(rng, q, det) for q in quark_blocks])
    # fakes and soft leptons
    fs = (n, N_FAKE)
    count = rng.poisson(det.fake_mean, n)
    u = _uniforms(rng, 6, fs)
    v = np.arange(N_FAKE)[None, :] < count[:, None]
    ev_f = np.nonzero(v)[0]
    fakes = {"pt": det.lepton_store_pt_min - det.fake_slope * np.log1p(-u[0][v].astype(
                 np.float64)),
             "eta": -2.4 + 4.8 * u[1][v].astype(np.float64),
             "phi": -np.pi + 2 * np.pi * u[2][v].astype(np.float64),
             "pdg": np.where(u[3][v] < 0.5, PDG_E, PDG_MU),
             "ch": np.where(u[4][v] < 0.5, -1, 1),
             "iso": 0.1 - 0.5 * np.log1p(-u[5][v].astype(np.float64))}
    ev, out = _concat_flat([(ev_p, prompt), (ev_np, nonprompt), (ev_f, fakes)])
    eta_max = np.where(out["pdg"] == PDG_E, det.electron_eta_max, det.muon_eta_max)
    keep = (out["pt"] > det.lepton_store_pt_min) & (np.abs(out["eta"]) < eta_max)
    return ev[keep], {k: a[keep] for k, a in out.items()}


def _nonprompt_leptons(rng: np.random.Generator, quarks: _Partons, det: Detector
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Non-isolated e / mu from semileptonic b and c decays, one slot per quark slot."""
    u = _uniforms(rng, 7, quarks.valid.shape)
    prob = np.where(quarks.flavour == FLAV_B, det.nonprompt_b,
                    np.where(quarks.flavour == FLAV_C, det.nonprompt_c, 0.0))
    v = quarks.valid & (u[0] < prob)
    g = _gauss(u[4][v], u[5][v])
    z = 1.0 - (1.0 - u[6][v].astype(np.float64)) ** det.nonprompt_z  # momentum fraction
    return np.nonzero(v)[0], {
        "pt": quarks.pt[v] * z, "eta": quarks.eta[v] + 0.1 * g[0],
        "phi": _wrap(quarks.phi[v] + 0.1 * g[1]),
        "pdg": np.where(u[1][v] < 0.5, PDG_E, PDG_MU),
        "ch": np.where(u[2][v] < 0.5, -1, 1),
        "iso": 0.15 - 0.4 * np.log1p(-u[3][v].astype(np.float64))}


def _sort_events(ev: np.ndarray, pt: np.ndarray, n: int, fields: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Group flat objects by event, by decreasing pt within an event.

    Returns:
        (int32 counts per event, the fields in that order).
    """
    counts = np.bincount(ev, minlength=n)
    order = _event_order(ev.astype(np.int64), pt.astype(np.float64), counts)
    return counts.astype(np.int32), {k: a[order] for k, a in fields.items()}


@njit(cache=True)
def _event_order(ev: np.ndarray, pt: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Permutation grouping objects by event (``counts`` per event), by decreasing pt within
    an event, ties in their original order: what two stable argsorts (by -pt, then by event)
    give, in linear time plus one insertion sort per (small) event."""
    starts = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    for e in range(counts.shape[0]):
        starts[e + 1] = starts[e] + counts[e]
    pos = starts[:-1].copy()
    order = np.empty(ev.shape[0], dtype=np.int64)
    for i in range(ev.shape[0]):
        order[pos[ev[i]]] = i
        pos[ev[i]] += 1
    for e in range(counts.shape[0]):
        a = starts[e]
        for i in range(a + 1, starts[e + 1]):
            x = order[i]
            j = i
            while j > a and pt[order[j - 1]] < pt[x]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = x
    return order


def _rank(counts: np.ndarray) -> np.ndarray:
    """Position of every flat object within its event."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def _trigger_objects(rng: np.random.Generator, n: int,
                     objects: list[tuple[np.ndarray, dict[str, np.ndarray], int, float]]
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Trigger objects: the leading reconstructed objects seen online, plus L1 seeds.

    Args:
        rng: random generator.
        n: number of events.
        objects: (counts, sorted fields, how many leading ones, pt threshold) per collection.

    Returns:
        (int32 counts, flat float32 kinematics).
    """
    evs, pts, etas, phis = [], [], [], []
    for counts, f, k, pt_min in objects:
        sel = (_rank(counts) < k) & (f["pt"] > pt_min)
        evs.append(np.repeat(np.arange(n), counts)[sel])
        pts.append(f["pt"][sel])
        etas.append(f["eta"][sel])
        phis.append(f["phi"][sel])
    es = (n, N_TRIG_EXTRA)
    count = rng.poisson(0.8, n)
    u = _uniforms(rng, 3, es)
    v = np.arange(N_TRIG_EXTRA)[None, :] < count[:, None]
    evs.append(np.nonzero(v)[0])
    pts.append(8.0 - 12.0 * np.log1p(-u[0][v].astype(np.float64)))
    etas.append(-2.5 + 5.0 * u[1][v].astype(np.float64))
    phis.append(-np.pi + 2 * np.pi * u[2][v].astype(np.float64))
    ev = np.concatenate(evs)
    g = rng.standard_normal((3, ev.shape[0]))
    pt = np.concatenate(pts) * (1.0 + 0.03 * g[0])
    fields = {"pt": pt, "eta": np.concatenate(etas) + 0.02 * g[1],
              "phi": _wrap(np.concatenate(phis) + 0.02 * g[2])}
    counts, flat = _sort_events(ev, pt, n, fields)
    return counts, _kinematics(flat["pt"], flat["eta"], flat["phi"], 0.0)
