"""The particle level: the hard process of each sample, initial- and final-state radiation,
top, W and tau decays, and jet clustering of the partons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from agc_core.synthetic.physics import (
    B_MASS,
    C_MASS,
    FLAV_B,
    FLAV_C,
    FLAV_LIGHT,
    JET_RADIUS,
    N_RADIATION,
    PDG_E,
    PDG_MU,
    PDG_TAU,
    TAU_LEPTONIC_BR,
    TOP_MASS,
    TOP_WIDTH,
    W_MASS,
    W_WIDTH,
    ProcessTune,
    Radiation,
)
from agc_core.synthetic.vectors import P4, _breit_wigner, _isotropic, _pareto, _wrap, two_body


@dataclass
class _Partons:
    """Quarks and gluons in fixed slots: arrays of shape (n_events, n_slots)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    flavour: np.ndarray
    valid: np.ndarray

    @staticmethod
    def from_p4(p: P4, flavour: np.ndarray, valid: np.ndarray) -> _Partons:
        """Partons from four-momenta."""
        mass = np.sqrt(np.maximum(p.e ** 2 - p.px ** 2 - p.py ** 2 - p.pz ** 2, 0.0))
        return _Partons(p.pt, p.eta, p.phi, mass, flavour, valid)



@dataclass
class _Hard:
    """Output of a hard process: quark slots, charged-lepton slots (one per W), neutrinos."""

    quarks: _Partons
    lep_p4: P4
    lep_pdg: np.ndarray
    lep_charge: np.ndarray
    lep_valid: np.ndarray
    nu_px: np.ndarray
    nu_py: np.ndarray


def _stack(p4s: list[P4]) -> P4:
    """Stack per-event four-vectors (n,) into slots (n, k)."""
    return P4(*(np.stack([getattr(p, c) for p in p4s], axis=1) for c in P4._fields))


def _multiplicity_cdf(rad: Radiation) -> np.ndarray:
    """CDF of the number of radiation partons over 0..N_RADIATION."""
    k = np.arange(N_RADIATION + 1)
    if rad.ratio > 0:
        pmf = rad.ratio ** k
    else:
        log_fact = np.cumsum(np.log(np.maximum(k, 1)))
        pmf = np.exp(k * np.log(max(rad.mean, 1e-300)) - log_fact)
    return np.cumsum(pmf / pmf.sum())


def _multiplicity(rng: np.random.Generator, n: int, rad: Radiation) -> np.ndarray:
    """Number of radiation partons of each of ``n`` events (the first draw of the radiation)."""
    return np.searchsorted(_multiplicity_cdf(rad), rng.random(n), side="right")


def _radiation(rng: np.random.Generator, count: np.ndarray, tune: ProcessTune) -> _Partons:
    """Extra partons (ISR or W+jets jets) in N_RADIATION slots plus one extra-b slot, for
    events with ``count`` radiation partons (:func:`_multiplicity`)."""
    rad = tune.radiation
    n = count.shape[0]
    shape = (n, N_RADIATION)
    pt_min = rad.pt_min * np.where(np.arange(N_RADIATION) < rad.n_hard, rad.hard_factor, 1.0)
    pt = _pareto(rng.random(shape), pt_min[None, :], rad.pt_index)
    eta = rng.normal(0.0, rad.eta_sigma, shape)
    phi = rng.uniform(-np.pi, np.pi, shape)
    if rad.phi_noise > 0:
        golden = np.pi * (3.0 - np.sqrt(5.0))
        phi = _wrap(phi[:, :1] + golden * np.arange(N_RADIATION) + rad.phi_noise * phi / np.pi)
    u = rng.random(shape)
    flavour = np.where(u < rad.frac_b, FLAV_B, np.where(u < rad.frac_b + rad.frac_c, FLAV_C,
                                                          FLAV_LIGHT))
    valid = np.arange(N_RADIATION)[None, :] < count[:, None]
    # extra soft b quark (t-channel spectator, gluon splitting)
    xb_valid = rng.random(n) < tune.extra_b
    xb_pt = _pareto(rng.random(n), tune.extra_b_pt_min, 3.0)
    xb_eta = rng.normal(0.0, tune.extra_b_eta_sigma, n)
    xb_phi = rng.uniform(-np.pi, np.pi, n)
    hard = np.arange(N_RADIATION) < rad.n_hard
    z = rng.standard_normal(n)
    sigma = rad.scale_sigma if rad.scale_sigma_low is None else np.where(
        z > 0, rad.scale_sigma, rad.scale_sigma_low)
    pt = np.where(hard, pt * np.exp(sigma * z)[:, None], pt)
    flavour = np.concatenate([flavour, np.full((n, 1), FLAV_B)], axis=1).astype(np.int8)
    mass = np.where(flavour == FLAV_B, B_MASS, np.where(flavour == FLAV_C, C_MASS, 0.0))
    return _Partons(np.concatenate([pt, xb_pt[:, None]], axis=1),
                    np.concatenate([eta, xb_eta[:, None]], axis=1),
                    np.concatenate([phi, xb_phi[:, None]], axis=1), mass, flavour,
                    np.concatenate([valid, xb_valid[:, None]], axis=1))


