"""Embedded synthetic dataset: AGC-schema ntuples of the nine samples, generated and cached."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import os
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numba import njit
from tqdm import tqdm

from agc_core.config import AnalysisConfig, DatasetParams, GeneratorFilter, load_analysis_config
from agc_core.errors import ConfigError, InputError
from agc_core.lazyimport import LazyModule

# imported when a file is written or checked in full: a warm run's dataset check needs neither
ak: Any = LazyModule("awkward")
uproot: Any = LazyModule("uproot")

log = logging.getLogger(__name__)

# Bump whenever the generated content changes: cached datasets of another version are rebuilt.
GENERATOR_VERSION = "agc-core-synthetic-7"
FILESET_NAME = "fileset.json"
MANIFEST_NAME = "manifest.json"
BLOCK_EVENTS = 25_000  # events generated (and written as one basket per branch) at a time
COMPRESSIONS = ("zlib", "lz4", "zstd")

# physics constants of the generator (GeV)
TOP_MASS, TOP_WIDTH = 172.5, 1.41
W_MASS, W_WIDTH = 80.38, 2.085
B_MASS, C_MASS = 4.8, 1.5
ELECTRON_MASS, MUON_MASS = 0.000511, 0.10566
TAU_LEPTONIC_BR = 0.352
JET_RADIUS = 0.4  # anti-kt R: partons closer than this in (eta, phi) make one jet
OOF_GAMMA_SHAPE = 6.0  # shape of the Gamma distribution of the out-of-cone momentum
# b-tag scores: "tagged" jets score above this value, the others below (a CSVv2-loose-like
# working point; the tagging rates of the Detector knobs are the rates above it)
TAG_SCORE_SPLIT = 0.5

# fixed slot counts: every random draw has a fixed shape, so the variation samples, which
# share the nominal's random numbers, differ only where a generator knob differs
N_RADIATION = 8
N_PILEUP = 6
N_FAKE = 2
N_TRIG_EXTRA = 3
FLAV_LIGHT, FLAV_C, FLAV_B = 0, 4, 5
PDG_E, PDG_MU, PDG_TAU = 11, 13, 15


# --------------------------------------------------------------------------------------------
# generator knobs


@dataclass(frozen=True)
class Radiation:
    """Extra partons: initial-state radiation, or the matrix-element jets of W+jets.

    Attributes:
        mean: Poisson mean of the number of partons (used when ``ratio`` is 0).
        ratio: if > 0, a staircase multiplicity ``P(n+1) / P(n) = ratio`` instead.
        pt_min: lower end of the Pareto pt spectrum (GeV).
        pt_index: Pareto index of the pt spectrum (density ~ pt^-index).
        eta_sigma: width of the Gaussian pseudorapidity distribution.
        frac_b: fraction of b quarks (gluon splitting, W+bb).
        frac_c: fraction of c quarks (W+c, W+cc).
        phi_noise: if > 0, successive partons are spread in azimuth by the golden angle plus
            a uniform offset of this half-width (multi-jet configurations that fill the
            transverse plane); if 0, azimuths are independent.
        scale_sigma: width of a per-event log-normal factor on the pt of the n_hard
            matrix-element partons (the hard scale of the event: they are harder or softer
            together).
        scale_sigma_low: if not None, the width of that factor below its median (a split
            log-normal): the matrix-element generation cut bounds the hard scale from below
            while the parton luminosity lets it reach far above (a long tail); None:
            ``scale_sigma`` on both sides.
        n_hard: the first n_hard partons (the matrix-element jets; the others are shower
            emissions) have a pt spectrum starting at ``hard_factor * pt_min``.
        hard_factor: see n_hard.
    """

    mean: float
    ratio: float
    pt_min: float
    pt_index: float
    eta_sigma: float
    frac_b: float
    frac_c: float
    phi_noise: float = 0.0
    scale_sigma: float = 0.0
    n_hard: int = 0
    hard_factor: float = 1.0
    scale_sigma_low: float | None = None


@dataclass(frozen=True)
class ProcessTune:
    """Generator knobs of one sample (physics of the synthetic events, not analysis numbers).

    Attributes:
        hard: hard process, one of ``ttbar``, ``tW``, ``t_chan``, ``s_chan``, ``wjets``.
        n_leptonic: probabilities of 0, 1, 2 leptonically decaying W bosons in the event
            (lepton-filtered samples: the AGC normalization implies enriched samples).
        tau_fraction: fraction of leptonic W decays into a tau.
        pstar_scale: momentum scale (GeV) of the hard two-body system in its rest frame.
        pstar_shape: Gamma shape of that momentum.
        rapidity_sigma: width of the hard system's rapidity.
        radiation: extra partons (ISR, W+jets jets).
        extra_b: probability of an extra soft b quark (t-channel spectator, g -> bb).
        extra_b_pt_min: Pareto pt minimum of the extra b quark (GeV).
        extra_b_eta_sigma: its pseudorapidity width.
        fsr_prob: probability that a quark radiates a resolved gluon jet.
        fsr_z_max: largest momentum fraction carried away by that gluon.
        jet_response: overall parton-to-jet response (fragmentation, detector response).
        oof_loss: mean momentum (GeV) carried outside the jet cone by unresolved soft
            wide-angle final-state radiation (exponentially distributed per jet, at most half
            the parton's; proportional to alpha_s: the shower-scale variations change it).
        b_fragmentation: factor on the b-tag efficiency of b jets (B-hadron fragmentation
            changes the displaced tracks the tagger sees).
        spectator_pt: t-channel only: mean pt of the light spectator quark (GeV; Gamma of
            shape 2).
        spectator_eta: t-channel only: mean |pseudorapidity| of the spectator quark (it
            carries a valence quark's momentum fraction and recoils forward).
        spectator_eta_sigma: t-channel only: width of that |pseudorapidity|.
    """

    hard: str
    n_leptonic: tuple[float, float, float]
    tau_fraction: float
    pstar_scale: float
    pstar_shape: float
    rapidity_sigma: float
    radiation: Radiation
    extra_b: float
    extra_b_pt_min: float
    extra_b_eta_sigma: float
    fsr_prob: float
    fsr_z_max: float
    jet_response: float
    oof_loss: float = 8.0
    b_fragmentation: float = 1.0
    spectator_pt: float = 50.0
    spectator_eta: float = 2.3
    spectator_eta_sigma: float = 0.8


@dataclass(frozen=True)
class Detector:
    """Detector response knobs shared by all samples (CMS 2015-like).

    Attributes:
        btag_eff_b: probability that a b jet scores above TAG_SCORE_SPLIT.
        btag_eff_c: same for c jets.
        btag_eff_light: same for light-quark and gluon jets (mistag rate).
        btag_eta_max: tracker acceptance; jets beyond it score 0.
        b_response: extra response factor of b jets (semileptonic decays, neutrinos).
        jet_noise: noise term of the jet pt resolution (GeV).
        jet_stochastic: stochastic term (GeV^0.5).
        jet_constant: constant term.
        jet_mass_frac: median jet mass over pt.
        jet_oof_correction: momentum (GeV) the jet energy correction adds back to jets from
            partons (the mean out-of-cone loss of the nominal tunes).
        jet_store_pt_min: jets below this reconstructed pt are not stored (GeV).
        jet_eta_max: calorimeter acceptance.
        electron_eta_max: electron acceptance.
        muon_eta_max: muon acceptance.
        lepton_eff: identification efficiency of prompt leptons.
        electron_res: relative electron pt resolution.
        muon_res: relative muon pt resolution (at low pt; grows with pt).
        lepton_store_pt_min: leptons below this pt are not stored (GeV).
        nonprompt_b: probability of a (non-isolated) e or mu from a b quark decay.
        nonprompt_c: same for a c quark.
        nonprompt_z: the lepton's momentum fraction of the quark is ``1 - (1 - u)^z``, u
            uniform (mean ``z / (1 + z)``).
        fake_mean: mean number of fake / soft leptons per event.
        fake_slope: exponential slope of their pt above the storage threshold (GeV).
        pileup_mean: mean number of pileup vertices.
        pileup_jets_per_vertex: mean pileup jets per vertex.
        pileup_pt_min: lowest pileup jet pt (GeV).
        pileup_pt_slope: exponential slope of pileup jet pt (GeV).
        met_sigma0: constant term of the MET resolution per component (GeV).
        met_sigma_ht: term proportional to sqrt(scalar sum of jet pt) (GeV^0.5).
    """

    btag_eff_b: float = 0.77
    btag_eff_c: float = 0.30
    btag_eff_light: float = 0.08
    btag_eta_max: float = 2.4
    b_response: float = 0.98
    jet_noise: float = 3.0
    jet_stochastic: float = 1.0
    jet_constant: float = 0.04
    jet_mass_frac: float = 0.1
    jet_oof_correction: float = 8.0
    jet_store_pt_min: float = 15.0
    jet_eta_max: float = 4.7
    electron_eta_max: float = 2.5
    muon_eta_max: float = 2.4
    lepton_eff: float = 0.9
    electron_res: float = 0.02
    muon_res: float = 0.012
    lepton_store_pt_min: float = 5.0
    nonprompt_b: float = 0.37
    nonprompt_c: float = 0.1
    nonprompt_z: float = 0.4
    fake_mean: float = 0.2
    fake_slope: float = 4.0
    pileup_mean: float = 11.0
    pileup_jets_per_vertex: float = 0.12
    pileup_pt_min: float = 10.0
    pileup_pt_slope: float = 5.0
    met_sigma0: float = 8.0
    met_sigma_ht: float = 0.5


DETECTOR = Detector()

_TTBAR = ProcessTune(
    hard="ttbar",
    n_leptonic=(0.24, 0.61, 0.15),
    tau_fraction=1 / 3,
    pstar_scale=85.0,
    pstar_shape=1.8,
    rapidity_sigma=0.9,
    # initial-state radiation above 30 GeV (fewer jets at the 25 GeV threshold, so that the
    # jet energy scale moves 4j1b events as CMS's do)
    radiation=Radiation(mean=1.4, ratio=0.0, pt_min=30.0, pt_index=3.1, eta_sigma=1.8,
                        frac_b=0.02, frac_c=0.04),
    extra_b=0.0,
    extra_b_pt_min=15.0,
    extra_b_eta_sigma=1.5,
    fsr_prob=0.05,
    fsr_z_max=0.3,
    jet_response=1.0,
)

# shower-scale variations (Pythia8 renormalization scale of the shower x2 / x0.5): alpha_s of
# the emissions changes by SHOWER_ALPHA_S[variation]; the final-state rates (resolved FSR jets,
# out-of-cone radiation) scale with it, the initial-state multiplicity with it to the power
# ISR_ALPHA_S_POWER (the hard ISR jets are mostly matrix-element emissions, less sensitive)
SHOWER_ALPHA_S = {"scaleup": 0.8, "scaledown": 1.3}
ISR_ALPHA_S_POWER = 0.0
ME_ISR_INDEX, ME_ISR_MEAN = 0.92, 1.08


def _ttbar_variation(variation: str) -> ProcessTune:
    """The ttbar tune of one variation sample (same hard events, changed knobs)."""
    t = _TTBAR
    if variation == "nominal":
        return t
    if variation in SHOWER_ALPHA_S:
        f = SHOWER_ALPHA_S[variation]
        rad = dataclasses.replace(t.radiation, mean=t.radiation.mean * f ** ISR_ALPHA_S_POWER)
        return dataclasses.replace(t, radiation=rad, fsr_prob=min(1.0, t.fsr_prob * f),
                                   oof_loss=t.oof_loss * f)
    if variation == "ME_var":  # another matrix-element generator (NLO with its own hardest
        # emission): more extra jets, with a harder spectrum
        rad = dataclasses.replace(t.radiation, pt_index=t.radiation.pt_index * ME_ISR_INDEX,
                                  mean=t.radiation.mean * ME_ISR_MEAN)
        return dataclasses.replace(t, radiation=rad)
    if variation == "PS_var":  # another parton shower and hadronization model: more
        # out-of-cone FSR, lower jet response, softer B-hadron fragmentation
        return dataclasses.replace(t, fsr_prob=t.fsr_prob * 1.3,
                                   jet_response=t.jet_response * 0.98, b_fragmentation=0.96)
    raise ConfigError(f"synthetic dataset: no generator tune for ttbar variation '{variation}'")


TUNES: dict[str, ProcessTune] = {
    "ttbar": _TTBAR,
    # single top: inclusive top decays (as the AGC's samples); the events with a hadronic top
    # are selected through a non-prompt lepton from a b decay and give the trijet-mass peak
    "single_top_s_chan": ProcessTune(
        hard="s_chan", n_leptonic=(0.55, 0.45, 0.0), tau_fraction=1 / 3,
        pstar_scale=55.0, pstar_shape=1.8, rapidity_sigma=0.9,
        radiation=Radiation(mean=1.0, ratio=0.0, pt_min=25.0, pt_index=3.0, eta_sigma=1.8,
                            frac_b=0.02, frac_c=0.04),
        extra_b=0.0, extra_b_pt_min=15.0, extra_b_eta_sigma=1.5,
        fsr_prob=0.2, fsr_z_max=0.4, jet_response=1.0),
    "single_top_t_chan": ProcessTune(
        hard="t_chan", n_leptonic=(0.676, 0.324, 0.0), tau_fraction=1 / 3,
        pstar_scale=110.0, pstar_shape=1.8, rapidity_sigma=1.0,
        # ISR spectrum a little steeper (index 2.78): a softer 4j1b leading jet
        radiation=Radiation(mean=1.2, ratio=0.0, pt_min=25.0, pt_index=2.78, eta_sigma=1.8,
                            frac_b=0.02, frac_c=0.04),
        extra_b=1.0, extra_b_pt_min=17.0, extra_b_eta_sigma=1.6,
        # the light spectator quark recoils forward, |eta| ~ 2.6 as CMS's forward jet: it
        # enters fewer trijets, so fewer low-mass 4j2b candidates and a longer m_bjj tail
        fsr_prob=0.2, fsr_z_max=0.4, jet_response=1.0, spectator_pt=45.0, spectator_eta=2.6),
    "single_top_tW": ProcessTune(
        hard="tW", n_leptonic=(0.21, 0.69, 0.10), tau_fraction=1 / 3,
        # a softer, narrower t-W recoil than ttbar's (b g -> t W near threshold): fewer
        # hard leading jets in 4j1b
        pstar_scale=49.0, pstar_shape=2.6, rapidity_sigma=0.9,
        # ISR above 36 GeV with a steeper spectrum: jets 2-4 harder without a hard tail that
        # would make the leading jet
        radiation=Radiation(mean=1.1, ratio=0.0, pt_min=36.0, pt_index=3.4, eta_sigma=1.8,
                            frac_b=0.02, frac_c=0.04),
        # the second b of tW: rarer but hard and central (the g g -> t W b configurations
        # beside the top-pair-like region, a b quark with a top-decay-like pt), so that the
        # 4j2b events are harder than the 4j1b ones as CMS's
        extra_b=0.33, extra_b_pt_min=60.0, extra_b_eta_sigma=1.4,
        fsr_prob=0.29, fsr_z_max=0.4, jet_response=1.0),
    "wjets": ProcessTune(
        hard="wjets", n_leptonic=(0.0, 1.0, 0.0), tau_fraction=1 / 3,
        pstar_scale=0.0, pstar_shape=1.0, rapidity_sigma=1.8,
        # two matrix-element jets that share the event's hard scale, then a steep spectrum
        # of shower jets near threshold; the hard scale is a split log-normal (0.5 below its
        # median: the generation cut, 0.7 above: the long HT tail, CMS's 4j1b HT > 550 GeV)
        # and the shower jets start at 25 GeV: fewer W + 4 soft jets events just above the
        # 4-jet threshold
        radiation=Radiation(mean=0.0, ratio=0.475, pt_min=25.0, pt_index=4.2, eta_sigma=1.8,
                            frac_b=0.06, frac_c=0.10, scale_sigma=0.7, n_hard=2,
                            hard_factor=1.36, scale_sigma_low=0.5),
        extra_b=0.0, extra_b_pt_min=15.0, extra_b_eta_sigma=1.5,
        fsr_prob=0.15, fsr_z_max=0.4, jet_response=1.0),
}


def sample_tune(process: str, variation: str) -> ProcessTune:
    """The generator knobs of one sample.

    Args:
        process: process name (a key of ``cfg.xsec_pb``).
        variation: sample variation (``nominal``, or a ttbar variation).

    Returns:
        The tune.

    Raises:
        ConfigError: no tune exists for this sample.
    """
    if process == "ttbar":
        return _ttbar_variation(variation)
    if process not in TUNES or variation != "nominal":
        raise ConfigError(f"synthetic dataset: no generator tune for sample "
                          f"{process}/{variation}")
    return TUNES[process]


# --------------------------------------------------------------------------------------------
# four-vectors on arrays of any shape


class P4(NamedTuple):
    """Four-momenta (GeV) as arrays of equal shape."""

    e: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        """Transverse momentum."""
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity (0 where pt is 0)."""
        pt = self.pt
        return np.arcsinh(self.pz / np.where(pt > 0, pt, 1.0)) * (pt > 0)

    @property
    def phi(self) -> np.ndarray:
        """Azimuth in [-pi, pi]."""
        return np.arctan2(self.py, self.px)

    def scaled(self, factor: np.ndarray) -> P4:
        """Every component times ``factor``."""
        return P4(self.e * factor, self.px * factor, self.py * factor, self.pz * factor)


def boost(p: P4, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> P4:
    """Lorentz-boost ``p`` by the velocity (bx, by, bz)."""
    b2 = bx * bx + by * by + bz * bz
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-12))
    bp = bx * p.px + by * p.py + bz * p.pz
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    k = g2 * bp + gamma * p.e
    return P4(gamma * (p.e + bp), p.px + k * bx, p.py + k * by, p.pz + k * bz)


def two_body(parent: P4, m1: Any, m2: Any, cos_t: np.ndarray, phi: np.ndarray
             ) -> tuple[P4, P4]:
    """Decay ``parent`` into two daughters of masses m1, m2 at rest-frame angles (cos_t, phi).

    Returns:
        The daughters' lab-frame four-momenta.
    """
    m2p = np.maximum(parent.e ** 2 - parent.px ** 2 - parent.py ** 2 - parent.pz ** 2, 0.0)
    mp = np.sqrt(m2p)
    m1 = np.broadcast_to(np.asarray(m1, dtype=np.float64), mp.shape)
    m2 = np.broadcast_to(np.asarray(m2, dtype=np.float64), mp.shape)
    q2 = (m2p - (m1 + m2) ** 2) * (m2p - (m1 - m2) ** 2)
    q = np.sqrt(np.maximum(q2, 0.0)) / (2.0 * np.where(mp > 0, mp, 1.0))
    sin_t = np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0))
    nx, ny, nz = sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t
    d1 = P4(np.sqrt(q * q + m1 * m1), q * nx, q * ny, q * nz)
    d2 = P4(np.sqrt(q * q + m2 * m2), -q * nx, -q * ny, -q * nz)
    e = np.where(parent.e > 0, parent.e, 1.0)
    bx, by, bz = parent.px / e, parent.py / e, parent.pz / e
    return boost(d1, bx, by, bz), boost(d2, bx, by, bz)


