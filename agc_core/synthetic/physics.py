"""The samples' physics: the generator's constants and knobs (:class:`ProcessTune` per sample,
:class:`Radiation`, the :class:`Detector`), and :func:`sample_tune`, the tune of a sample and
its variation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agc_core.errors import ConfigError

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