def _system(rng: np.random.Generator, mass: np.ndarray, px: np.ndarray, py: np.ndarray,
            rapidity_sigma: float) -> P4:
    """The hard system's four-momentum from its mass, transverse momentum and a rapidity."""
    y = rng.normal(0.0, rapidity_sigma, mass.shape)
    mt = np.sqrt(mass * mass + px * px + py * py)
    return P4(mt * np.cosh(y), px, py, mt * np.sinh(y))


def _pair_mass(rng: np.random.Generator, tune: ProcessTune, m1: np.ndarray, m2: Any
               ) -> np.ndarray:
    """Mass of a two-body hard system from its rest-frame momentum p* ~ Gamma."""
    pstar = tune.pstar_scale * rng.gamma(tune.pstar_shape, size=m1.shape)
    return np.sqrt(pstar ** 2 + m1 ** 2) + np.sqrt(pstar ** 2 + np.square(m2))


def _top_decay(rng: np.random.Generator, top: P4, m_top: np.ndarray) -> tuple[P4, P4]:
    """t -> b W with a Breit-Wigner W mass; returns (b, W)."""
    m_w = _breit_wigner(rng, W_MASS, W_WIDTH, m_top.shape, 50.0, m_top - B_MASS - 1.0)
    return two_body(top, B_MASS, m_w, *_isotropic(rng, m_top.shape))


