"""Shipped MLP weights: load, validate and save state_dicts plus the feature scaler.

Each region has two files in the model folder (default: this package's folder):

- ``mlp_<region>.pt``: the torch ``state_dict`` of :class:`models.net.Net` (keys ``fc1.weight``,
  ``fc1.bias``, ``fc2.weight``, ``fc2.bias``, ``fc3.weight``, ``fc3.bias``; float32), read
  without torch by a restricted unpickler (tensors and their storages only) or, for any other
  file, with ``torch.load(..., weights_only=True)``: no arbitrary object is ever unpickled;
- ``scaler_<region>.json``: the feature names, the standardization ``mean`` and ``std`` the
  network expects (features are fed as ``(x - mean) / std``), and how it was trained.

The seed's own networks load too, as they were: a folder with ``trained_model_<region>.pt``
(the seed's file names, each the ``state_dict`` of its ``Net``) and no ``mlp_``/``scaler_``
files gets an identity scaler (mean 0, std 1: the raw features in GeV, as the seed feeds
them), the features in the configured order (the seed's). A file written with
``torch.save(model)`` (a pickled module) is refused: save ``model.state_dict()`` instead.

:func:`load_weights` returns plain float32 numpy arrays validated against the architecture; a
missing file, a wrong key or tensor shape, or a feature-count mismatch raises
:class:`~agc_core.errors.ModelError` naming the file and the expected shape.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig
from agc_core.errors import ModelError
from agc_core.kernels.mlp import HIDDEN_1, HIDDEN_2
from agc_core.outputs import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent
SCALER_FORMAT = "agc-core-mlp-scaler/1"
PARAMETER_NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")
STATE_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")


def weights_path(region: str, model_dir: str | Path | None = None) -> Path:
    """Path of a region's state_dict file (``mlp_<region>.pt``)."""
    return Path(model_dir if model_dir is not None else MODEL_DIR) / f"mlp_{region}.pt"


def seed_weights_path(region: str, model_dir: str | Path | None = None) -> Path:
    """Path of the seed's own state_dict file of a region (``trained_model_<region>.pt``)."""
    return Path(model_dir if model_dir is not None else MODEL_DIR) / f"trained_model_{region}.pt"


def scaler_path(region: str, model_dir: str | Path | None = None) -> Path:
    """Path of a region's scaler file (``scaler_<region>.json``)."""
    return Path(model_dir if model_dir is not None else MODEL_DIR) / f"scaler_{region}.json"


def expected_shapes(n_features: int) -> dict[str, tuple[int, ...]]:
    """State_dict keys of the seed's network and their shapes for ``n_features`` inputs."""
    return dict(zip(STATE_KEYS, [(HIDDEN_1, n_features), (HIDDEN_1,), (HIDDEN_2, HIDDEN_1),
                                 (HIDDEN_2,), (1, HIDDEN_2), (1,)], strict=True))


def describe_shapes(n_features: int) -> str:
    """Human-readable list of the expected tensors, for error messages."""
    return ", ".join(f"{k} {tuple(v)}" for k, v in expected_shapes(n_features).items())


@dataclass(frozen=True, eq=False)
class MLPWeights:
    """The parameters of one region's network as float32 numpy arrays.

    Attributes:
        region: region name (``4j1b`` or ``4j2b``).
        features: feature names in input order.
        mean, std: (n,) standardization; the network sees ``(x - mean) / std``.
        w1, b1, w2, b2, w3, b3: layer weights and biases in torch's layout:
            (32, n), (32,), (64, 32), (64,), (1, 64), (1,).
        source: the state_dict file it was loaded from (None if built in memory).
        metadata: training information stored in the scaler file.
    """

    region: str
    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray
    source: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return len(self.features)

    def parameters(self) -> tuple[np.ndarray, ...]:
        """``(w1, b1, w2, b2, w3, b3)``."""
        return tuple(getattr(self, name) for name in PARAMETER_NAMES)

    def state_dict(self) -> dict[str, Any]:
        """The torch state_dict of :class:`models.net.Net` (imports torch)."""
        import torch

        return {k: torch.from_numpy(np.array(v, dtype=np.float32))
                for k, v in zip(STATE_KEYS, self.parameters(), strict=True)}


def _float32_array(value: Any, shape: tuple[int, ...], what: str, path: Path) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != shape:
        raise ModelError(f"{path}: {what} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{path}: {what} contains NaN or infinite values")
    return arr