def _isotropic(rng: np.random.Generator, shape: Any) -> tuple[np.ndarray, np.ndarray]:
    """Uniform directions: (cos theta, phi)."""
    return rng.uniform(-1.0, 1.0, shape), rng.uniform(-np.pi, np.pi, shape)


def _breit_wigner(rng: np.random.Generator, m0: float, width: float, shape: Any,
                  lo: Any, hi: Any) -> np.ndarray:
    """Masses from a Breit-Wigner (Cauchy) truncated to [lo, hi], by inverse CDF."""
    a = np.arctan(2.0 * (np.asarray(lo) - m0) / width)
    b = np.arctan(2.0 * (np.asarray(hi) - m0) / width)
    return m0 + 0.5 * width * np.tan(a + rng.random(shape) * (b - a))


def _pareto(u: np.ndarray, pt_min: float, index: float, cap: float = 3000.0) -> np.ndarray:
    """Pareto (power-law) values from uniforms: density ~ x^-index above pt_min."""
    return np.minimum(pt_min * (1.0 - u) ** (-1.0 / (index - 1.0)), cap)


def _wrap(phi: np.ndarray) -> np.ndarray:
    """Azimuth wrapped into [-pi, pi)."""
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


# --------------------------------------------------------------------------------------------
# particle-level containers


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