def _decay_ws(rng: np.random.Generator, tune: ProcessTune, fixed: list[tuple[P4, int]],
              ws: list[tuple[P4, np.ndarray]]) -> _Hard:
    """Decay the W bosons (leptonically or hadronically) and collect the hard process's objects.

    Args:
        rng: random generator of the hard process.
        tune: the sample's knobs (leptonic multiplicity, tau fraction).
        fixed: quarks that are always present, with their flavour.
        ws: W bosons with their charge (+1 / -1 per event).

    Returns:
        Quark slots (fixed quarks, then two per W), one lepton slot per W (two in all).
    """
    n = ws[0][0].e.shape[0]
    probs = np.asarray(tune.n_leptonic[: len(ws) + 1], dtype=np.float64)
    n_lep = np.searchsorted(np.cumsum(probs / probs.sum()), rng.random(n), side="right")
    first = rng.random(n) < 0.5
    if len(ws) == 1:
        leptonic = [n_lep >= 1]
    else:
        leptonic = [(n_lep == 2) | ((n_lep == 1) & first), (n_lep == 2) | ((n_lep == 1) & ~first)]
    q_p4 = [p for p, _ in fixed]
    q_flav = [np.full(n, flav) for _, flav in fixed]
    q_valid = [np.ones(n, dtype=bool) for _ in fixed]
    lep_p4, lep_pdg, lep_charge, lep_valid = [], [], [], []
    nu_px, nu_py = np.zeros(n), np.zeros(n)
    tf = tune.tau_fraction
    for (w, charge), lep in zip(ws, leptonic, strict=True):
        f1, f2 = two_body(w, 0.0, 0.0, *_isotropic(rng, n))
        u_flav = rng.random(n)
        charm = rng.random(n) < 0.5  # W -> cs rather than ud
        q_p4 += [f1, f2]
        q_flav += [np.where(charm, FLAV_C, FLAV_LIGHT), np.full(n, FLAV_LIGHT)]
        q_valid += [~lep, ~lep]
        lep_p4.append(f1)
        lep_pdg.append(np.where(u_flav < tf, PDG_TAU,
                                np.where(u_flav < tf + (1 - tf) / 2, PDG_E, PDG_MU)))
        lep_charge.append(charge)
        lep_valid.append(lep)
        nu_px += np.where(lep, f2.px, 0.0)
        nu_py += np.where(lep, f2.py, 0.0)
    if len(ws) == 1:  # always two lepton slots
        lep_p4.append(lep_p4[0].scaled(0.0))
        lep_pdg.append(np.full(n, PDG_E))
        lep_charge.append(np.ones(n, dtype=np.int64))
        lep_valid.append(np.zeros(n, dtype=bool))
    quarks = _Partons.from_p4(_stack(q_p4), np.stack(q_flav, axis=1).astype(np.int8),
                              np.stack(q_valid, axis=1))
    return _Hard(quarks, _stack(lep_p4), np.stack(lep_pdg, axis=1),
                 np.stack(lep_charge, axis=1), np.stack(lep_valid, axis=1), nu_px, nu_py)


def _hard_ttbar(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
                ry: np.ndarray) -> _Hard:
    """pp -> t tbar, t -> b W."""
    m = _breit_wigner(rng, TOP_MASS, TOP_WIDTH, (2, n), 150.0, 195.0)
    system = _system(rng, _pair_mass(rng, tune, m[0], m[1]), rx, ry, tune.rapidity_sigma)
    t1, t2 = two_body(system, m[0], m[1], *_isotropic(rng, n))
    b1, w1 = _top_decay(rng, t1, m[0])
    b2, w2 = _top_decay(rng, t2, m[1])
    return _decay_ws(rng, tune, [(b1, FLAV_B), (b2, FLAV_B)],
                     [(w1, np.ones(n, np.int64)), (w2, -np.ones(n, np.int64))])


def _single_top(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
                ry: np.ndarray, partner_mass: Any
                ) -> tuple[P4, P4, np.ndarray, np.ndarray]:
    """pp -> t + partner; returns (top, partner, top mass, top charge sign)."""
    m_top = _breit_wigner(rng, TOP_MASS, TOP_WIDTH, n, 150.0, 195.0)
    system = _system(rng, _pair_mass(rng, tune, m_top, partner_mass), rx, ry,
                     tune.rapidity_sigma)
    cos_t, phi = _isotropic(rng, n)
    top, partner = two_body(system, m_top, partner_mass, cos_t, phi)
    sign = np.where(rng.random(n) < 0.6, 1, -1)
    return top, partner, m_top, sign


