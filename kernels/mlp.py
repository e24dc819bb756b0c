"""Inference of the signal/background MLP (the seed's 3-layer network) on feature rows.

The network is the seed's ``Net``: ``Linear(n, 32) - ReLU - Linear(32, 64) - ReLU -
Linear(64, 1) - sigmoid``, applied to standardized features ``(x - mean) / std``. The
classification is ``round(sigmoid(logit))`` with numpy rounding (0.5 -> 0), i.e. class 1
exactly when the sigmoid output exceeds 0.5; :func:`mlp_classify` decides on the sign of the
logit (``logit > 0``), which agrees with rounding the float32 sigmoid except for outputs
within float32 rounding of 0.5 (|output - 0.5| < 1e-7).

Speed: the weights are first packed once (:func:`pack_mlp`: transposed so that the inner
loops run over contiguous output units, the first layer zero-padded to :data:`MAX_FEATURES`
inputs) so that the hidden-layer loops have compile-time trip counts; numba/LLVM then unrolls
the reductions and vectorizes over output units. Arithmetic is float32 throughout; the
summation order differs from torch's (differences of order 1e-7 in the outputs).
"""

from __future__ import annotations

import numpy as np
from numba import njit

HIDDEN_1 = 32  # units of the first hidden layer (the seed's Net)
HIDDEN_2 = 64  # units of the second hidden layer
MAX_FEATURES = 8  # inputs are zero-padded to this many (compile-time loop bound)

# reassociation lets LLVM interleave the long dot-product chains; no "nnan"/"ninf" so that
# NaN/inf inputs keep their IEEE meaning
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


def pack_mlp(
    mean: np.ndarray, std: np.ndarray,
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
    w3: np.ndarray, b3: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Pack the network's parameters into the layout the kernels use.

    Args:
        mean, std: float32 (n,) feature standardization (``std`` > 0).
        w1, b1: first layer as torch stores it: (32, n) and (32,).
        w2, b2: second layer: (64, 32) and (64,).
        w3, b3: output layer: (1, 64) and (1,).

    Returns:
        ``(mean, std, w1t, b1, w2t, b2, w3, b3)``, all C-contiguous float32: ``mean`` and
        ``std`` of shape (n,), ``w1t`` (MAX_FEATURES, 32) = ``w1.T`` zero-padded, ``w2t``
        (32, 64) = ``w2.T``, ``w3`` (64,), ``b3`` (1,).

    Raises:
        ValueError: if a shape does not match the seed's architecture or n > MAX_FEATURES.
    """
    n = int(np.shape(mean)[0]) if np.ndim(mean) == 1 else -1
    expected = {
        "mean": (n,), "std": (n,), "w1": (HIDDEN_1, n), "b1": (HIDDEN_1,),
        "w2": (HIDDEN_2, HIDDEN_1), "b2": (HIDDEN_2,), "w3": (1, HIDDEN_2), "b3": (1,),
    }
    given = {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}
    for name, shape in expected.items():
        if np.shape(given[name]) != shape:
            raise ValueError(f"MLP parameter '{name}' has shape {np.shape(given[name])}, "
                             f"expected {shape}")
    if not 1 <= n <= MAX_FEATURES:
        raise ValueError(f"MLP with {n} inputs; supported: 1 to {MAX_FEATURES}")
    f32 = np.float32
    w1t = np.zeros((MAX_FEATURES, HIDDEN_1), dtype=f32)
    w1t[:n] = np.asarray(w1, dtype=f32).T
    return (
        np.ascontiguousarray(mean, dtype=f32), np.ascontiguousarray(std, dtype=f32),
        w1t, np.ascontiguousarray(b1, dtype=f32),
        np.ascontiguousarray(np.asarray(w2, dtype=f32).T), np.ascontiguousarray(b2, dtype=f32),
        np.ascontiguousarray(np.asarray(w3, dtype=f32).reshape(HIDDEN_2)),
        np.ascontiguousarray(b3, dtype=f32),
    )


@njit(cache=True)
def sigmoid(x: np.float32) -> np.float32:
    """Logistic function in float32, stable for large |x|."""
    if x >= _ZERO:
        return _ONE / (_ONE + np.exp(-x))
    e = np.exp(x)
    return e / (_ONE + e)


@njit(cache=True, fastmath=_FASTMATH)
def mlp_logits_into(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray, out: np.ndarray,
) -> None:
    """Pre-sigmoid outputs of the network for a batch of feature rows.

    Args:
        x: float32 (n_rows, n_features) raw features (GeV for momenta), C-contiguous.
        mean, std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`.
        out: float32 (n_rows,) output buffer for the logits.
    """
    n_rows, n_feat = x.shape
    if n_feat != mean.shape[0] or n_feat > MAX_FEATURES:
        raise ValueError("feature count does not match the MLP parameters")
    if out.shape[0] != n_rows:
        raise ValueError("output buffer length does not match the number of rows")
    z = np.zeros(MAX_FEATURES, dtype=np.float32)
    h1 = np.empty(HIDDEN_1, dtype=np.float32)
    q = HIDDEN_1 // 4
    for i in range(n_rows):
        for k in range(n_feat):
            z[k] = (x[i, k] - mean[k]) / std[k]
        # layer 1: vectorized over the 32 units, fixed-length reduction over padded inputs
        for j in range(HIDDEN_1):
            s = b1[j]
            for k in range(MAX_FEATURES):
                s += w1t[k, j] * z[k]
            h1[j] = max(s, _ZERO)
        # layers 2 and 3: vectorized over the 64 units; four partial sums shorten the chains
        s_out = b3[0]
        for o in range(HIDDEN_2):
            s0 = b2[o]
            s1 = _ZERO
            s2 = _ZERO
            s3 = _ZERO
            for j in range(q):
                s0 += w2t[j, o] * h1[j]
                s1 += w2t[j + q, o] * h1[j + q]
                s2 += w2t[j + 2 * q, o] * h1[j + 2 * q]
                s3 += w2t[j + 3 * q, o] * h1[j + 3 * q]
            s_out += w3[o] * max((s0 + s1) + (s2 + s3), _ZERO)
        out[i] = s_out


@njit(cache=True)
def mlp_forward(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray,
) -> np.ndarray:
    """Sigmoid outputs of the network (the seed's ``Net.forward`` on standardized features).

    Args:
        x: float32 (n_rows, n_features) raw features, C-contiguous.
        mean, std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`.

    Returns:
        float32 (n_rows,) outputs in [0, 1].
    """
    out = np.empty(x.shape[0], dtype=np.float32)
    mlp_logits_into(x, mean, std, w1t, b1, w2t, b2, w3, b3, out)
    for i in range(out.shape[0]):
        out[i] = sigmoid(out[i])
    return out


@njit(cache=True)
def mlp_classify(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray,
) -> np.ndarray:
    """Classification ``round(output)`` (1 = signal-like, 0 = background-like) per row.

    Args:
        x: float32 (n_rows, n_features) raw features, C-contiguous.
        mean, std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`.

    Returns:
        int8 (n_rows,): 1 where the logit is > 0 (output > 0.5), else 0 (NaN gives 0).
    """
    logits = np.empty(x.shape[0], dtype=np.float32)
    mlp_logits_into(x, mean, std, w1t, b1, w2t, b2, w3, b3, logits)
    out = np.empty(x.shape[0], dtype=np.int8)
    for i in range(out.shape[0]):
        out[i] = 1 if logits[i] > _ZERO else 0
    return out