def _take(obj: Any, keep: np.ndarray) -> Any:
    """The events ``keep`` (a boolean mask or indices on the first axis) of per-event arrays,
    of a P4 or of a dataclass of them (parton slots, a hard process's output, visible
    leptons)."""
    if keep.dtype == np.bool_:
        keep = np.flatnonzero(keep)
    if isinstance(obj, np.ndarray):
        return obj.take(keep, axis=0)
    if isinstance(obj, P4):
        return P4(*(a.take(keep, axis=0) for a in obj))
    return type(obj)(*(_take(getattr(obj, f.name), keep) for f in dataclasses.fields(obj)))


def _lepton_filter(vis: _VisibleLeptons, quarks: list[_Partons], gen_filter: GeneratorFilter
                   ) -> np.ndarray:
    """Generator filter, lepton stage: an event may give the one selected lepton.

    True where a visible prompt lepton (from a W, or a tau's leptonic decay) is above
    ``lepton_pt_min`` within ``lepton_eta_max``, or where a b or c parton above
    ``lepton_pt_min`` may give a non-prompt lepton.
    """
    prompt = (vis.valid & (vis.pt > gen_filter.lepton_pt_min)
              & (np.abs(vis.eta) < gen_filter.lepton_eta_max)).any(axis=1)
    for q in quarks:
        prompt |= (q.valid & (q.flavour != FLAV_LIGHT)
                   & (q.pt > gen_filter.lepton_pt_min)).any(axis=1)
    return prompt