def _hard_t_chan(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
                 ry: np.ndarray) -> _Hard:
    """t-channel single top: t + light spectator quark (the spectator b is an extra-b slot).

    The spectator quark is forward (|eta| ~ 2-3) with a moderate pt, as in real t-channel
    events; the top recoils against it and the radiation.
    """
    q_pt = tune.spectator_pt * rng.gamma(2.0, 0.5, n)
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    q_eta = side * np.abs(rng.normal(tune.spectator_eta, tune.spectator_eta_sigma, n))
    q_phi = rng.uniform(-np.pi, np.pi, n)
    q = P4(q_pt * np.cosh(q_eta), q_pt * np.cos(q_phi), q_pt * np.sin(q_phi),
           q_pt * np.sinh(q_eta))
    m_top = _breit_wigner(rng, TOP_MASS, TOP_WIDTH, n, 150.0, 195.0)
    top = _system(rng, m_top, rx - q.px, ry - q.py, tune.rapidity_sigma)
    sign = np.where(rng.random(n) < 0.6, 1, -1)
    b, w = _top_decay(rng, top, m_top)
    return _decay_ws(rng, tune, [(b, FLAV_B), (q, FLAV_LIGHT)], [(w, sign)])


def _hard_s_chan(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
                 ry: np.ndarray) -> _Hard:
    """s-channel single top: t + b."""
    top, bbar, m_top, sign = _single_top(rng, n, tune, rx, ry, B_MASS)
    b, w = _top_decay(rng, top, m_top)
    return _decay_ws(rng, tune, [(b, FLAV_B), (bbar, FLAV_B)], [(w, sign)])


def _hard_tw(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
             ry: np.ndarray) -> _Hard:
    """tW single top: t + W."""
    m_w = _breit_wigner(rng, W_MASS, W_WIDTH, n, 50.0, 110.0)
    top, w2, m_top, sign = _single_top(rng, n, tune, rx, ry, m_w)
    b, w1 = _top_decay(rng, top, m_top)
    return _decay_ws(rng, tune, [(b, FLAV_B)], [(w1, sign), (w2, -sign)])


def _hard_wjets(rng: np.random.Generator, n: int, tune: ProcessTune, rx: np.ndarray,
                ry: np.ndarray) -> _Hard:
    """W -> l nu recoiling against the radiation partons."""
    m_w = _breit_wigner(rng, W_MASS, W_WIDTH, n, 50.0, 150.0)
    w = _system(rng, m_w, rx, ry, tune.rapidity_sigma)
    sign = np.where(rng.random(n) < 0.58, 1, -1)
    return _decay_ws(rng, tune, [], [(w, sign)])


_HARD: dict[str, Callable[..., _Hard]] = {
    "ttbar": _hard_ttbar, "t_chan": _hard_t_chan, "s_chan": _hard_s_chan, "tW": _hard_tw,
    "wjets": _hard_wjets,
}




def _fsr(rng: np.random.Generator, partons: _Partons, tune: ProcessTune
         ) -> tuple[_Partons, _Partons]:
    """Resolved final-state radiation: some quarks give a fraction z to a separate gluon jet.

    Returns:
        (the partons after radiating, the gluons in one slot per parton).
    """
    shape = partons.valid.shape
    split = partons.valid & (rng.random(shape) < tune.fsr_prob)
    z = 0.05 + (tune.fsr_z_max - 0.05) * rng.random(shape) ** 1.5
    dr = 0.4 + 1.0 * rng.random(shape)
    angle = rng.uniform(-np.pi, np.pi, shape)
    z = np.where(split, z, 0.0)
    p = partons
    after = _Partons(p.pt * (1.0 - z), p.eta, p.phi, p.mass * (1.0 - z), p.flavour, p.valid)
    gluons = _Partons(p.pt * z, p.eta + dr * np.cos(angle), _wrap(p.phi + dr * np.sin(angle)),
                      np.zeros(shape), np.zeros(shape, np.int8), split)
    return after, gluons


