"""The embedded dataset against the real CMS analysis (issue 11): yields, shapes, variations, fit.

Our histograms come from events of the default embedded dataset's seed generated in memory
(the first events of each sample's first file) and run through the production chunk
processor; the reference is the AGC's published ``reference_v1.2.0_histos_10_files_per_process
.json`` (124 histograms of the real analysis, 27 entries each: underflow, 25 bins, overflow).
Each test prints the table it checked (``pytest -s``): per item the worst case, its target
and, where a target is not reached yet, the bound this version holds (KNOWN_SHORTFALLS).
``AGC_CALIBRATION_HISTOGRAMS=out/histograms_full.npz`` checks a run's histograms instead (the
default embedded dataset: ``python -m agc_core run --output-dir out``). Item 4 compares the
fits at equal MC statistical precision (see its test).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import boost_histogram as bh
import numpy as np
import pytest

from agc_core.config import REGIONS, AnalysisConfig
from agc_core.fixtures import ThresholdClassifier, synthetic_sample
from agc_core.histograms import to_boost
from agc_core.processor import SampleInfo, process_chunk

REFERENCE_JSON = "reference_v1.2.0_histos_10_files_per_process.json"
SAMPLE_EVENTS = 100_000    # per sample (ttbar selects ~31 %, single top 4-11 %)
# W+jets selects ~0.7 % of the generated events: as the default dataset's two files, the
# events that pass its generator filter (about 10 % of ~10x as many generated)
WJETS_EVENTS = 200_000
# The reference (AGC v1.2.0) weights its b-tag variations by 1 +/- 0.075 pt_i / 50, not the
# seed's 0.1: in its lowest HT bin (100-110 GeV, four jets above 25 GeV) btag_var_3_up /
# nominal = 1.0378 means a fourth jet of 25.2 GeV at 0.075 and an impossible 18.9 GeV at 0.1.
REFERENCE_BTAG_MAGNITUDE = 0.075
TTBAR_VARIATIONS = ("ME_var", "PS_var", "scaleup", "scaledown", "pt_scale_up", "pt_res_up")
YIELD_TOL = 0.10
TVD_TARGET = {"ttbar": 0.06, "wjets": 0.06, "single_top_t_chan": 0.06, "single_top_tW": 0.06,
              "single_top_s_chan": 0.12}
VARIATION_TOL = 0.015
SIGN_MIN_EFFECT = 0.005    # the sign is compared where the reference's effect is resolved
BTAG_TOL = 0.02
FIT_TOL = 0.03
# targets a generator version does not reach yet: (item, case) -> the bound it holds (so that
# a regression still fails); none for agc-core-synthetic-7
KNOWN_SHORTFALLS: dict[tuple[str, str], float] = {}


# --------------------------------------------------------------------------------------------
# histograms


@pytest.fixture(scope="module")
def reference(shared_agc) -> dict[str, np.ndarray]:
    raw = json.loads((shared_agc / REFERENCE_JSON).read_text())
    return {name: np.asarray(h["contents"], dtype=np.float64) for name, h in raw.items()}


@pytest.fixture(scope="module")
def ours(cfg) -> bh.Histogram:
    """The seed's 5-axis histogram of every sample (in-memory events, dataset seed), or a
    run's ``histograms_full.npz`` named by ``$AGC_CALIBRATION_HISTOGRAMS`` (e.g. the default
    embedded dataset's: ``python -m agc_core run --output-dir out``)."""
    path = os.environ.get("AGC_CALIBRATION_HISTOGRAMS")
    if path:
        from agc_core.outputs import load_full_histogram

        return load_full_histogram(path)
    seed = cfg.dataset.seed
    classifier = ThresholdClassifier.from_config(cfg, math.inf)
    results = []
    for sample_id, (process, variation) in enumerate(cfg.samples):
        n = WJETS_EVENTS if process == "wjets" else SAMPLE_EVENTS
        chunk, n_generated = synthetic_sample(process, variation, n, seed, cfg)
        info = SampleInfo(process, variation, sample_id, 0,
                          cfg.xsec_pb[process] * cfg.luminosity_pb / n_generated)
        results.append((process, process_chunk(chunk, info, cfg, classifier, seed)))
    return to_boost(results, cfg)