def _jet_filter(blocks: list[_Partons], gen_filter: GeneratorFilter) -> np.ndarray:
    """Generator filter, parton stage: at least ``min_jets`` jet candidates (quarks, radiation
    partons and their FSR gluons, tau jets, pileup jets) above ``jet_pt_min``, before
    clustering (which can only merge them)."""
    return sum(((b.valid & (b.pt > gen_filter.jet_pt_min)).sum(axis=1) for b in blocks),
               start=np.zeros(blocks[0].valid.shape[0], dtype=np.int64)) >= gen_filter.min_jets


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


# --------------------------------------------------------------------------------------------
# detector level: flat arrays of the valid slots, with their event index


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


# --------------------------------------------------------------------------------------------
# event batches in the AGC schema


@dataclass(frozen=True)
class EventBatch:
    """Generated events in the AGC ntuple schema, as flat arrays.

    Attributes:
        n_events: number of events.
        counts: ``{collection: int32 per-event multiplicity}`` (jet, electron, muon, trigobj).
        jagged: ``{collection: {property: flat array}}``, float32 (``ch`` int32).
        scalars: ``{branch: per-event array}`` (met_*, PV_*).
        n_generated: events generated for this batch (more than ``n_events`` where a
            generator filter dropped some; the default is ``n_events``).
        filter_pass: where the filter was only flagged (``flag_filter``): per event, whether
            it passes the generator filter; else None.
        generated_index: where a generator filter dropped events: each event's index among
            the ``n_generated``; else None.
    """

    n_events: int
    counts: dict[str, np.ndarray]
    jagged: dict[str, dict[str, np.ndarray]]
    scalars: dict[str, np.ndarray]
    n_generated: int = -1
    filter_pass: np.ndarray | None = None
    generated_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n_generated < 0:
            object.__setattr__(self, "n_generated", self.n_events)

    def head(self, k: int) -> EventBatch:
        """The first ``k`` events; a filtered batch then stands for the events generated up to
        its k-th (``generated_index``)."""
        counts = {c: v[:k] for c, v in self.counts.items()}
        jagged = {c: {prop: a[: int(counts[c].sum())] for prop, a in props.items()}
                  for c, props in self.jagged.items()}
        n_gen = (int(self.generated_index[k - 1]) + 1 if self.generated_index is not None
                 and k > 0 else min(k, self.n_generated))
        return EventBatch(k, counts, jagged, {b: a[:k] for b, a in self.scalars.items()},
                          n_gen, None if self.filter_pass is None else self.filter_pass[:k],
                          None if self.generated_index is None else self.generated_index[:k])

    def branches(self) -> dict[str, np.ndarray]:
        """Every branch as the reader sees it: counters, flat jagged contents, scalars."""
        out: dict[str, np.ndarray] = {}
        for name, counts in self.counts.items():
            out[f"number{name}"] = counts
            for prop, values in self.jagged[name].items():
                out[f"{name}_{prop}"] = values
        out.update(self.scalars)
        return out

    def offsets(self, collection: str) -> np.ndarray:
        """int64 offsets (length n_events + 1) of a collection."""
        off = np.zeros(self.n_events + 1, dtype=np.int64)
        np.cumsum(self.counts[collection], out=off[1:])
        return off

    def to_awkward(self) -> dict[str, Any]:
        """The tree content for uproot: one record array per collection, plus scalars."""
        data: dict[str, Any] = {}
        for name, counts in self.counts.items():
            data[name] = ak.zip({prop: ak.unflatten(values, counts)
                                 for prop, values in self.jagged[name].items()})
        data.update(self.scalars)
        return data


def _kinematics(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: Any
                ) -> dict[str, np.ndarray]:
    """Consistent float32 kinematics: px, py, pz from the stored pt, eta, phi; E >= |p|."""
    pt32, eta32, phi32 = (np.asarray(x, dtype=np.float32) for x in (pt, eta, phi))
    pt64, eta64, phi64 = (x.astype(np.float64) for x in (pt32, eta32, phi32))
    p = pt64 * np.cosh(eta64)
    e32 = np.sqrt(p * p + np.square(np.asarray(mass, dtype=np.float64))).astype(np.float32)
    e32 = np.where(e32.astype(np.float64) < p, np.nextafter(e32, np.float32(np.inf)), e32)
    return {
        "pt": pt32, "eta": eta32, "phi": phi32, "e": e32,
        "px": (pt64 * np.cos(phi64)).astype(np.float32),
        "py": (pt64 * np.sin(phi64)).astype(np.float32),
        "pz": (pt64 * np.sinh(eta64)).astype(np.float32),
    }


_COMPONENTS = ("radiation", "hard", "fsr", "tau", "pileup", "jets", "leptons", "event")