def read_scaler(path: Path, region: str, features: Sequence[str] | None) -> dict[str, Any]:
    """Read and validate a scaler JSON file.

    Args:
        path: the ``scaler_<region>.json`` file.
        region: the region it must describe.
        features: the feature names the analysis computes (None: accept the file's).

    Returns:
        ``{"features": tuple, "mean": ndarray, "std": ndarray, "metadata": dict}``.

    Raises:
        ModelError: missing or unreadable file, wrong format, region or features, bad values.
    """
    n_exp = len(features) if features is not None else None
    shape_txt = f" with 'features', 'mean' and 'std' of length {n_exp}" if n_exp else ""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: MLP scaler file not found (expected a JSON file{shape_txt} "
                         f"for region {region})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read MLP scaler file ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != SCALER_FORMAT:
        raise ModelError(f"{path}: not an MLP scaler file (expected 'format': "
                         f"'{SCALER_FORMAT}')")
    if raw.get("region") != region:
        raise ModelError(f"{path}: scaler is for region {raw.get('region')!r}, expected "
                         f"{region!r}")
    names = raw.get("features")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{path}: key 'features' must be a list of feature names")
    if features is not None and tuple(names) != tuple(features):
        raise ModelError(f"{path}: scaler features {names} do not match the region's "
                         f"{len(features)} features {list(features)} (expected shape "
                         f"({len(features)},))")
    n = len(names)
    try:
        mean = _float32_array(raw.get("mean"), (n,), "'mean'", path)
        std = _float32_array(raw.get("std"), (n,), "'std'", path)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: 'mean' and 'std' must be lists of {n} numbers") from exc
    if not np.all(std > 0):
        raise ModelError(f"{path}: 'std' must be positive")
    metadata = raw.get("training", {})
    return {"features": tuple(names), "mean": mean, "std": std,
            "metadata": metadata if isinstance(metadata, dict) else {}}


#: torch storage classes of a state_dict the numpy reader decodes (others go through torch)
_NUMPY_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64}


class _NotPlain(Exception):
    """The file is not a plain zip state_dict of float tensors: let torch read it."""