def contents(hist: bh.Histogram, region: str, process: str, variation: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """(values, variances) with flow bins (27 entries), summed over the classification."""
    view = hist.view(flow=True)
    idx = (slice(None), list(hist.axes[1]).index(region), list(hist.axes[2]).index(process),
           list(hist.axes[3]).index(variation))
    cell = view[idx]
    return cell.value.sum(axis=-1), cell.variance.sum(axis=-1)


def ref_contents(reference: dict[str, np.ndarray], region: str, process: str,
                 variation: str = "nominal") -> np.ndarray:
    name = f"{region}_{process}" if variation == "nominal" else f"{region}_{process}_{variation}"
    return reference[name]


def tvd(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance of two histograms (bins + overflow), unit-normalized."""
    return 0.5 * float(np.abs(a[1:] / a[1:].sum() - b[1:] / b[1:].sum()).sum())


def tvd_noise(values: np.ndarray, variances: np.ndarray) -> float:
    """Expected TVD of a weighted histogram from its infinite-statistics shape."""
    w = values[1:].sum()
    return 0.5 * math.sqrt(2 / math.pi) * float(np.sqrt(variances[1:]).sum()) / w


def fit_window(cfg: AnalysisConfig) -> slice:
    """Flow-indexed bins the fit sees: from the bin containing fit_low to the last bin."""
    b = cfg.binning
    first = int((b.fit_low - b.low) // b.width) + 1
    return slice(first, b.bins + 1)


# --------------------------------------------------------------------------------------------
# the checks: rows of (case, value, target), worst first


def check(item: str, title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """Print the item's table (worst case first) and assert every row meets its target
    (or, for a known shortfall, its recorded bound)."""
    rows = sorted(rows, key=lambda r: r[1] - r[2], reverse=True)
    print(f"\n{item}, {title}: {len(rows)} cases, worst first")
    shown = rows[:6] + [r for r in rows[6:] if r[0].endswith("wjets")]  # and every W+jets row
    for case, value, target, note in shown:
        bound = KNOWN_SHORTFALLS.get((item, case))
        status = "ok" if value <= target else (f"SHORT (holds <= {bound})" if bound else "FAIL")
        print(f"  {case:40s} {value:8.4f}  target {target:.4f}  {status}  {note}")
    failures = [f"{case}: {value:.4f} > {KNOWN_SHORTFALLS.get((item, case), target):.4f}"
                for case, value, target, _ in rows
                if value > KNOWN_SHORTFALLS.get((item, case), target)]
    assert not failures, failures


def nominal_cases(cfg: AnalysisConfig) -> Iterator[tuple[str, str]]:
    for region in REGIONS:
        for process in cfg.xsec_pb:
            yield region, process


def test_item1_nominal_yields(ours, reference, cfg):
    rows = []
    for region, process in nominal_cases(cfg):
        values, variances = contents(ours, region, process, "nominal")
        ratio = values.sum() / ref_contents(reference, region, process).sum()
        noise = math.sqrt(variances.sum()) / values.sum()
        rows.append((f"{region} {process}", abs(ratio - 1), YIELD_TOL + noise,
                     f"ratio {ratio:.3f} (target {YIELD_TOL} + this sample's noise "
                     f"{noise:.3f})"))
    check("item1", "|yield / reference - 1| (flow bins included)", rows)


def test_item2_nominal_shapes(ours, reference, cfg):
    rows = []
    for region, process in nominal_cases(cfg):
        values, variances = contents(ours, region, process, "nominal")
        d = tvd(values, ref_contents(reference, region, process))
        noise = tvd_noise(values, variances)
        # the test's sample is smaller than the default dataset's: its own statistical
        # floor is allowed on top of the target
        rows.append((f"{region} {process}", d, TVD_TARGET[process] + noise,
                     f"target {TVD_TARGET[process]} + this sample's noise {noise:.3f}"))
    check("item2", "total-variation distance of the unit-normalized shapes", rows)


def test_item3_ttbar_variations(ours, reference, cfg):
    window = fit_window(cfg)
    rows, signs = [], []
    for region in REGIONS:
        nominal = contents(ours, region, "ttbar", "nominal")[0]
        ref_nominal = ref_contents(reference, region, "ttbar")
        for variation in TTBAR_VARIATIONS:
            mine = contents(ours, region, "ttbar", variation)[0][window].sum() / nominal[
                window].sum()
            theirs = ref_contents(reference, region, "ttbar", variation)[window].sum() / (
                ref_nominal[window].sum())
            case, note = f"{region} ttbar {variation}", f"ours {mine:.4f} reference {theirs:.4f}"
            rows.append((case, abs(mine - theirs), VARIATION_TOL, note))
            if abs(theirs - 1) >= SIGN_MIN_EFFECT:
                signs.append((case, float((mine - 1) * (theirs - 1) < 0), 0.0, note))
    check("item3-variations", "ttbar variation / nominal in the fit window, |ours - reference|",
          rows)
    check("item3-sign", f"opposite sign of the effect (where the reference's >= "
          f"{SIGN_MIN_EFFECT})", signs)


def test_item3_btag_jet_pt(ours, reference, cfg):
    """btag_var_i_up / nominal = 1 + m <pt_i> / pt_ref: the selected jets' mean pt."""
    syst = cfg.systematics
    scale = syst.btag_magnitude / REFERENCE_BTAG_MAGNITUDE
    rows = []
    for region, process in nominal_cases(cfg):
        values, variances = contents(ours, region, process, "nominal")
        nominal = values.sum()
        n_eff = nominal ** 2 / variances.sum()
        ref_nominal = ref_contents(reference, region, process).sum()
        for i in range(syst.btag_n_jets):
            name = f"btag_var_{i}_up"
            mine = contents(ours, region, process, name)[0].sum() / nominal
            theirs = 1 + (ref_contents(reference, region, process, name).sum() / ref_nominal
                          - 1) * scale
            # a jet pt spectrum's spread is about its mean: this sample's noise on <pt_i>
            noise = (mine - 1) / math.sqrt(n_eff)
            pt = syst.btag_pt_ref / syst.btag_magnitude
            rows.append((f"{region} {process} jet {i}", abs(mine - theirs), BTAG_TOL + noise,
                         f"<pt> ours {(mine - 1) * pt:.1f} reference {(theirs - 1) * pt:.1f} GeV"
                         f" (target {BTAG_TOL} + this sample's noise {noise:.4f})"))
    check("item3-btag", "btag_var_i_up / nominal (the reference at the seed's magnitude)", rows)


NOISE_TOYS = 20


def mc_noise_toys(hist: bh.Histogram, cfg: AnalysisConfig, n: int, seed: int = 1
                  ) -> np.ndarray:
    """ttbar_norm of ``n`` toys that add ``hist``'s own MC statistical fluctuations once more:
    every bin of every independent sample (a process's nominal, each ttbar variation sample)
    moves by a Gaussian of its MC uncertainty; a variation made from the nominal's events
    (b-tag, jet energy, W+jets scale) moves with its nominal."""
    from agc_core import fit, workspace

    rng = np.random.default_rng(seed)
    processes, variations = list(hist.axes[2]), list(hist.axes[3])
    view = hist.view(flow=True)
    value, variance = np.asarray(view.value), np.asarray(view.variance)
    out = []
    for _ in range(n):
        toy_value = value.copy()
        for j, process in enumerate(processes):
            factors: dict[str, np.ndarray] = {}
            for k, variation in enumerate(variations):
                own = variation if (process, variation) in cfg.samples else "nominal"
                if own not in factors:
                    src = variations.index(own)
                    total = value[:, :, j, src].sum(-1)
                    sigma = np.sqrt(variance[:, :, j, src].sum(-1))
                    rel = np.divide(sigma, total, out=np.zeros_like(total), where=total > 0)
                    factors[own] = 1.0 + rng.standard_normal(total.shape) * rel
                toy_value[:, :, j, k] *= factors[own][:, :, None]
        toy = hist.copy()
        toy.view(flow=True)[...] = np.stack([toy_value, variance], axis=-1)
        out.append(fit.fit(workspace.build(toy, cfg=cfg), minos=None, quiet=True
                           ).value("ttbar_norm")[0])
    return np.asarray(out)


def test_item4_fitted_ttbar_norm(ours, cfg, shared_agc):
    """ttbar_norm of our fit on the embedded events and on the reference at equal MC precision.

    The fit's per-bin MC statistical uncertainties (staterror) move ttbar_norm: the reference
    (~4.4 M events per ttbar sample, ~20x ours) fits 0.976 with its own precision and ~1.02
    with that of a 200k-event sample. So the physics is compared at equal precision
    (:func:`agc_core.reference_histograms.with_mc_precision`: the reference's variances
    scaled to this sample's effective MC events, per region and process); the difference at
    the reference's own precision is printed beside it, and how far the reference's own MC
    fluctuations move its ttbar_norm (:func:`mc_noise_toys`): the comparison's floor."""
    from agc_core import fit, workspace
    from agc_core.reference_histograms import reference_histogram, with_mc_precision

    real = reference_histogram(shared_agc / REFERENCE_JSON, shared_agc / "ntuples_merged.json",
                               cfg)
    norm = {}
    for name, hist in (("embedded", ours), ("reference", real),
                       ("reference at our precision", with_mc_precision(real, ours))):
        result = fit.fit(workspace.build(hist, cfg=cfg), minos=None, quiet=True)
        norm[name] = result.value("ttbar_norm")[0]
    diff = abs(norm["embedded"] - norm["reference at our precision"])
    check("item4", "|ttbar_norm(embedded) - ttbar_norm(reference)| at equal MC precision",
          [("ttbar_norm", diff, FIT_TOL,
            f"embedded {norm['embedded']:.3f} reference {norm['reference at our precision']:.3f}"
            f" (at its own precision {norm['reference']:.3f}: difference "
            f"{abs(norm['embedded'] - norm['reference']):.3f})")])
    toys = mc_noise_toys(real, cfg, NOISE_TOYS)
    print(f"  the reference's own MC fluctuations once more ({NOISE_TOYS} toys): ttbar_norm "
          f"{toys.mean():.3f} +- {toys.std(ddof=1):.3f} (from {norm['reference']:.3f})")