def _generators(seed: int, stream: int, file_idx: int, block: int
                ) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per generator component, keyed on all four numbers."""
    return {name: np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([seed, stream, file_idx, block, i])))
        for i, name in enumerate(_COMPONENTS)}


def generate_events(tune: ProcessTune, n_events: int, seed: int, stream: int, file_idx: int,
                    block: int = 0, det: Detector = DETECTOR,
                    gen_filter: GeneratorFilter | None = None, flag_filter: bool = False
                    ) -> EventBatch:
    """Generate one batch of events of one sample, fully vectorized.

    Args:
        tune: the sample's generator knobs (:func:`sample_tune`).
        n_events: number of events.
        seed: dataset seed.
        stream: random stream of the sample (the nominal sample's index in ``cfg.samples``;
            variation samples share their nominal's stream: the same generated events,
            simulated with changed knobs).
        file_idx: file index within the sample.
        block: block index within the file.
        det: detector knobs.
        gen_filter: a generator-level filter: after the radiation multiplicity (at least
            ``min_partons``) and after the hard process (:func:`_lepton_filter`), the events
            that fail it are dropped before anything else is generated for them.
        flag_filter: with ``gen_filter``, keep every event and flag the ones that pass in
            ``filter_pass`` instead (to check that the filter drops no selected event).

    Returns:
        The events in the AGC schema (``n_generated`` = ``n_events``; with a filter, the
        passing events' ``generated_index``).
    """
    rng = _generators(seed, stream, file_idx, block)
    n = n_events
    # particle level; a generator filter drops events as early as it can tell
    count = _multiplicity(rng["radiation"], n, tune.radiation)
    passed = index = None
    if gen_filter is not None:
        passed = count >= gen_filter.min_partons
        if not flag_filter:
            index = np.flatnonzero(passed)
            count = count[index]
            n = count.shape[0]
    rad = _radiation(rng["radiation"], count, tune)
    kt = rng["radiation"].normal(0.0, 5.0, (2, n))
    rx = kt[0] - np.where(rad.valid, rad.pt * np.cos(rad.phi), 0.0).sum(axis=1)
    ry = kt[1] - np.where(rad.valid, rad.pt * np.sin(rad.phi), 0.0).sum(axis=1)
    hard = _HARD[tune.hard](rng["hard"], n, tune, rx, ry)
    vis, tau_jets, tau_nu_px, tau_nu_py = _tau_decays(rng["tau"], hard)
    if gen_filter is not None:
        keep = _lepton_filter(vis, [hard.quarks, rad], gen_filter)
        if flag_filter:
            passed &= keep
        else:
            rad, hard, vis, tau_jets, tau_nu_px, tau_nu_py, index = (
                _take(x, keep) for x in (rad, hard, vis, tau_jets, tau_nu_px, tau_nu_py,
                                         index))
            n = int(keep.sum())
    ev_rng = rng["event"]
    npv = 1 + ev_rng.poisson(det.pileup_mean, n)
    pileup = _pileup_jets(rng["pileup"], npv, det)
    (quarks, gluons), (rad, rad_gluons) = (_fsr(rng["fsr"], p, tune) for p in (hard.quarks, rad))
    if gen_filter is not None:
        keep = _jet_filter([quarks, rad, gluons, rad_gluons, tau_jets, pileup], gen_filter)
        if flag_filter:
            passed &= keep
        else:
            quarks, rad, gluons, rad_gluons, tau_jets, pileup, vis, hard, index = (
                _take(x, keep) for x in (quarks, rad, gluons, rad_gluons, tau_jets, pileup,
                                         vis, hard, index))
            tau_nu_px, tau_nu_py, npv = tau_nu_px[keep], tau_nu_py[keep], npv[keep]
            n = int(keep.sum())
    # detector level
    r = tune.jet_response
    parts = [quarks, rad, gluons, rad_gluons]
    merged = _Partons(*(np.concatenate([getattr(p, f.name) for p in parts], axis=1)
                        for f in dataclasses.fields(_Partons)))
    partons = _cluster(merged)
    blocks = [(partons, r, tune.oof_loss), (tau_jets, r, 0.0), (pileup, 1.0, 0.0)]
    ev, jets = _reco_jets(rng["jets"], blocks, tune.b_fragmentation, det)
    counts: dict[str, np.ndarray] = {}
    jagged: dict[str, dict[str, np.ndarray]] = {}
    ht = np.bincount(ev, weights=jets["pt"], minlength=n)  # for the MET resolution
    counts["jet"], jets = _sort_events(ev, jets["pt"], n, jets)
    jagged["jet"] = {**_kinematics(jets["pt"], jets["eta"], jets["phi"], jets["mass"]),
                     "mass": jets["mass"].astype(np.float32),
                     "btag": jets["btag"].astype(np.float32),
                     "ch": jets["ch"].astype(np.int32)}
    ev, leptons = _reco_leptons(rng["leptons"], vis, [quarks, rad], det)
    sorted_leptons = {}
    for name, code, mass, iso_name in (("electron", PDG_E, ELECTRON_MASS, "iso"),
                                       ("muon", PDG_MU, MUON_MASS, "pfreliso04all")):
        is_flav = leptons["pdg"] == code
        counts[name], lep = _sort_events(ev[is_flav], leptons["pt"][is_flav], n,
                                         {k: a[is_flav] for k, a in leptons.items()})
        sorted_leptons[name] = lep
        jagged[name] = {**_kinematics(lep["pt"], lep["eta"], lep["phi"], mass),
                        "ch": lep["ch"].astype(np.int32),
                        iso_name: lep["iso"].astype(np.float32)}
    counts["trigobj"], jagged["trigobj"] = _trigger_objects(ev_rng, n, [
        (counts["electron"], sorted_leptons["electron"], 1, 20.0),
        (counts["muon"], sorted_leptons["muon"], 1, 20.0),
        (counts["jet"], jets, 2, 30.0),
    ])
    scalars = _event_scalars(ev_rng, hard.nu_px + tau_nu_px, hard.nu_py + tau_nu_py, ht, npv,
                             det)
    return EventBatch(n, counts, jagged, scalars, n_events,
                      passed if flag_filter else None, index)


def _event_scalars(rng: np.random.Generator, nu_px: np.ndarray, nu_py: np.ndarray,
                   ht: np.ndarray, npv: np.ndarray, det: Detector) -> dict[str, np.ndarray]:
    """Per-event branches: missing transverse momentum and primary vertices."""
    n = npv.shape[0]
    sigma = det.met_sigma0 + det.met_sigma_ht * np.sqrt(ht)
    g = rng.standard_normal((2, n))
    met_px = nu_px + sigma * g[0]
    met_py = nu_py + sigma * g[1]
    met_pt = np.hypot(met_px, met_py)
    good = npv - rng.binomial(npv - 1, 0.05)
    return {
        "met_pt": met_pt.astype(np.float32),
        "met_phi": np.arctan2(met_py, met_px).astype(np.float32),
        "met_e": met_pt.astype(np.float32),
        "met_px": met_px.astype(np.float32),
        "met_py": met_py.astype(np.float32),
        "PV_npvs": npv.astype(np.int32),
        "PV_npvsGood": good.astype(np.int32),
        "PV_x": rng.normal(0.0695, 0.0015, n).astype(np.float32),
        "PV_y": rng.normal(0.0987, 0.0015, n).astype(np.float32),
        "PV_z": rng.normal(0.0, 4.5, n).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# files, manifest, cache


def default_data_dir() -> Path:
    """Where the embedded dataset is cached: ``$AGC_CORE_DATA`` or ``~/.cache/agc-core/dataset``."""
    env = os.environ.get("AGC_CORE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "agc-core" / "dataset"


def _fast_zlib(level: int) -> Any:
    """uproot's ZLIB compression through libdeflate (uproot's ``ZLIB.library = "deflate"``;
    the ``deflate`` package is one of our dependencies): the same ROOT ``ZL`` blocks of zlib
    streams any reader decompresses, 3x the standard library's speed at level 1 here and
    deterministic, for files ~5 % larger (the standard library compresses uproot's
    big-endian columns a little better)."""
    zlib = uproot.ZLIB(level)
    zlib.library = "deflate"
    return zlib


def _compression(name: str, level: int) -> Any:
    """The uproot compression object for a name and level."""
    table = {"zlib": _fast_zlib, "lz4": uproot.LZ4, "zstd": uproot.ZSTD}
    if name not in table:
        raise ConfigError(f"synthetic dataset: unknown compression '{name}' "
                          f"(choose from {', '.join(COMPRESSIONS)})")
    return table[name](level)


def _resolve_params(cfg: AnalysisConfig, events_per_file: int | None,
                    files_per_sample: int | None, seed: int | None, compression: str | None,
                    compression_level: int | None) -> DatasetParams:
    """Fill unset parameters from ``cfg.dataset`` and validate them."""
    d = cfg.dataset
    comp = (compression or d.compression).lower()
    if compression_level is None:
        compression_level = d.compression_level
    params = DatasetParams(
        events_per_file=d.events_per_file if events_per_file is None else int(events_per_file),
        files_per_sample=(d.files_per_sample if files_per_sample is None
                          else int(files_per_sample)),
        seed=d.seed if seed is None else int(seed),
        compression=comp,
        compression_level=int(compression_level),
        tree=d.tree,
        generator_filter=d.generator_filter,
    )
    _compression(params.compression, params.compression_level)
    if params.events_per_file < 1 or params.files_per_sample < 1 or params.seed < 0:
        raise ConfigError("synthetic dataset: events per file and files per sample must be "
                          f">= 1 and the seed >= 0, got {params}")
    return params


def _file_key(params: DatasetParams, process: str, variation: str, file_idx: int
              ) -> dict[str, Any]:
    """What a single file's content depends on (stored in the manifest)."""
    key = {"generator": GENERATOR_VERSION, "process": process, "variation": variation,
           "file_idx": file_idx, "events": params.events_per_file, "seed": params.seed,
           "compression": params.compression, "level": params.compression_level,
           "tree": params.tree}
    gen_filter = sample_filter(params.generator_filter, process)
    if gen_filter is not None:
        key["filter"] = dataclasses.asdict(gen_filter)
    return key


