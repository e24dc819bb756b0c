"""Tests of agc_core.classifier and models.weights: loading, validation errors, inference."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agc_core.classifier import NumbaMLPClassifier, TorchMLPClassifier, load_classifier
from agc_core.config import AnalysisConfig
from agc_core.errors import ConfigError, ModelError
from agc_core.models.net import Net
from agc_core.models.weights import (
    MLPWeights,
    load_all_weights,
    load_weights,
    read_state_dict,
    save_weights,
    scaler_path,
    weights_path,
)

#: numba vs torch classifier outputs (float32 summation order, FMA): measured worst case
#: 1.4e-6 on these networks and inputs, 0.6e-6 with the shipped weights
TORCH_ATOL = 3e-6


def random_weights(region: str, features: tuple[str, ...], seed: int) -> MLPWeights:
    torch.manual_seed(seed)
    net = Net(len(features))
    s = {k: v.detach().numpy() * np.float32(3.0) for k, v in net.state_dict().items()}
    rng = np.random.default_rng(seed)
    return MLPWeights(region, features,
                      rng.uniform(0, 200, len(features)).astype(np.float32),
                      rng.uniform(1, 80, len(features)).astype(np.float32),
                      s["fc1.weight"], s["fc1.bias"], s["fc2.weight"], s["fc2.bias"],
                      s["fc3.weight"], s["fc3.bias"], metadata={"note": "test"})


@pytest.fixture()
def model_dir(tmp_path: Path, cfg: AnalysisConfig) -> Path:
    """A folder with random networks for every region."""
    for i, r in enumerate(cfg.regions):
        save_weights(random_weights(r.name, r.features, seed=i), tmp_path)
    return tmp_path


def rows(n_features: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 400, (n, n_features)).astype(np.float32)


def test_save_load_round_trip(model_dir: Path, cfg: AnalysisConfig) -> None:
    r = cfg.regions[1]
    w = load_weights(r.name, r.features, model_dir)
    ref = random_weights(r.name, r.features, seed=1)
    for a, b in zip((w.mean, w.std, *w.parameters()), (ref.mean, ref.std, *ref.parameters()),
                    strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert w.features == r.features and w.metadata == {"note": "test"}
    assert w.source == weights_path(r.name, model_dir)
    assert not list(model_dir.glob("*.tmp"))  # atomic writes leave no temporary files


def test_numba_and_torch_classifiers_agree(model_dir: Path, cfg: AnalysisConfig) -> None:
    numba_clf = load_classifier("numba", model_dir, cfg)
    torch_clf = load_classifier("torch", model_dir, cfg)
    assert isinstance(numba_clf, NumbaMLPClassifier)
    assert isinstance(torch_clf, TorchMLPClassifier)
    for i, r in enumerate(cfg.regions):
        x = rows(len(r.features), 20_000, seed=i)
        out_n, out_t = numba_clf.predict(r.name, x), torch_clf.predict(r.name, x)
        assert np.max(np.abs(out_n - out_t)) < TORCH_ATOL
        cls_n, cls_t = numba_clf.classify(r.name, x), torch_clf.classify(r.name, x)
        assert cls_n.dtype == np.int8 and cls_t.dtype == np.int8
        clear = np.abs(out_t - 0.5) >= TORCH_ATOL
        assert np.array_equal(cls_n[clear], cls_t[clear])
        assert 0 < cls_n.sum() < cls_n.size
        assert numba_clf.classify(r.name, x[:0]).shape == (0,)


def test_classifiers_pickle(model_dir: Path, cfg: AnalysisConfig) -> None:
    x = rows(4, 100, seed=3)
    for kind in ("numba", "torch"):
        clf = load_classifier(kind, model_dir, cfg)
        before = clf.classify("4j1b", x)  # torch: builds the modules, which must not pickle
        clone = pickle.loads(pickle.dumps(clf))
        assert np.array_equal(clone.classify("4j1b", x), before)
    assert pickle.loads(pickle.dumps(load_classifier("torch", model_dir, cfg)))._nets is None


def test_shipped_weights_load(cfg: AnalysisConfig) -> None:
    weights = load_all_weights(cfg)
    for r in cfg.regions:
        assert weights[r.name].features == r.features
    clf = load_classifier()
    cls = clf.classify("4j2b", rows(5, 1000, seed=1))
    assert set(np.unique(cls)) <= {0, 1}


def test_missing_weights_file(model_dir: Path, cfg: AnalysisConfig) -> None:
    weights_path("4j1b", model_dir).unlink()
    with pytest.raises(ModelError) as err:
        load_classifier("numba", model_dir, cfg)
    msg = str(err.value)
    assert str(weights_path("4j1b", model_dir)) in msg and "not found" in msg
    assert "fc1.weight (32, 4)" in msg


def test_missing_scaler_file(model_dir: Path, cfg: AnalysisConfig) -> None:
    scaler_path("4j2b", model_dir).unlink()
    with pytest.raises(ModelError, match=r"scaler_4j2b\.json.*not found.*length 5"):
        load_classifier("numba", model_dir, cfg)


def test_wrong_tensor_shape(model_dir: Path, cfg: AnalysisConfig) -> None:
    path = weights_path("4j2b", model_dir)
    state = torch.load(path, weights_only=True)
    state["fc2.weight"] = torch.zeros(64, 16)
    torch.save(state, path)
    with pytest.raises(ModelError) as err:
        load_classifier("numba", model_dir, cfg)
    msg = str(err.value)
    assert str(path) in msg and "'fc2.weight'" in msg and "(64, 16)" in msg
    assert "expected (64, 32)" in msg


def test_feature_count_mismatch_in_weights(model_dir: Path, cfg: AnalysisConfig) -> None:
    # a 5-input network saved under the 4-feature region, scaler of the right length
    path = weights_path("4j1b", model_dir)
    torch.save(random_weights("4j2b", cfg.regions[1].features, seed=5).state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_classifier("numba", model_dir, cfg)
    msg = str(err.value)
    assert str(path) in msg and "(32, 5)" in msg and "expected (32, 4)" in msg
    assert "5 features but the region has 4" in msg


def test_feature_count_mismatch_in_scaler(model_dir: Path, cfg: AnalysisConfig) -> None:
    path = scaler_path("4j1b", model_dir)
    raw = json.loads(path.read_text())
    raw["features"].append("extra")
    raw["mean"].append(0.0)
    raw["std"].append(1.0)
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError) as err:
        load_classifier("numba", model_dir, cfg)
    msg = str(err.value)
    assert str(path) in msg and "expected shape (4,)" in msg


def test_feature_count_mismatch_at_classify(model_dir: Path, cfg: AnalysisConfig) -> None:
    for kind in ("numba", "torch"):
        clf = load_classifier(kind, model_dir, cfg)
        with pytest.raises(ModelError) as err:
            clf.classify("4j1b", rows(5, 10, seed=0))
        msg = str(err.value)
        assert "mlp_4j1b.pt" in msg and "(10, 5)" in msg and "expected (n, 4)" in msg
        with pytest.raises(ModelError, match="no MLP for region"):
            clf.classify("3j0b", rows(4, 10, seed=0))


def test_arbitrary_pickle_is_refused(model_dir: Path, cfg: AnalysisConfig) -> None:
    # a full pickled module (not a state_dict) must not be unpickled
    path = weights_path("4j1b", model_dir)
    torch.save(Net(4), path)
    with pytest.raises(ModelError, match=r"mlp_4j1b\.pt: cannot load MLP weights"):
        load_classifier("numba", model_dir, cfg)


def test_corrupt_and_invalid_files(model_dir: Path, cfg: AnalysisConfig) -> None:
    wpath = weights_path("4j1b", model_dir)
    wpath.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot load MLP weights"):
        load_weights("4j1b", cfg.regions[0].features, model_dir)
    save_weights(random_weights("4j1b", cfg.regions[0].features, seed=0), model_dir)
    spath = scaler_path("4j1b", model_dir)
    raw = json.loads(spath.read_text())
    raw["std"][0] = 0.0
    spath.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="'std' must be positive"):
        load_weights("4j1b", cfg.regions[0].features, model_dir)
    raw["std"][0] = 1.0
    raw["region"] = "4j2b"
    spath.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="scaler is for region '4j2b'"):
        load_weights("4j1b", cfg.regions[0].features, model_dir)
    spath.write_text("{")
    with pytest.raises(ModelError, match="cannot read MLP scaler"):
        load_weights("4j1b", cfg.regions[0].features, model_dir)
    w = random_weights("4j1b", cfg.regions[0].features, seed=0)
    w.b2[3] = np.nan
    save_weights(w, model_dir)
    with pytest.raises(ModelError, match=r"'fc2\.bias' contains NaN"):
        load_weights("4j1b", cfg.regions[0].features, model_dir)


def test_unknown_kind(model_dir: Path, cfg: AnalysisConfig) -> None:
    with pytest.raises(ConfigError, match=r"unknown --inference 'onnx' \(choose from numba, "
                                          r"torch, none\)"):
        load_classifier("onnx", model_dir, cfg)


def test_feature_order_names_checked(model_dir: Path, cfg: AnalysisConfig) -> None:
    r = cfg.regions[0]
    swapped = (r.features[1], r.features[0], *r.features[2:])
    save_weights(replace(random_weights(r.name, swapped, seed=0)), model_dir)
    with pytest.raises(ModelError, match="do not match the region's 4 features"):
        load_weights(r.name, r.features, model_dir)


def test_seed_state_dicts_load_with_identity_scaler(tmp_path: Path, cfg: AnalysisConfig) -> None:
    """The seed's own files (trained_model_<region>.pt, state_dicts of its Net) run as the
    seed ran them: raw features in, ``net(torch.FloatTensor(features)).round()`` out."""
    from agc_core.models.weights import seed_weights_path

    nets = {}
    for i, r in enumerate(cfg.regions):
        torch.manual_seed(10 + i)
        nets[r.name] = Net(len(r.features))
        with torch.no_grad():  # raw GeV inputs: centre the outputs so both classes occur
            nets[r.name].fc1.weight.mul_(0.02)
            x = torch.FloatTensor(rows(len(r.features), 5000, seed=20 + i))
            nets[r.name].fc3.bias -= nets[r.name].logits(x).median()
        torch.save(nets[r.name].state_dict(), seed_weights_path(r.name, tmp_path))
    for kind in ("numba", "torch"):
        clf = load_classifier(kind, tmp_path, cfg)
        for i, r in enumerate(cfg.regions):
            w = clf.weights[r.name]
            assert np.all(w.mean == 0) and np.all(w.std == 1) and w.features == r.features
            x = rows(len(r.features), 5000, seed=20 + i)
            with torch.no_grad():
                seed_out = nets[r.name](torch.FloatTensor(x)).reshape(-1).detach().numpy()
            assert np.max(np.abs(clf.predict(r.name, x) - seed_out)) < TORCH_ATOL
            clear = np.abs(seed_out - 0.5) >= TORCH_ATOL
            assert 0 < clear.sum() and 0 < seed_out.round()[clear].sum() < clear.sum()
            np.testing.assert_array_equal(clf.classify(r.name, x)[clear],
                                          seed_out.round()[clear])


def test_seed_pickled_module_is_refused_with_advice(tmp_path: Path, cfg: AnalysisConfig) -> None:
    from agc_core.models.weights import seed_weights_path

    for r in cfg.regions:
        torch.save(Net(len(r.features)), seed_weights_path(r.name, tmp_path))
    with pytest.raises(ModelError, match=r"trained_model_4j1b\.pt.*state_dict\(\) instead"):
        load_classifier("numba", tmp_path, cfg)


def test_shipped_weights_load_without_torch_as_torch_loads_them(cfg: AnalysisConfig) -> None:
    """The numpy reader of plain state_dicts gives torch.load's arrays, and imports no torch."""
    import subprocess
    import sys

    for r in cfg.regions:
        path = weights_path(r.name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        got = read_state_dict(path, len(r.features))
        for array, tensor in zip(got, state.values(), strict=True):
            assert array.dtype == np.float32 and array.flags.c_contiguous
            assert np.array_equal(array, tensor.numpy())
    code = ("import sys; from agc_core.config import load_analysis_config; "
            "from agc_core.models.weights import load_all_weights; "
            "load_all_weights(load_analysis_config()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
