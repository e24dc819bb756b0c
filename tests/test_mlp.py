"""Tests of kernels.mlp: the numba forward pass against torch and a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agc_core.kernels.mlp import (
    HIDDEN_1,
    HIDDEN_2,
    MAX_FEATURES,
    mlp_classify,
    mlp_forward,
    mlp_logits_into,
    mlp_logits_reference,
    pack_mlp,
)
from agc_core.models.net import Net

#: numba vs torch sigmoid outputs differ by float32 summation order and FMA contraction:
#: measured worst case 2.8e-6 (absolute) on the 100,000 rows of the parity test
TORCH_ATOL = 5e-6
#: float32 logits vs a float64 forward pass, and the vector kernel vs the plain loops:
#: measured worst case 2.9e-6 (|diff| <= atol + rtol |ref|, logits of order 10)
LOGIT_TOL = 5e-6


def make_params(n_features: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Random network (torch's default init, optionally scaled) and a realistic scaler."""
    torch.manual_seed(seed)
    net = Net(n_features)
    state = {k: v.detach().numpy() * np.float32(scale) for k, v in net.state_dict().items()}
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.uniform(0.1, 300, n_features).astype(np.float32),
        "std": rng.uniform(0.05, 120, n_features).astype(np.float32),
        "w1": state["fc1.weight"], "b1": state["fc1.bias"],
        "w2": state["fc2.weight"], "b2": state["fc2.bias"],
        "w3": state["fc3.weight"], "b3": state["fc3.bias"],
    }


def packed(p: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return pack_mlp(p["mean"], p["std"], p["w1"], p["b1"], p["w2"], p["b2"], p["w3"], p["b3"])


def features(p: dict[str, np.ndarray], n: int, seed: int) -> np.ndarray:
    """Feature rows spread around the scaler (some far out, like real tails)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(4, size=(n, p["mean"].size))
    return np.abs(p["mean"] + z * p["std"]).astype(np.float32)


def torch_outputs(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The seed's inference: Net on standardized float32 inputs, sigmoid output."""
    net = Net(p["mean"].size)
    net.load_state_dict({"fc1.weight": torch.from_numpy(p["w1"]),
                         "fc1.bias": torch.from_numpy(p["b1"]),
                         "fc2.weight": torch.from_numpy(p["w2"]),
                         "fc2.bias": torch.from_numpy(p["b2"]),
                         "fc3.weight": torch.from_numpy(p["w3"]),
                         "fc3.bias": torch.from_numpy(p["b3"])})
    with torch.no_grad():
        z = (torch.from_numpy(x) - torch.from_numpy(p["mean"])) / torch.from_numpy(p["std"])
        return net(z).reshape(-1).numpy()


def float64_logits(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    z = (x.astype(np.float64) - p["mean"]) / p["std"].astype(np.float64)
    h = np.maximum(z @ p["w1"].T.astype(np.float64) + p["b1"], 0)
    h = np.maximum(h @ p["w2"].T.astype(np.float64) + p["b2"], 0)
    return (h @ p["w3"].T.astype(np.float64) + p["b3"]).reshape(-1)


@pytest.mark.parametrize("n_features", [4, 5])
def test_parity_with_torch_on_100k_rows(n_features: int) -> None:
    p = make_params(n_features, seed=n_features, scale=4.0)  # outputs spread over [0, 1]
    x = features(p, 100_000, seed=10 + n_features)
    ref = torch_outputs(p, x)
    out = mlp_forward(x, *packed(p))
    assert out.dtype == np.float32 and out.shape == (100_000,)
    assert np.max(np.abs(out - ref)) < TORCH_ATOL
    assert 0.05 < np.mean(ref > 0.5) < 0.95  # both classes are exercised
    cls = mlp_classify(x, *packed(p))
    ref_cls = ref.round().astype(np.int8)  # the seed: numpy rounding
    ambiguous = np.abs(ref - 0.5) < TORCH_ATOL
    assert cls.dtype == np.int8
    assert np.array_equal(cls[~ambiguous], ref_cls[~ambiguous])


def test_logits_match_float64_reference() -> None:
    p = make_params(5, seed=3)
    x = features(p, 2000, seed=4)
    out = np.empty(x.shape[0], np.float32)
    mlp_logits_into(x, *packed(p), out)
    ref = float64_logits(p, x)
    assert np.allclose(out, ref, rtol=LOGIT_TOL, atol=LOGIT_TOL)


def test_output_of_exactly_one_half_is_background() -> None:
    # all-zero weights: logit 0, sigmoid 0.5, numpy round(0.5) = 0
    p = make_params(4, seed=1, scale=0.0)
    x = features(p, 10, seed=2)
    assert np.all(mlp_forward(x, *packed(p)) == np.float32(0.5))
    assert np.all(mlp_classify(x, *packed(p)) == 0)
    assert np.all(torch_outputs(p, x).round() == 0)


def test_saturated_outputs_and_nan() -> None:
    p = make_params(4, seed=5, scale=50.0)
    x = features(p, 5000, seed=6)
    out = mlp_forward(x, *packed(p))
    assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))
    assert np.array_equal(mlp_classify(x, *packed(p)), (out > 0.5).astype(np.int8))
    x[0, 1] = np.nan
    assert np.isnan(mlp_forward(x, *packed(p))[0])
    assert mlp_classify(x, *packed(p))[0] == 0