def tune_digest(process: str, variation: str, det: Detector = DETECTOR) -> str:
    """Digest of the generator knobs of one sample (its tune and the detector), kept in each
    file's manifest entry: a cached file made with other knobs is regenerated even where the
    generator version was not bumped (the version still covers changes of the code)."""
    knobs = {"tune": dataclasses.asdict(sample_tune(process, variation)),
             "detector": dataclasses.asdict(det)}
    text = json.dumps(knobs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sample_filter(gen_filter: GeneratorFilter | None, process: str) -> GeneratorFilter | None:
    """The generator filter of a process's samples (None: not filtered)."""
    return gen_filter if gen_filter is not None and gen_filter.process == process else None


def _sample_batches(tune: ProcessTune, n_events: int, seed: int, stream: int, file_idx: int,
                    gen_filter: GeneratorFilter | None, flag_filter: bool = False
                    ) -> Iterator[EventBatch]:
    """The batches of one file of ``n_events`` events.

    Without a filter (or with ``flag_filter``: every event, flagged), blocks of BLOCK_EVENTS
    events (``multiplier`` times as many with ``flag_filter``). With a generator filter,
    blocks of ``multiplier`` x BLOCK_EVENTS generated events, filtered, until ``n_events``
    have passed (the last block cut after the n-th): as a filtered production, the file holds
    the events requested and its batches' ``n_generated`` add up to the events generated
    for them (about ``n_events`` / the filter's efficiency).

    Raises:
        ConfigError: the filter keeps no event of 20 blocks in a row.
    """
    if gen_filter is None or flag_filter:
        mult = gen_filter.multiplier if gen_filter is not None else 1
        total = n_events * mult
        for block, start in enumerate(range(0, total, BLOCK_EVENTS * mult)):
            yield generate_events(tune, min(BLOCK_EVENTS * mult, total - start), seed, stream,
                                  file_idx, block, gen_filter=gen_filter,
                                  flag_filter=flag_filter)
        return
    written = empty = 0
    for block in itertools.count():
        if written >= n_events:
            return
        batch = generate_events(tune, BLOCK_EVENTS * gen_filter.multiplier, seed, stream,
                                file_idx, block, gen_filter=gen_filter)
        empty = empty + 1 if batch.n_events == 0 else 0
        if empty >= 20:
            raise ConfigError(f"synthetic dataset: the generator filter of "
                              f"{gen_filter.process} kept no event in 20 blocks of "
                              f"{BLOCK_EVENTS * gen_filter.multiplier} ({gen_filter})")
        if written + batch.n_events > n_events:
            batch = batch.head(n_events - written)
        written += batch.n_events
        if batch.n_events:
            yield batch


def _uuid_function(key: dict[str, Any]) -> Callable[[], uuid.UUID]:
    """Deterministic UUIDs for one file (uproot asks for one per file and directory).

    The JER draws are keyed on a file's ROOT UUID (:func:`agc_core.planning.file_identity`),
    so a regenerated dataset must get the same UUIDs to give the same ``pt_res_up``
    histograms: they are derived from what the file's content depends on.
    """
    seed = json.dumps(key, sort_keys=True).encode()
    counter = itertools.count()

    def make() -> uuid.UUID:
        n = next(counter).to_bytes(8, "little")
        return uuid.UUID(bytes=hashlib.blake2b(seed + n, digest_size=16).digest(), version=4)

    return make


#: the creation / modification time written into every synthetic file (uproot stamps the wall
#: clock otherwise), so that a file's bytes depend only on its key
WRITE_TIME = datetime.datetime(2015, 1, 1)
#: the uproot modules that read the clock while writing a file
_CLOCK_MODULES = ("uproot.writing._cascade", "uproot.writing._cascadetree",
                  "uproot.writing.writable")


class _FixedClock(datetime.datetime):
    """``datetime.datetime`` whose ``now()`` is :data:`WRITE_TIME`."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime.datetime:
        return WRITE_TIME


@contextlib.contextmanager
def _fixed_write_time() -> Iterator[None]:
    """Make uproot stamp :data:`WRITE_TIME` (TDatime of file header, directory, keys, baskets)
    while writing, so the same key gives the same bytes (and SHA-256) in any process."""
    shim = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime)
                                    if not k.startswith("__")})
    shim.datetime = _FixedClock
    import importlib

    modules = [importlib.import_module(name) for name in _CLOCK_MODULES]
    saved = [(m, m.datetime) for m in modules if hasattr(m, "datetime")]
    try:
        for m, _ in saved:
            m.datetime = shim  # type: ignore[attr-defined]
        yield
    finally:
        for m, orig in saved:
            m.datetime = orig  # type: ignore[attr-defined]


def _stream_id(cfg: AnalysisConfig, process: str) -> int:
    """Random stream of a process: the index of its nominal sample in ``cfg.samples``."""
    return cfg.samples.index((process, "nominal"))


def _tree_title(key: dict[str, Any]) -> str:
    """Tree title recording what the file's content depends on (checked on reuse)."""
    return "agc-core synthetic " + json.dumps(key, sort_keys=True, separators=(",", ":"))


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_sample_file(path: Path, process: str, variation: str, file_idx: int,
                      params: DatasetParams, cfg: AnalysisConfig) -> dict[str, Any]:
    """Generate one file of one sample and write it atomically (temporary folder + rename).

    The bytes depend only on the file's key (fixed UUIDs and write time), not on the process
    or the time that writes it.

    Args:
        path: destination ROOT file.
        process: process name.
        variation: sample variation.
        file_idx: file index within the sample (part of the random seed).
        params: dataset parameters.
        cfg: analysis configuration (sample list, tree name).

    Returns:
        The file's manifest entry (key, size, sha256, entries; generated: the events
        generated, more than the entries for a process with a generator filter).
    """
    tune = sample_tune(process, variation)
    stream = _stream_id(cfg, process)
    key = _file_key(params, process, variation, file_idx)
    # a private folder, the final name: uproot writes the file's name into it
    tmp_dir = path.parent / f".tmp-{os.getpid()}"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / path.name
    try:
        with _fixed_write_time(), uproot.recreate(
                tmp, compression=_compression(params.compression, params.compression_level),
                uuid_function=_uuid_function(key)) as f:
            tree = None
            entries = generated = 0
            gen_filter = sample_filter(params.generator_filter, process)
            for batch in _sample_batches(tune, params.events_per_file, params.seed, stream,
                                         file_idx, gen_filter):
                entries += batch.n_events
                generated += batch.n_generated
                data = batch.to_awkward()
                if tree is None:
                    types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content)
                             for k, v in data.items()}
                    tree = f.mktree(params.tree, types, title=_tree_title(key),
                                    counter_name=lambda counted: f"number{counted}",
                                    field_name=lambda outer, inner: f"{outer}_{inner}")
                tree.extend(data)
        entry = {"key": key, "tune": tune_digest(process, variation),
                 "size": tmp.stat().st_size, "sha256": _sha256(tmp), "entries": entries,
                 "generated": generated}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            tmp_dir.rmdir()
    return entry


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _file_ok(path: Path, entry: dict[str, Any], tree: str, checksum: bool) -> bool:
    """Whether a cached file is intact and current.

    Checks the size, the entry count and generator key uproot reads back (and the SHA-256 if
    asked) against the manifest entry. A file whose size and modification time are those
    recorded when it last passed is taken as it is (a warm run's check of 18 files: 1 ms, not
    0.2 s); a pass records the time in ``entry`` (the manifest is rewritten with it).
    """
    try:
        st = path.stat()
        if st.st_size != entry["size"]:
            return False
        if not checksum and entry.get("mtime_ns") == st.st_mtime_ns:
            return True
        with uproot.open(path) as f:
            t = f[tree]
            if t.num_entries != entry["entries"] or t.title != _tree_title(entry["key"]):
                return False
    except Exception:  # any failure to read the file means "regenerate it"
        return False
    if checksum and _sha256(path) != entry["sha256"]:
        return False
    entry["mtime_ns"] = st.st_mtime_ns
    return True


