"""Tests of models.train: metrics, a tiny reproducible training, outputs and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agc_core.classifier import load_classifier
from agc_core.cli import build_parser
from agc_core.config import AnalysisConfig
from agc_core.models.features import LabelledFeatures
from agc_core.models.metrics import balanced_weights, roc_auc, roc_curve, weighted_accuracy
from agc_core.models.train import (
    TRAINING_DATA_SEED,
    TrainSettings,
    plot_training,
    split_indices,
    train_region,
)
from agc_core.models.weights import load_weights, save_weights

FEATURES_4J1B = ("A", "lepton_pt", "leading_jet_pt", "HT")


def toy_data(n: int, seed: int) -> LabelledFeatures:
    """Signal with larger HT and leading jet pt than the background (GeV scale inputs)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int8)
    s = y.astype(np.float64)
    x = np.column_stack([
        rng.uniform(0, 0.3, n) + 0.05 * s,
        rng.exponential(40, n) + 25,
        rng.normal(120 + 40 * s, 40),
        rng.normal(300 + 120 * s, 90),
    ]).astype(np.float32)
    process = np.where(y == 1, 0, 1 + (rng.random(n) < 0.5)).astype(np.int16)
    weights = np.where(process == 2, 0.2, 1.0)
    return LabelledFeatures(x, y, weights, process, ("ttbar", "wjets", "single_top_tW"))


def brute_force_auc(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    sig, bkg = y == 1, y == 0
    diff = s[sig][:, None] - s[bkg][None, :]
    pair = w[sig][:, None] * w[bkg][None, :]
    return float(((diff > 0) * pair + 0.5 * (diff == 0) * pair).sum() / pair.sum())


def test_roc_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.int8)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # many ties
    w = rng.uniform(0.1, 3.0, 400)
    assert roc_auc(s, y, w) == pytest.approx(brute_force_auc(s, y, w), abs=1e-12)
    assert roc_auc(s, y) == pytest.approx(brute_force_auc(s, y, np.ones(400)), abs=1e-12)
    fpr, tpr = roc_curve(s, y, w)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == pytest.approx(1) and tpr[-1] == pytest.approx(1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert roc_auc(np.r_[1.0, 2.0], np.r_[0, 1]) == 1.0
    assert roc_auc(np.r_[2.0, 1.0], np.r_[0, 1]) == 0.0
    with pytest.raises(ValueError, match="signal and background"):
        roc_auc(np.r_[1.0, 2.0], np.r_[1, 1])


def test_balanced_weights_and_accuracy() -> None:
    y = np.array([1, 1, 0, 0, 0, 0])
    w = np.array([1.0, 3.0, 1.0, 1.0, 1.0, 5.0])
    b = balanced_weights(y, w)
    assert b[y == 1].sum() == pytest.approx(3.0) and b[y == 0].sum() == pytest.approx(3.0)
    assert b[1] / b[0] == pytest.approx(3.0) and b[5] / b[2] == pytest.approx(5.0)
    assert weighted_accuracy(np.array([1, 0, 0, 0, 0, 1]), y, w) == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="no signal"):
        balanced_weights(np.zeros(3, int), np.ones(3))


def test_split_is_reproducible_and_disjoint() -> None:
    a_train, a_val = split_indices(100, 0.25, seed=3)
    b_train, b_val = split_indices(100, 0.25, seed=3)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert a_val.size == 25 and np.intersect1d(a_train, a_val).size == 0
    assert np.union1d(a_train, a_val).size == 100
    assert not np.array_equal(split_indices(100, 0.25, seed=4)[1], a_val)


def test_tiny_training_is_reproducible() -> None:
    data = toy_data(400, seed=1)
    settings = TrainSettings(epochs=2, batch_size=64, seed=7)
    a = train_region(data, "4j1b", FEATURES_4J1B, settings)
    b = train_region(data, "4j1b", FEATURES_4J1B, settings)
    for x, y in zip(a.weights.parameters(), b.weights.parameters(), strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.weights.mean, b.weights.mean)
    assert a.val_loss == b.val_loss and a.val_auc == b.val_auc
    c = train_region(data, "4j1b", FEATURES_4J1B, TrainSettings(epochs=2, batch_size=64, seed=8))
    assert not np.array_equal(a.weights.w1, c.weights.w1)
    assert a.epochs_run == 2 and len(a.train_loss) == 2 and 1 <= a.best_epoch <= 2
    assert a.n_train + a.n_val == 400 and a.n_val == 100
    assert set(a.val_accuracy_process) == {"ttbar", "wjets", "single_top_tW"}
    assert all(p.dtype == np.float32 for p in a.weights.parameters())