@njit(cache=True)
def _cluster_events(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, flavour: np.ndarray,
                    valid: np.ndarray, radius: float) -> None:
    """In place: per event, partons by decreasing pt absorb the valid ones within ``radius``."""
    n, s = pt.shape
    r2 = radius * radius
    for ev in range(n):
        order = np.argsort(-np.where(valid[ev], pt[ev], -1.0), kind="mergesort")
        for a in range(s):
            i = order[a]
            if not valid[ev, i]:
                break
            px = pt[ev, i] * np.cos(phi[ev, i])
            py = pt[ev, i] * np.sin(phi[ev, i])
            pz = pt[ev, i] * np.sinh(eta[ev, i])
            merged = False
            for b in range(a + 1, s):
                j = order[b]
                if not valid[ev, j]:
                    break
                dphi = (phi[ev, j] - phi[ev, i] + np.pi) % (2.0 * np.pi) - np.pi
                deta = eta[ev, j] - eta[ev, i]
                if deta * deta + dphi * dphi < r2:
                    px += pt[ev, j] * np.cos(phi[ev, j])
                    py += pt[ev, j] * np.sin(phi[ev, j])
                    pz += pt[ev, j] * np.sinh(eta[ev, j])
                    flavour[ev, i] = max(flavour[ev, i], flavour[ev, j])
                    valid[ev, j] = False
                    merged = True
            if merged:
                pt[ev, i] = np.hypot(px, py)
                eta[ev, i] = np.arcsinh(pz / max(pt[ev, i], 1e-9))
                phi[ev, i] = np.arctan2(py, px)


def _cluster(partons: _Partons) -> _Partons:
    """Jet clustering at parton level: partons within JET_RADIUS of a harder one join its jet.

    Partons are visited by decreasing pt; every valid parton closer than JET_RADIUS to the
    current one (in its direction before merging) is added to it (massless momentum sum; the
    jet is a b jet if any member is) and its slot becomes invalid. Slots keep their
    position, so the random numbers of the detector simulation stay attached to the same
    parton across the variation samples.

    Args:
        partons: parton slots, shape (n, s).

    Returns:
        The jets' partons, same shape (the jet mass is simulated later; ``mass`` is kept).
    """
    pt, eta, phi = (np.ascontiguousarray(a, dtype=np.float64).copy()
                    for a in (partons.pt, partons.eta, partons.phi))
    flavour, valid = partons.flavour.astype(np.int8), partons.valid.copy()
    _cluster_events(pt, eta, phi, flavour, valid, JET_RADIUS)
    return _Partons(pt, eta, phi, partons.mass, flavour, valid)


@dataclass
class _VisibleLeptons:
    """Charged leptons after tau decays, in the two W slots: arrays of shape (n_events, 2)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    pdg: np.ndarray
    charge: np.ndarray
    valid: np.ndarray


def _tau_decays(rng: np.random.Generator, hard: _Hard
                ) -> tuple[_VisibleLeptons, _Partons, np.ndarray, np.ndarray]:
    """Decay taus: leptonically (a softer e or mu) or hadronically (a tau jet).

    Returns:
        (visible leptons, tau-jet partons, px and py of the extra neutrinos).
    """
    shape = hard.lep_valid.shape
    is_tau = hard.lep_pdg == PDG_TAU
    u_mode, u_flav = rng.random(shape), rng.random(shape)
    z_lep = rng.beta(2.0, 2.5, shape)
    z_had = rng.uniform(0.3, 1.0, shape)
    leptonic = is_tau & (u_mode < TAU_LEPTONIC_BR)
    hadronic = is_tau & ~leptonic
    pt, eta, phi = hard.lep_p4.pt, hard.lep_p4.eta, hard.lep_p4.phi
    vis = _VisibleLeptons(
        pt * np.where(leptonic, z_lep, 1.0), eta, phi,
        np.where(is_tau, np.where(u_flav < 0.5, PDG_E, PDG_MU), hard.lep_pdg),
        hard.lep_charge, hard.lep_valid & ~hadronic)
    tau_jets = _Partons(pt * z_had, eta, phi, np.zeros(shape), np.zeros(shape, np.int8),
                        hard.lep_valid & hadronic)
    lost = np.where(hard.lep_valid & is_tau, 1.0 - np.where(leptonic, z_lep, z_had), 0.0) * pt
    return vis, tau_jets, (lost * np.cos(phi)).sum(axis=1), (lost * np.sin(phi)).sum(axis=1)