def test_empty_and_non_contiguous_input() -> None:
    p = make_params(4, seed=7)
    empty = np.zeros((0, 4), np.float32)
    assert mlp_classify(empty, *packed(p)).shape == (0,)
    assert mlp_forward(empty, *packed(p)).shape == (0,)
    x = features(p, 300, seed=8)
    wide = np.zeros((300, 8), np.float32)
    wide[:, ::2] = x
    assert np.array_equal(mlp_forward(wide[:, ::2], *packed(p)), mlp_forward(x, *packed(p)))


def test_feature_count_mismatch_raises() -> None:
    p = make_params(4, seed=9)
    with pytest.raises(ValueError, match="feature count"):
        mlp_classify(np.zeros((3, 5), np.float32), *packed(p))


def test_pack_rejects_wrong_shapes() -> None:
    p = make_params(4, seed=9)
    with pytest.raises(ValueError, match=r"'w2' has shape \(32, 64\), expected \(64, 32\)"):
        pack_mlp(p["mean"], p["std"], p["w1"], p["b1"], p["w2"].T, p["b2"], p["w3"], p["b3"])
    with pytest.raises(ValueError, match="'w1'"):
        pack_mlp(p["mean"], p["std"], p["w1"][:, :3], p["b1"], p["w2"], p["b2"], p["w3"],
                 p["b3"])
    big = make_params(MAX_FEATURES + 1, seed=1)
    with pytest.raises(ValueError, match="inputs"):
        packed(big)


def test_packed_layout() -> None:
    p = make_params(5, seed=11)
    mean, inv_std, w1t, b1, w2t, b2, w3, b3 = packed(p)
    assert w1t.shape == (MAX_FEATURES, HIDDEN_1) and np.all(w1t[5:] == 0)
    assert np.array_equal(w1t[:5], p["w1"].T)
    assert w2t.shape == (HIDDEN_1, HIDDEN_2) and w2t.flags.c_contiguous
    assert w3.shape == (HIDDEN_2,) and b3.shape == (1,)
    assert all(a.dtype == np.float32 for a in (mean, inv_std, w1t, b1, w2t, b2, w3, b3))
    assert np.array_equal(inv_std, (1 / p["std"].astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("n_rows", [1, 2, 3, 4, 5, 7, 8, 9, 1001])
def test_vector_kernel_matches_plain_loops(n_rows: int) -> None:
    # the intrinsic works on blocks of ROWS rows: every tail length must come out right
    p = make_params(5, seed=21, scale=3.0)
    x = features(p, n_rows, seed=n_rows)
    out = np.full(n_rows, np.nan, np.float32)
    ref = np.full(n_rows, np.nan, np.float32)
    mlp_logits_into(x, *packed(p), out)
    mlp_logits_reference(x, *packed(p), ref)
    assert np.allclose(out, ref, rtol=LOGIT_TOL, atol=LOGIT_TOL)
    assert np.allclose(out, float64_logits(p, x), rtol=LOGIT_TOL, atol=LOGIT_TOL)


def test_nan_row_does_not_leak_into_its_block() -> None:
    p = make_params(4, seed=22, scale=3.0)
    x = features(p, 8, seed=1)
    clean = mlp_forward(x, *packed(p))
    x[1, 0] = np.nan
    out = mlp_forward(x, *packed(p))
    assert np.isnan(out[1])
    assert np.array_equal(np.delete(out, 1), np.delete(clean, 1))
