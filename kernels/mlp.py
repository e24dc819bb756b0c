"""Inference of the signal/background MLP (the seed's 3-layer network) on feature rows.

The network is the seed's ``Net``: ``Linear(n, 32) - ReLU - Linear(32, 64) - ReLU -
Linear(64, 1) - sigmoid``, applied to standardized features ``(x - mean) / std``. The
classification is ``round(sigmoid(logit))`` with numpy rounding (0.5 -> 0), i.e. class 1
exactly when the sigmoid output exceeds 0.5; :func:`mlp_classify` decides on the sign of the
logit (``logit > 0``), which agrees with rounding the float32 sigmoid except for outputs
within float32 rounding of 0.5 (|output - 0.5| < 1e-7).

Speed: the weights are packed once (:func:`pack_mlp`: transposed so that inner loops run over
contiguous output units, the first layer zero-padded to :data:`MAX_FEATURES` inputs). The
rows are standardized in a numba loop; the three layers are emitted by a small numba
intrinsic as explicit 16-lane float32 vector code (LLVM ``<16 x float>``) for blocks of
:data:`ROWS` rows: per row the 32 and 64 hidden units live in two and four vector
accumulators, one fused multiply-add per (input unit, 16 outputs), and each weight vector
loaded serves all rows of the block. LLVM's auto-vectorizer does not keep such accumulators
in registers (and numba disables its SLP vectorizer); the plain-loop version,
:func:`mlp_logits_reference` (kept for tests), is ~1.6x slower. On CPUs without 512-bit
vectors LLVM splits the vectors into the native width. Arithmetic is float32 throughout; the
summation order differs from torch's (differences of order 1e-7 in the outputs).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

HIDDEN_1 = 32  # units of the first hidden layer (the seed's Net)
HIDDEN_2 = 64  # units of the second hidden layer
MAX_FEATURES = 8  # inputs are zero-padded to this many (compile-time loop bound)

# reassociation lets LLVM interleave the long dot-product chains; no "nnan"/"ninf" so that
# NaN/inf inputs keep their IEEE meaning
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_LANES = 16  # float32 lanes of the explicit vectors of the second layer
ROWS = 4  # feature rows per call of the second-layer code (weight loads shared by the rows)


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
        ``(mean, inv_std, w1t, b1, w2t, b2, w3, b3)``, all C-contiguous float32: ``mean`` and
        ``inv_std`` = 1 / std (correctly rounded; a multiplication is much cheaper than the
        division) of shape (n,), ``w1t`` (MAX_FEATURES, 32) = ``w1.T`` zero-padded, ``w2t``
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
    inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(f32)
    return (
        np.ascontiguousarray(mean, dtype=f32), np.ascontiguousarray(inv_std),
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


def _c_float32_array(t: types.Type, ndim: int) -> bool:
    return (isinstance(t, types.Array) and t.dtype == types.float32 and t.ndim == ndim
            and t.layout == "C")


@intrinsic
def _forward_block(typingctx, z, w1t, b1, w2t, b2, w3, out):  # type: ignore[no-untyped-def]
    """Logits without the output bias of :data:`ROWS` standardized rows, as vector code.

    ``out[r] = w3 . relu(b2 + w2t.T @ relu(b1 + w1t.T @ z[r]))`` in float32 with explicit
    ``<16 x float>`` vectors: per row, two vector accumulators hold the 32 first-layer units
    and four the 64 second-layer units, all in registers; each weight vector loaded serves
    all rows. Typed for C-contiguous float32 arrays z (ROWS, MAX_FEATURES), w1t
    (MAX_FEATURES, 32), b1 (32,), w2t (32, 64), b2 (64,), w3 (64,), out (ROWS,); the shapes
    are the caller's responsibility (fixed by the architecture). The ReLUs keep NaN.
    """
    arrays = (z, w1t, b1, w2t, b2, w3, out)
    if not all(_c_float32_array(a, nd) for a, nd in zip(arrays, (2, 2, 1, 2, 1, 1, 1),
                                                         strict=True)):
        return None
    sig = types.none(*arrays)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ir = cgutils.ir
        z_ptr, w1t_ptr, b1_ptr, w2t_ptr, b2_ptr, w3_ptr, out_ptr = (
            context.make_array(t)(context, builder, a).data
            for t, a in zip(signature.args, args, strict=True))
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(f32, _LANES)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{_LANES}f32")
        reduce_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(f32, [f32, vec]),
            f"llvm.vector.reduce.fadd.v{_LANES}f32")
        undef = ir.Constant(vec, ir.Undefined)
        zero = ir.Constant(vec, [0.0] * _LANES)

        def element(ptr: ir.Value, offset: int) -> ir.Value:
            return builder.gep(ptr, [ir.Constant(i64, offset)])

        def load_vector(ptr: ir.Value, offset: int) -> ir.Value:
            value = builder.load(builder.bitcast(element(ptr, offset), vec.as_pointer()))
            value.align = 4  # numpy guarantees element alignment only
            return value

        def splat(v: ir.Value, lane: int) -> ir.Value:
            mask = ir.Constant(ir.VectorType(i32, _LANES), [lane] * _LANES)
            return builder.shuffle_vector(v, undef, mask)

        def relu(v: ir.Value) -> ir.Value:
            return builder.select(builder.fcmp_ordered("<=", v, zero), zero, v)

        n1, n2 = HIDDEN_1 // _LANES, HIDDEN_2 // _LANES
        b1_vec = [load_vector(b1_ptr, p * _LANES) for p in range(n1)]
        h1 = [list(b1_vec) for _ in range(ROWS)]
        for k in range(MAX_FEATURES):
            weights = [load_vector(w1t_ptr, k * HIDDEN_1 + p * _LANES) for p in range(n1)]
            for r in range(ROWS):
                zk = builder.insert_element(undef, builder.load(
                    element(z_ptr, r * MAX_FEATURES + k)), ir.Constant(i32, 0))
                for p in range(n1):
                    h1[r][p] = builder.call(fma, [weights[p], splat(zk, 0), h1[r][p]])
        h1 = [[relu(v) for v in row] for row in h1]
        b2_vec = [load_vector(b2_ptr, q * _LANES) for q in range(n2)]
        h2 = [list(b2_vec) for _ in range(ROWS)]
        for j in range(HIDDEN_1):
            weights = [load_vector(w2t_ptr, j * HIDDEN_2 + q * _LANES) for q in range(n2)]
            for r in range(ROWS):
                hj = splat(h1[r][j // _LANES], j % _LANES)
                for q in range(n2):
                    h2[r][q] = builder.call(fma, [weights[q], hj, h2[r][q]])
        w3_vec = [load_vector(w3_ptr, q * _LANES) for q in range(n2)]
        for r in range(ROWS):
            total = builder.fmul(relu(h2[r][0]), w3_vec[0])
            for q in range(1, n2):
                total = builder.call(fma, [relu(h2[r][q]), w3_vec[q], total])
            value = builder.call(reduce_add, [ir.Constant(f32, 0.0), total],
                                 fastmath=("reassoc",))
            builder.store(value, element(out_ptr, r))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, fastmath=_FASTMATH)
def _hidden1(x: np.ndarray, i: int, mean: np.ndarray, inv_std: np.ndarray, w1t: np.ndarray,
             b1: np.ndarray, z: np.ndarray, h1: np.ndarray) -> None:
    """First layer of row ``i``: ``h1 = relu(b1 + w1 @ ((x[i] - mean) * inv_std))``."""
    for k in range(x.shape[1]):
        z[k] = (x[i, k] - mean[k]) * inv_std[k]
    for j in range(HIDDEN_1):
        s = b1[j]
        for k in range(MAX_FEATURES):
            s += w1t[k, j] * z[k]
        h1[j] = max(s, _ZERO)


@njit(cache=True)
def _check_inputs(x: np.ndarray, mean: np.ndarray, w1t: np.ndarray, w2t: np.ndarray,
                  out: np.ndarray) -> None:
    if x.shape[1] != mean.shape[0] or x.shape[1] > MAX_FEATURES:
        raise ValueError("feature count does not match the MLP parameters")
    if w1t.shape[0] != MAX_FEATURES or w1t.shape[1] != HIDDEN_1 or w2t.shape[0] != HIDDEN_1 \
            or w2t.shape[1] != HIDDEN_2:
        raise ValueError("MLP parameters are not packed (see kernels.mlp.pack_mlp)")
    if out.shape[0] != x.shape[0]:
        raise ValueError("output buffer length does not match the number of rows")


@njit(cache=True, fastmath=_FASTMATH)
def mlp_logits_into(
    x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray, out: np.ndarray,
) -> None:
    """Pre-sigmoid outputs of the network for a batch of feature rows.

    Args:
        x: float32 (n_rows, n_features) raw features (GeV for momenta).
        mean, inv_std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`
            (C-contiguous float32).
        out: float32 (n_rows,) output buffer for the logits.
    """
    _check_inputs(x, mean, w1t, w2t, out)
    n_rows, n_feat = x.shape
    # standardized rows, zero-padded to MAX_FEATURES; rows past the end stay finite
    z = np.zeros((ROWS, MAX_FEATURES), dtype=np.float32)
    block = np.empty(ROWS, dtype=np.float32)
    for start in range(0, n_rows, ROWS):
        m = min(ROWS, n_rows - start)
        for r in range(m):
            for k in range(n_feat):
                z[r, k] = (x[start + r, k] - mean[k]) * inv_std[k]
        _forward_block(z, w1t, b1, w2t, b2, w3, block)
        for r in range(m):
            out[start + r] = block[r] + b3[0]


@njit(cache=True, fastmath=_FASTMATH)
def mlp_logits_reference(
    x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray, out: np.ndarray,
) -> None:
    """:func:`mlp_logits_into` written as plain loops (no intrinsic): the test reference."""
    _check_inputs(x, mean, w1t, w2t, out)
    z = np.zeros(MAX_FEATURES, dtype=np.float32)
    h1 = np.empty(HIDDEN_1, dtype=np.float32)
    q = HIDDEN_1 // 4
    for i in range(x.shape[0]):
        _hidden1(x, i, mean, inv_std, w1t, b1, z, h1)
        s_out = b3[0]
        for o in range(HIDDEN_2):
            s0 = b2[o]
            s1 = _ZERO
            s2 = _ZERO
            s3 = _ZERO
            for j in range(q):  # four partial sums shorten the dependency chains
                s0 += w2t[j, o] * h1[j]
                s1 += w2t[j + q, o] * h1[j + q]
                s2 += w2t[j + 2 * q, o] * h1[j + 2 * q]
                s3 += w2t[j + 3 * q, o] * h1[j + 3 * q]
            s_out += w3[o] * max((s0 + s1) + (s2 + s3), _ZERO)
        out[i] = s_out


@njit(cache=True)
def mlp_forward(
    x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray,
) -> np.ndarray:
    """Sigmoid outputs of the network (the seed's ``Net.forward`` on standardized features).

    Args:
        x: float32 (n_rows, n_features) raw features, C-contiguous.
        mean, inv_std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`.

    Returns:
        float32 (n_rows,) outputs in [0, 1].
    """
    out = np.empty(x.shape[0], dtype=np.float32)
    mlp_logits_into(x, mean, inv_std, w1t, b1, w2t, b2, w3, b3, out)
    for i in range(out.shape[0]):
        out[i] = sigmoid(out[i])
    return out


@njit(cache=True)
def mlp_classify(
    x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, w1t: np.ndarray, b1: np.ndarray,
    w2t: np.ndarray, b2: np.ndarray, w3: np.ndarray, b3: np.ndarray,
) -> np.ndarray:
    """Classification ``round(output)`` (1 = signal-like, 0 = background-like) per row.

    Args:
        x: float32 (n_rows, n_features) raw features, C-contiguous.
        mean, inv_std, w1t, b1, w2t, b2, w3, b3: the packed parameters of :func:`pack_mlp`.

    Returns:
        int8 (n_rows,): 1 where the logit is > 0 (output > 0.5), else 0 (NaN gives 0).
    """
    logits = np.empty(x.shape[0], dtype=np.float32)
    mlp_logits_into(x, mean, inv_std, w1t, b1, w2t, b2, w3, b3, logits)
    out = np.empty(x.shape[0], dtype=np.int8)
    for i in range(out.shape[0]):
        out[i] = 1 if logits[i] > _ZERO else 0
    return out