def test_training_learns_and_beats_seed_recipe() -> None:
    data = toy_data(6000, seed=2)
    ours = train_region(data, "4j1b", FEATURES_4J1B, TrainSettings(epochs=15, seed=1))
    seed = train_region(data, "4j1b", FEATURES_4J1B,
                        TrainSettings.seed_recipe(epochs=15, seed=1))
    # at the seed recipe's own learning rate (SGD, MSE, raw GeV inputs) the sigmoid saturates
    # within the first epochs here (val MSE 0.5, AUC 0.16): standardized inputs fix that
    assert ours.val_auc > 0.85
    assert ours.val_auc > seed.val_auc
    assert ours.val_accuracy > 0.75


def test_early_stopping_keeps_best_epoch() -> None:
    data = toy_data(600, seed=3)
    res = train_region(data, "4j1b", FEATURES_4J1B,
                       TrainSettings(epochs=200, patience=2, batch_size=32,
                                     learning_rate=0.05, seed=1))
    assert res.epochs_run < 200
    assert res.epochs_run - res.best_epoch == 2
    assert res.val_loss[res.best_epoch - 1] == min(res.val_loss)


def test_trained_weights_round_trip_into_classifier(tmp_path: Path,
                                                    cfg: AnalysisConfig) -> None:
    for i, r in enumerate(cfg.regions):
        rng = np.random.default_rng(i)
        n = 300
        y = (rng.random(n) < 0.5).astype(np.int8)
        x = rng.normal(100 + 30.0 * y[:, None], 20, (n, len(r.features))).astype(np.float32)
        data = LabelledFeatures(x, y, np.ones(n), y.astype(np.int16), ("bkg", "ttbar"))
        res = train_region(data, r.name, r.features, TrainSettings(epochs=2, seed=1))
        save_weights(res.weights, tmp_path)
        loaded = load_weights(r.name, r.features, tmp_path)
        assert np.array_equal(loaded.w2, res.weights.w2)
        assert np.array_equal(loaded.std, res.weights.std)
    path = plot_training({"4j2b": res}, tmp_path / "training.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    clf = load_classifier("numba", tmp_path, cfg)
    assert clf.classify("4j2b", x).shape == (300,)


def test_bad_inputs() -> None:
    data = toy_data(50, seed=0)
    with pytest.raises(ValueError, match="feature names"):
        train_region(data, "4j1b", FEATURES_4J1B[:3], TrainSettings(epochs=1))
    with pytest.raises(ValueError, match="unknown loss"):
        train_region(data, "4j1b", FEATURES_4J1B, TrainSettings(epochs=1, loss="hinge"))


def test_cli_registers_train(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--epochs", "3", "--seed", "5", "--out",
                                      str(tmp_path), "--max-events-per-sample", "1000"])
    assert args.command == "train" and args.epochs == 3 and args.seed == 5
    assert args.out == tmp_path and args.max_events_per_sample == 1000