def _read_plain_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a torch zip-format state_dict of float32/float64 tensors without importing torch.

    Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the storage
    classes of :data:`_NUMPY_STORAGES` are resolved (``weights_only`` in spirit: no other
    global is ever loaded); anything else raises :class:`_NotPlain` and the caller falls back to
    ``torch.load(weights_only=True)``, which gives torch's own messages.
    """
    import collections
    import pickle
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise _NotPlain(str(exc)) from exc
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise _NotPlain("no single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        order = (archive.read(prefix + "byteorder").decode().strip()
                 if prefix + "byteorder" in names else "little")
        if order not in ("little", "big"):
            raise _NotPlain(f"byte order {order!r}")
        endian = "<" if order == "little" else ">"
        storages: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: Any) -> np.ndarray:
            if key not in storages:
                raw = archive.read(f"{prefix}data/{key}")
                storages[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(endian))
            return storages[key]

        def rebuild(data: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
            size, stride = tuple(size), tuple(stride)
            need = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
            if offset < 0 or (all(size) and need > data.size):
                raise _NotPlain("tensor outside its storage")
            view = np.lib.stride_tricks.as_strided(
                data[offset:], shape=size, strides=[s * data.itemsize for s in stride])
            return np.array(view, dtype=data.dtype.newbyteorder("="))

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if module == "torch" and name in _NUMPY_STORAGES:
                    return _NUMPY_STORAGES[name]
                raise _NotPlain(f"global {module}.{name}")

            def persistent_load(self, pid: Any) -> Any:
                if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                        or not isinstance(pid[1], type)):
                    raise _NotPlain(f"persistent id {pid!r}")
                return storage(str(pid[2]), pid[1])

        try:
            state = Unpickler(io.BytesIO(archive.read(pkl[0]))).load()
        except _NotPlain:
            raise
        except Exception as exc:  # a damaged pickle or archive: torch names it
            raise _NotPlain(str(exc)) from exc
    if not isinstance(state, Mapping) or not all(
            isinstance(v, np.ndarray) for v in state.values()):
        raise _NotPlain("not a mapping of tensors")
    return dict(state)


def _torch_state_dict(path: Path) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)``, entries that are tensors turned into numpy arrays."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("; a pickled module (torch.save(model)) is not loaded: save "
                "model.state_dict() instead" if "weights_only" in str(exc) else "")
        raise ModelError(f"{path}: cannot load MLP weights as a state_dict ({first}){hint}"
                         ) from exc
    if not isinstance(state, Mapping):
        return state
    return {k: v.detach().to(torch.float32).numpy() if isinstance(v, torch.Tensor) else v
            for k, v in state.items()}


def read_state_dict(path: Path, n_features: int) -> tuple[np.ndarray, ...]:
    """Read a state_dict file safely and check it against the seed's architecture.

    A plain zip-format state_dict of float tensors (what ``torch.save(model.state_dict())``
    writes) is decoded with numpy alone, so loading the shipped weights does not import torch
    (about 1 s); any other file goes through ``torch.load(weights_only=True)``.

    Args:
        path: the ``mlp_<region>.pt`` file.
        n_features: number of network inputs expected.

    Returns:
        ``(w1, b1, w2, b2, w3, b3)`` as float32 numpy arrays.

    Raises:
        ModelError: missing or unreadable file, missing or unexpected key, wrong shape,
            non-finite values; the message names the file and the expected shapes.
    """
    expected = expected_shapes(n_features)
    if not path.is_file():
        raise ModelError(f"{path}: MLP weights file not found (expected a torch state_dict "
                         f"with {describe_shapes(n_features)})")
    try:
        state: Mapping[str, Any] = _read_plain_state_dict(path)
    except _NotPlain:
        state = _torch_state_dict(path)
    if not isinstance(state, Mapping):
        raise ModelError(f"{path}: not a state_dict (expected {describe_shapes(n_features)})")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise ModelError(f"{path}: state_dict keys do not match the network (missing "
                         f"{missing}, unexpected {extra}; expected "
                         f"{describe_shapes(n_features)})")
    arrays = []
    for key, shape in expected.items():
        tensor = state[key]
        if not isinstance(tensor, np.ndarray):
            raise ModelError(f"{path}: entry '{key}' is not a tensor (expected shape {shape})")
        if tuple(tensor.shape) != shape:
            hint = ""
            if key == "fc1.weight" and tensor.ndim == 2 and tensor.shape[0] == shape[0]:
                hint = (f"; the network takes {tensor.shape[1]} features but the region has "
                        f"{n_features}")
            raise ModelError(f"{path}: tensor '{key}' has shape {tuple(tensor.shape)}, "
                             f"expected {shape}{hint}")
        arrays.append(_float32_array(tensor.astype(np.float32, copy=False), shape,
                                     f"tensor '{key}'", path))
    return tuple(arrays)


def load_weights(region: str, features: Sequence[str] | None = None,
                 model_dir: str | Path | None = None) -> MLPWeights:
    """Load and validate one region's network and scaler.

    Args:
        region: region name.
        features: the feature names the analysis feeds (from ``cfg.regions``); None accepts
            those stored in the scaler file.
        model_dir: folder with the files; default: the shipped weights in ``models/``.

    Returns:
        The validated weights.

    Raises:
        ModelError: naming the file and the expected shape (see :func:`read_state_dict`,
            :func:`read_scaler`).
    """
    spath = scaler_path(region, model_dir)
    wpath = weights_path(region, model_dir)
    seed_path = seed_weights_path(region, model_dir)
    if (model_dir is not None and features is not None and not wpath.is_file()
            and not spath.is_file() and seed_path.is_file()):
        return load_seed_weights(region, features, seed_path)
    if features is not None and not wpath.is_file():
        # report the weights file first: it is what a user most likely forgot to copy
        read_state_dict(wpath, len(features))
    scaler = read_scaler(spath, region, features)
    params = read_state_dict(wpath, len(scaler["features"]))
    log.debug("loaded MLP weights for %s from %s", region, wpath)
    return MLPWeights(region, scaler["features"], scaler["mean"], scaler["std"], *params,
                      source=wpath, metadata=scaler["metadata"])


def load_seed_weights(region: str, features: Sequence[str], path: Path) -> MLPWeights:
    """The seed's network from its state_dict, with an identity scaler (raw features).

    Raises:
        ModelError: as :func:`read_state_dict`.
    """
    params = read_state_dict(path, len(features))
    n = len(features)
    log.info("%s: the seed's network for %s on raw features (identity scaler)", path, region)
    return MLPWeights(region, tuple(features), np.zeros(n, np.float32), np.ones(n, np.float32),
                      *params, source=path,
                      metadata={"origin": "seed state_dict", "scaler": "identity"})


def load_all_weights(cfg: AnalysisConfig, model_dir: str | Path | None = None
                     ) -> dict[str, MLPWeights]:
    """Load the networks of every region of the configuration, checked against its features."""
    return {r.name: load_weights(r.name, r.features, model_dir) for r in cfg.regions}


def _json_number(x: float) -> float:
    # float32 -> shortest float64 repr that round-trips back to the same float32
    return float(np.float32(x)) if math.isfinite(x) else x


def save_weights(weights: MLPWeights, model_dir: str | Path) -> tuple[Path, Path]:
    """Write a region's state_dict and scaler atomically (temporary name + rename).

    Args:
        weights: the network to save.
        model_dir: target folder (created if needed).

    Returns:
        (state_dict path, scaler path).
    """
    import torch

    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    wpath = weights_path(weights.region, folder)
    buffer = io.BytesIO()  # a file object: the archive's inner names do not depend on the path
    torch.save(weights.state_dict(), buffer)
    with atomic_path(wpath) as tmp:
        tmp.write_bytes(buffer.getvalue())
    scaler = {
        "format": SCALER_FORMAT,
        "region": weights.region,
        "features": list(weights.features),
        "mean": [_json_number(v) for v in weights.mean.tolist()],
        "std": [_json_number(v) for v in weights.std.tolist()],
        "training": dict(weights.metadata),
    }
    spath = write_text_atomic(scaler_path(weights.region, folder),
                              json.dumps(scaler, indent=1) + "\n")
    log.info("wrote %s and %s", wpath, spath)
    return wpath, spath
