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

import logging
import math
import os

import boost_histogram as bh
import numpy as np
import pytest

from agc_core import calibration
from agc_core.calibration import Row
from agc_core.config import AnalysisConfig
from agc_core.fixtures import ThresholdClassifier, synthetic_sample
from agc_core.histograms import to_boost
from agc_core.processor import SampleInfo, process_chunk

REFERENCE_JSON = "reference_v1.2.0_histos_10_files_per_process.json"
SAMPLE_EVENTS = 100_000    # per sample (ttbar selects ~31 %, single top 4-11 %)
# W+jets selects ~0.7 % of the generated events: as the default dataset's two files, the
# events that pass its generator filter (about 10 % of ~10x as many generated)
WJETS_EVENTS = 200_000
# targets a generator version does not reach yet: (item, case) -> the bound it holds (so that
# a regression still fails); none for agc-core-synthetic-7
KNOWN_SHORTFALLS: dict[tuple[str, str], float] = {}


# --------------------------------------------------------------------------------------------
# histograms


@pytest.fixture(scope="module")
def reference(shared_agc, cfg) -> bh.Histogram:
    from agc_core.reference_histograms import reference_histogram

    return reference_histogram(shared_agc / REFERENCE_JSON, shared_agc / "ntuples_merged.json",
                               cfg)


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


# --------------------------------------------------------------------------------------------
# the checks: rows of (case, value, target), worst first


def check(item: str, rows: list[Row]) -> None:
    """Print the item's table (worst case first) and assert every row meets its target
    (or, for a known shortfall, its recorded bound)."""
    print("\n" + calibration.format_rows(item, rows, bounds=KNOWN_SHORTFALLS))
    failures = [f"{r.case}: {r.value:.4f} > {KNOWN_SHORTFALLS.get((item, r.case), r.target):.4f}"
                for r in rows if r.value > KNOWN_SHORTFALLS.get((item, r.case), r.target)]
    assert not failures, failures


def test_item1_nominal_yields(ours, reference, cfg):
    check("item1", calibration.yield_rows(ours, reference, cfg))


def test_item2_nominal_shapes(ours, reference, cfg):
    # the test's sample is smaller than the default dataset's: its own statistical floor is
    # allowed on top of the target
    check("item2", calibration.shape_rows(ours, reference, cfg))


def test_item3_ttbar_variations(ours, reference, cfg):
    rows = calibration.variation_rows(ours, reference, cfg)
    check("item3-variations", [r for r in rows if r.item == "item3-variations"])
    check("item3-sign", [r for r in rows if r.item == "item3-sign"])


def test_item3_btag_jet_pt(ours, reference, cfg):
    """btag_var_i_up / nominal = 1 + m <pt_i> / pt_ref: the selected jets' mean pt."""
    check("item3-btag", calibration.btag_rows(ours, reference, cfg))


NOISE_TOYS = 20


def mc_noise_toys(hist: bh.Histogram, cfg: AnalysisConfig, n: int, seed: int = 1
                  ) -> np.ndarray:
    """ttbar_norm of ``n`` toys that add ``hist``'s own MC statistical fluctuations once more:
    every bin of every independent sample (a process's nominal, each ttbar variation sample)
    moves by a Gaussian of its MC uncertainty; a variation made from the nominal's events
    (b-tag, jet energy, W+jets scale) moves with its nominal."""
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
        out.append(calibration.fitted_norm(toy, cfg))
    return np.asarray(out)


def test_item4_fitted_ttbar_norm(ours, reference, cfg):
    """ttbar_norm of our fit on the embedded events and on the reference at equal MC precision.

    The fit's per-bin MC statistical uncertainties (staterror) move ttbar_norm: the reference
    (~4.4 M events per ttbar sample, ~20x ours) fits 0.976 with its own precision and ~1.02
    with that of a 200k-event sample. So the physics is compared at equal precision
    (:func:`agc_core.reference_histograms.with_mc_precision`: the reference's variances
    scaled to this sample's effective MC events, per region and process); the difference at
    the reference's own precision is printed beside it, and how far the reference's own MC
    fluctuations move its ttbar_norm (:func:`mc_noise_toys`): the comparison's floor. A
    single default-size dataset scatters by about the target (``python -m agc_core calibrate
    --seeds 42-56``: docs/dataset.md)."""
    rows, norm = calibration.fit_rows(ours, reference, cfg)
    check("item4", rows)
    toys = mc_noise_toys(reference, cfg, NOISE_TOYS)
    print(f"  the reference's own MC fluctuations once more ({NOISE_TOYS} toys): ttbar_norm "
          f"{toys.mean():.3f} +- {toys.std(ddof=1):.3f} (from {norm['reference']:.3f})")