def _relpath(process: str, variation: str, file_idx: int) -> str:
    """File path of one sample file relative to the dataset folder."""
    return f"{process}__{variation}/{file_idx}.root"


def default_generate_workers() -> int:
    """Processes that generate the dataset by default: one per core."""
    return max(1, os.cpu_count() or 1)


def _generate_file(job: tuple[Path, str, str, int, DatasetParams, AnalysisConfig]
                   ) -> dict[str, Any]:
    """Pool task: :func:`write_sample_file` of one (path, process, variation, file) job."""
    return write_sample_file(*job)


def _pool_context() -> Any:
    """Start method of the generation pool: ``fork`` where there is one (the workers need
    nothing but this module, already imported; no main-script re-import), else ``spawn``."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _write_files(jobs: list[tuple[Path, str, str, int, DatasetParams, AnalysisConfig]],
                 workers: int, bar: Any, status: Callable[[], str] | None
                 ) -> list[dict[str, Any]]:
    """Write every job's file, in ``workers`` processes (this one if 1); manifest entries in
    job order, whatever order the files finish in."""
    def done() -> None:
        if status is not None:
            bar.set_postfix_str(status(), refresh=False)
        bar.update()

    if workers <= 1 or len(jobs) <= 1:
        entries = []
        for job in jobs:
            log.debug("generating %s", job[0])
            entries.append(write_sample_file(*job))
            done()
        return entries
    if not _cluster_events.signatures:  # compile (or load) it once here, not in every worker
        _, process, variation, file_idx, params, cfg = jobs[0]
        generate_events(sample_tune(process, variation), 1, params.seed,
                        _stream_id(cfg, process), file_idx, 0)
    results: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_pool_context()) as pool:
        futures = {pool.submit(_generate_file, job): k for k, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                done()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [results[k] for k in range(len(jobs))]


def _build(out_dir: Path, params: DatasetParams, cfg: AnalysisConfig, progress: bool | None,
           reuse: bool, checksum: bool, workers: int | None = None,
           status: Callable[[], str] | None = None) -> Path:
    """Write (or reuse) every file, then the manifest and the fileset JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    old: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            old = dict(json.loads(manifest_path.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            old = {}
    jobs = [(p, v, i) for p, v in cfg.samples for i in range(params.files_per_sample)]
    if progress is None:
        progress = sys.stderr.isatty()
    files: dict[str, Any] = {}
    todo = []
    digests = {sample: tune_digest(*sample) for sample in cfg.samples}  # once per sample
    for p, v, i in jobs:
        rel = _relpath(p, v, i)
        entry = old.get(rel) if reuse else None
        if (isinstance(entry, dict) and entry.get("key") == _file_key(params, p, v, i)
                and entry.get("tune") == digests[(p, v)]
                and _file_ok(out_dir / rel, entry, params.tree, checksum)):
            files[rel] = entry
        else:
            files[rel] = None
            todo.append((out_dir / rel, p, v, i, params, cfg))
    t0 = time.perf_counter()
    if todo:
        n_workers = min(default_generate_workers() if workers is None else max(1, workers),
                        len(todo))
        log.info("generating %d synthetic files in %s (%d processes)", len(todo), out_dir,
                 n_workers)
        with tqdm(total=len(todo), desc=f"generating synthetic AGC dataset ({n_workers} "
                                        f"processes)", unit="file", disable=not progress) as bar:
            if status is not None:
                bar.set_postfix_str(status())
            for job, entry in zip(todo, _write_files(todo, n_workers, bar, status), strict=True):
                files[_relpath(*job[1:4])] = entry
    for rel in set(old) - set(files):  # files of an earlier, larger dataset
        (out_dir / rel).unlink(missing_ok=True)
    _write_json(manifest_path, {"generator": GENERATOR_VERSION,
                                "params": dataclasses.asdict(params), "files": files})
    fileset: dict[str, Any] = {}
    for p, v, i in jobs:
        rel = _relpath(p, v, i)
        entry = files[rel]
        # a filtered sample: nevts counts the generated events (its normalization), and the
        # file's own entries are declared beside them
        generated = entry.get("generated", entry["entries"])
        file_info = {"path": rel, "nevts": generated}
        if generated != entry["entries"]:
            file_info["entries"] = entry["entries"]
        fileset.setdefault(p, {}).setdefault(v, {"files": []})["files"].append(file_info)
    fileset_path = out_dir / FILESET_NAME
    _write_json(fileset_path, fileset)
    if todo:
        log.info("generated %d of %d synthetic files in %s (%.1f s)", len(todo), len(jobs),
                 out_dir, time.perf_counter() - t0)
    else:
        log.info("reusing the synthetic dataset in %s", out_dir)
    return fileset_path


def generate_dataset(out_dir: str | Path | None = None, events_per_file: int | None = None,
                     files_per_sample: int | None = None, seed: int | None = None,
                     compression: str | None = None, cfg: AnalysisConfig | None = None,
                     progress: bool | None = None, compression_level: int | None = None,
                     workers: int | None = None, status: Callable[[], str] | None = None
                     ) -> Path:
    """Generate the embedded synthetic dataset (every file, even if cached).

    Args:
        out_dir: destination folder (default :func:`default_data_dir`).
        events_per_file: events per file (default ``cfg.dataset.events_per_file``).
        files_per_sample: files per sample (default ``cfg.dataset.files_per_sample``).
        seed: random seed (default ``cfg.dataset.seed``).
        compression: ``zlib``, ``lz4`` or ``zstd`` (default ``cfg.dataset.compression``).
        cfg: analysis configuration (default: the packaged one).
        progress: show a progress bar (default: when stderr is a terminal).
        compression_level: compression level (default ``cfg.dataset.compression_level``).
        workers: processes generating files at once (default: one per core); the files'
            bytes do not depend on it.
        status: called after each file; its text is shown beside the progress bar (e.g.
            the background kernel compilation's state).

    Returns:
        Path of the fileset JSON (AGC ``ntuples_merged.json`` format, relative paths).

    Raises:
        ConfigError: invalid parameters.
        InputError: the folder cannot be written.
    """
    cfg = cfg or load_analysis_config()
    params = _resolve_params(cfg, events_per_file, files_per_sample, seed, compression,
                             compression_level)
    out = Path(out_dir) if out_dir is not None else default_data_dir()
    try:
        return _build(out, params, cfg, progress, reuse=False, checksum=False, workers=workers,
                      status=status)
    except OSError as exc:
        raise InputError(f"synthetic dataset: cannot write {out}: {exc}") from exc


def ensure_dataset(out_dir: str | Path | None = None, events_per_file: int | None = None,
                   files_per_sample: int | None = None, seed: int | None = None,
                   compression: str | None = None, cfg: AnalysisConfig | None = None,
                   progress: bool | None = None, compression_level: int | None = None,
                   checksum: bool = False, workers: int | None = None,
                   status: Callable[[], str] | None = None) -> Path:
    """The embedded dataset, generated on first use and cached.

    Files whose manifest entry matches the parameters, the generator version and the
    sample's generator knobs (:func:`tune_digest`), with the recorded size and entry count
    (and SHA-256 when ``checksum``), are reused; missing, damaged or outdated files are
    regenerated.

    Args:
        out_dir: cache folder (default :func:`default_data_dir`).
        events_per_file: see :func:`generate_dataset`.
        files_per_sample: see :func:`generate_dataset`.
        seed: see :func:`generate_dataset`.
        compression: see :func:`generate_dataset`.
        cfg: see :func:`generate_dataset`.
        progress: see :func:`generate_dataset`.
        compression_level: see :func:`generate_dataset`.
        checksum: also verify every file's SHA-256 (reads all files).
        workers: see :func:`generate_dataset`.
        status: see :func:`generate_dataset`.

    Returns:
        Path of the fileset JSON.

    Raises:
        ConfigError: invalid parameters.
        InputError: the folder cannot be written.
    """
    cfg = cfg or load_analysis_config()
    params = _resolve_params(cfg, events_per_file, files_per_sample, seed, compression,
                             compression_level)
    out = Path(out_dir) if out_dir is not None else default_data_dir()
    try:
        return _build(out, params, cfg, progress, reuse=True, checksum=checksum,
                      workers=workers, status=status)
    except OSError as exc:
        raise InputError(f"synthetic dataset: cannot write {out}: {exc}") from exc


def iter_sample_events(process: str, variation: str, n_events: int, seed: int,
                       cfg: AnalysisConfig | None = None, file_idx: int = 0,
                       flag_filter: bool = False, filtered: bool = True
                       ) -> Iterator[EventBatch]:
    """Generate the events of one sample file in memory, block by block (no I/O).

    Yields exactly the batches :func:`write_sample_file` writes for the same arguments. A
    process with a generator filter (``cfg.dataset.generator_filter``) yields ``n_events``
    events that pass it; each batch's ``n_generated`` says how many generated events it
    stands for (the normalization: about ``n_events`` / the filter's efficiency).

    Args:
        process, variation: the sample.
        n_events: events of the file.
        seed: dataset seed.
        cfg: analysis configuration.
        file_idx: file index within the sample.
        flag_filter: for a filtered process, generate ``multiplier`` x ``n_events`` events
            unfiltered (other random numbers) and flag the ones that pass in
            ``filter_pass``.
        filtered: False: no generator filter, ``n_events`` plain events (e.g. a benchmark's
            events per second on an unfiltered sample, as the AGC's).
    """
    cfg = cfg or load_analysis_config()
    tune = sample_tune(process, variation)
    stream = _stream_id(cfg, process)
    gen_filter = sample_filter(cfg.dataset.generator_filter, process) if filtered else None
    yield from _sample_batches(tune, n_events, seed, stream, file_idx, gen_filter,
                               flag_filter)