def test_cli_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from agc_core.cli import main

    assert main(["train", "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_shipped_metadata_records_training(cfg: AnalysisConfig) -> None:
    from agc_core.synthetic import GENERATOR_VERSION

    for r in cfg.regions:
        meta = load_weights(r.name, r.features).metadata
        assert meta["signal_process"] == cfg.signal_process
        assert meta["settings"]["loss"] == "bce" and meta["settings"]["optimizer"] == "adam"
        # trained on the current generator, with another seed than the embedded dataset's
        assert meta["generator"] == GENERATOR_VERSION
        assert meta["data_seed"] == TRAINING_DATA_SEED != cfg.dataset.seed
        json.dumps(meta)


def test_run_says_the_accuracy_is_held_out(cfg: AnalysisConfig, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from agc_core.report import accuracy_data

    def result(fileset, model_dir=None):
        options = SimpleNamespace(config=None, model_dir=model_dir, fileset=fileset)
        return SimpleNamespace(options=options, fileset=Path(fileset or "fileset.json"))

    assert accuracy_data(result(None)) == (
        f"held out: trained on generator seed {TRAINING_DATA_SEED}, this is the embedded "
        f"dataset, seed {cfg.dataset.seed}")
    assert accuracy_data(result("/data/real.json")).startswith("networks trained on synthetic")
    # weights trained on the embedded dataset's own seed are said to be
    for r in cfg.regions:
        w = load_weights(r.name, r.features)
        save_weights(replace(w, metadata={**w.metadata, "data_seed": cfg.dataset.seed}),
                     tmp_path)
    assert accuracy_data(result(None, tmp_path)).startswith("on the training events")


def test_generated_features_use_the_training_seed(cfg: AnalysisConfig) -> None:
    """Training events come from the generator with their own seed: other events than the
    embedded dataset's, with the physical weight xsec / events."""
    from agc_core.models.features import generated_features

    a = generated_features(cfg, 5, 1500)
    b = generated_features(cfg, cfg.dataset.seed, 1500)
    for r in cfg.regions:
        assert 0 < a[r.name].labels.sum() < a[r.name].n
        ttbar = a[r.name].processes.index("ttbar")
        assert np.allclose(a[r.name].weights[a[r.name].process == ttbar],
                           cfg.xsec_pb["ttbar"] / 1500)
        assert not np.array_equal(a[r.name].features[:50], b[r.name].features[:50])


@pytest.fixture(scope="module")
def tiny_fileset(tmp_path_factory: pytest.TempPathFactory, cfg: AnalysisConfig) -> Path:
    """A small embedded dataset (1,500 events per sample)."""
    from agc_core.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("tiny_dataset")
    return generate_dataset(out, events_per_file=1500, files_per_sample=1, cfg=cfg,
                            progress=False)


def test_collect_features_from_fileset(tiny_fileset: Path, cfg: AnalysisConfig) -> None:
    from agc_core.models.features import collect_features

    data = collect_features(tiny_fileset, cfg, max_events_per_sample=1000)
    for r in cfg.regions:
        d = data[r.name]
        assert d.features.shape == (d.n, len(r.features)) and d.features.dtype == np.float32
        assert 0 < d.labels.sum() < d.n
        assert set(d.processes) == {p for p, v in cfg.samples if v == "nominal"}
        ttbar = d.processes.index("ttbar")
        # physical weights: xsec / events read, the same for every event of a sample
        assert np.allclose(d.weights[d.process == ttbar], cfg.xsec_pb["ttbar"] / 1000)
        assert np.array_equal(d.labels == 1, d.process == ttbar)


def test_collect_features_adds_generated_events(tiny_fileset: Path, cfg: AnalysisConfig
                                                 ) -> None:
    """Events generated in memory join the sample: more events, weight xsec / (read + made)."""
    from agc_core.models.features import collect_features

    base = collect_features(tiny_fileset, cfg, max_events_per_sample=1000)
    more = collect_features(tiny_fileset, cfg, max_events_per_sample=1000,
                            extra_events={"single_top_tW": 3000}, extra_first_file=1)
    for r in cfg.regions:
        b, m = base[r.name], more[r.name]
        tw = b.processes.index("single_top_tW")
        assert (m.process == tw).sum() > (b.process == tw).sum()
        assert np.allclose(m.weights[m.process == tw], cfg.xsec_pb["single_top_tW"] / 4000)
        # the other samples are untouched
        for ip in range(len(b.processes)):
            if ip != tw:
                np.testing.assert_array_equal(m.features[m.process == ip],
                                              b.features[b.process == ip])


def test_shipped_networks_separate_signal_on_fresh_events(tiny_fileset: Path,
                                                          cfg: AnalysisConfig) -> None:
    """The shipped MLPs, run on events of a freshly generated dataset through our kernels,
    rank ttbar above the backgrounds (an untrained or mis-wired network gives AUC ~ 0.5)."""
    from agc_core.models.features import collect_features

    clf = load_classifier("numba", cfg=cfg)
    data = collect_features(tiny_fileset, cfg, max_events_per_sample=1500)
    for r in cfg.regions:
        d = data[r.name]
        auc = roc_auc(clf.predict(r.name, d.features), d.labels, balanced_weights(d.labels,
                                                                                 d.weights))
        # measured: 0.75 / 0.73 here (agc-core-synthetic-5, whose backgrounds look more like
        # ttbar than synthetic-3's, where it was 0.88 / 0.85); not separating: ~0.5
        assert auc > 0.6, (r.name, auc)


def test_train_command_end_to_end(tiny_fileset: Path, tmp_path: Path, cfg: AnalysisConfig,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from agc_core.cli import main

    out = tmp_path / "trained"
    assert main(["-q", "train", "--fileset", str(tiny_fileset), "--out", str(out),
                 "--epochs", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "4j1b: val accuracy" in printed and "ROC AUC" in printed
    for name in ("mlp_4j1b.pt", "mlp_4j2b.pt", "scaler_4j1b.json", "scaler_4j2b.json",
                 "training.png", "training_summary.json"):
        assert (out / name).is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["settings"]["epochs"] == 2 and summary["settings"]["seed"] == 3
    assert summary["dataset"] == tiny_fileset.name
    clf = load_classifier("numba", out, cfg)
    assert clf.weights["4j2b"].metadata["epochs_run"] <= 2
    assert clf.classify("4j2b", np.full((3, 5), 100, np.float32)).shape == (3,)