# --------------------------------------------------------------------------------------------
# the module's tables and its command


def test_row_meets_its_target_inclusively():
    assert Row("item1", "a", 0.1, 0.1).ok and not Row("item1", "a", 0.1001, 0.1).ok


def test_parse_seeds():
    assert calibration.parse_seeds("42-44,50") == [42, 43, 44, 50]
    assert calibration.parse_seeds("7") == [7]
    for bad in ("", "a-b", "42-", "4,,5", "46-42"):
        with pytest.raises(calibration.ConfigError, match="--seeds"):
            calibration.parse_seeds(bad)


def test_spread_table_marks_failures_and_summarizes_item4():
    good = calibration.Calibration((Row("item1", "x", 0.05, 0.1), Row("item4", "n", 0.01, 0.03)),
                                   1.02, 1.01, 0.98)
    bad = calibration.Calibration((Row("item1", "x", 0.2, 0.1), Row("item4", "n", 0.04, 0.03)),
                                  0.97, 1.01, 0.98)
    text = calibration.spread_table([("seed 1", good), ("seed 2", bad)])
    lines = {line.split()[1]: line for line in text.splitlines()
             if line.lstrip().startswith("seed")}
    assert "*" not in lines["1"] and "0.2000*" in lines["2"] and "0.0400*" in lines["2"]
    assert "2 datasets, 1 meet every item" in text
    assert "mean -0.0150 +- 0.0250" in text and "1 of 2 within 0.03" in text


def test_cli_checks_runs_histograms(tmp_path, ours, shared_agc, capsys):
    """``calibrate --histograms`` on two runs' histograms: every item's table for one, one
    line each and the item-4 spread for two; the exit code says whether every item is met."""
    from agc_core import cli
    from agc_core.outputs import save_full_histogram

    paths = []
    for name in ("run_a", "run_b"):
        paths.append(save_full_histogram(ours, tmp_path / name / "histograms_full.npz"))
    refs = ["--reference", str(shared_agc / REFERENCE_JSON),
            "--reference-fileset", str(shared_agc / "ntuples_merged.json")]
    rc = cli.main(["calibrate", "--histograms", str(paths[0]), *refs])
    out = capsys.readouterr().out
    assert rc == 0, out
    for item in calibration.ITEMS:
        assert f"{item}, " in out
    before = logging.getLogger("agc_core").level
    rc = cli.main(["calibrate", "--histograms", *map(str, paths), *refs])
    out = capsys.readouterr().out
    assert rc == 0 and "run_a" in out and "run_b" in out
    assert "2 datasets, 2 meet every item" in out and "spread (std) 0.0000" in out
    # the command quiets the package's log while it runs, not after
    assert logging.getLogger("agc_core").level == before


def test_cli_generates_and_checks_other_seeds(tmp_path, shared_agc, capsys):
    """``calibrate --seeds``: each seed's dataset generated, analysed and deleted (the run's
    outputs kept with --workdir); a line per seed in the table."""
    from agc_core import cli

    rc = cli.main(["calibrate", "--seeds", "3", "--events-per-file", "4000", "--workdir",
                   str(tmp_path), "--reference", str(shared_agc / REFERENCE_JSON),
                   "--reference-fileset", str(shared_agc / "ntuples_merged.json")])
    out = capsys.readouterr().out
    assert rc in (0, 1), out  # 4,000 events per file: some item may miss its target
    assert "seed 3 (1/1)" in out and "1 datasets" in out and "item 4:" in out
    assert not (tmp_path / "seed3" / "dataset").exists()
    assert (tmp_path / "seed3" / "out" / "histograms_full.npz").is_file()


def test_a_histogram_without_a_variation_is_named(ours, reference, cfg):
    """A run without systematics has no variation to compare: one message names it."""
    from agc_core.errors import InputError

    nominal_only = ours[:, :, :, bh.loc("nominal"):bh.loc("nominal") + 1, :]
    with pytest.raises(InputError, match="no variation 'ME_var'"):
        calibration.variation_rows(nominal_only, reference, cfg)
