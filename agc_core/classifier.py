"""Signal/background classifiers the chunk processor calls: numba kernels or the torch network.

Both implement the contract of ``docs/contracts.md``: ``classify(region, features)`` with
float32 features of shape (n, n_features of the region, in ``cfg.regions`` order) returns an
int8 array of 0 (background-like) / 1 (signal-like), the seed's ``round(sigmoid output)``.
They hold only numpy arrays, so they pickle cheaply to worker processes; the torch modules
of :class:`TorchMLPClassifier` are built lazily in the process that uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.errors import ConfigError, ModelError
from agc_core.kernels.mlp import mlp_classify, mlp_forward, pack_mlp
from agc_core.models.weights import MLPWeights, load_all_weights

log = logging.getLogger(__name__)

#: the classifiers a run can use (``--inference``): the MLP in numba kernels or in torch, or none
INFERENCE_KINDS = ("numba", "torch", "none")


class Classifier(Protocol):
    """Anything that classifies feature rows of a region into 0 (background) / 1 (signal)."""

    def classify(self, region: str, features: np.ndarray) -> np.ndarray: ...


class ConstantClassifier:
    """``--inference none``: every event is classified as ``value`` (0: background)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """An array of ``value`` with one entry per feature row."""
        return np.full(len(features), self.value, dtype=np.int64)


def _check_features(weights: Mapping[str, MLPWeights], region: str,
                    features: np.ndarray) -> np.ndarray:
    """Validate a feature batch against a region's network; return it float32 C-contiguous."""
    if region not in weights:
        raise ModelError(f"no MLP for region {region!r} (have {sorted(weights)})")
    w = weights[region]
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != w.n_features:
        raise ModelError(f"{w.source or 'MLP ' + region}: features of shape {x.shape} given, "
                         f"expected (n, {w.n_features}) for region {region} "
                         f"({', '.join(w.features)})")
    return np.ascontiguousarray(x, dtype=np.float32)


class NumbaMLPClassifier:
    """Inference with the numba kernels of :mod:`kernels.mlp` (the default)."""

    def __init__(self, weights: Mapping[str, MLPWeights]) -> None:
        """Pack each region's network for the kernels.

        Args:
            weights: region name -> validated weights (:func:`models.weights.load_weights`).
        """
        self.weights = dict(weights)
        self._packed = {region: pack_mlp(w.mean, w.std, *w.parameters())
                        for region, w in self.weights.items()}

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """Classes 0/1 (int8, length n) of float32 feature rows of shape (n, n_features)."""
        x = _check_features(self.weights, region, features)
        return mlp_classify(x, *self._packed[region])

    def predict(self, region: str, features: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (float32, length n) of feature rows of shape (n, n_features)."""
        x = _check_features(self.weights, region, features)
        return mlp_forward(x, *self._packed[region])


class TorchMLPClassifier:
    """Inference with the torch network exactly as the seed does (``--inference torch``).

    The seed's ``net(torch.FloatTensor(features)).reshape(-1).detach().numpy().round()``, on
    standardized features ``(x - mean) / std`` computed in float32 torch.
    """

    def __init__(self, weights: Mapping[str, MLPWeights], threads: int | None = 1) -> None:
        """Keep the weights; the torch modules are built on first use.

        Args:
            weights: region name -> validated weights.
            threads: torch intra-op threads to set when the modules are built (1 suits one
                process per core); None leaves torch's setting alone.
        """
        self.weights = dict(weights)
        self.threads = threads
        self._nets: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_nets"] = None  # torch modules are rebuilt in the receiving process
        return state

    def _net(self, region: str) -> Any:
        if self._nets is None:
            import torch

            from agc_core.models.net import Net

            if self.threads is not None:
                torch.set_num_threads(self.threads)
            nets = {}
            for name, w in self.weights.items():
                net = Net(w.n_features)
                net.load_state_dict(w.state_dict())
                net.eval()
                nets[name] = (net, torch.from_numpy(w.mean.copy()), torch.from_numpy(w.std.copy()))
            self._nets = nets
        return self._nets[region]

    def predict(self, region: str, features: np.ndarray) -> np.ndarray:
        """Sigmoid outputs (float32, length n) of feature rows of shape (n, n_features)."""
        import torch

        x = _check_features(self.weights, region, features)
        net, mean, std = self._net(region)
        with torch.no_grad():
            z = (torch.from_numpy(x) - mean) / std
            return net(z).reshape(-1).numpy()

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """Classes 0/1 (int8, length n): the seed's numpy ``round`` of the outputs."""
        return self.predict(region, features).round().astype(np.int8)


def load_classifier(kind: str = "numba", model_dir: str | Path | None = None,
                    cfg: AnalysisConfig | None = None
                    ) -> NumbaMLPClassifier | TorchMLPClassifier | ConstantClassifier:
    """Load the networks of every region and wrap them in a classifier.

    Args:
        kind: ``"numba"`` (kernels, default), ``"torch"`` (the seed's torch inference) or
            ``"none"`` (every event classified 0, no weights read).
        model_dir: folder with ``mlp_<region>.pt`` and ``scaler_<region>.json``, or with the
            seed's own ``trained_model_<region>.pt`` state_dicts (raw features, identity
            scaler: :mod:`agc_core.models.weights`); default: the weights shipped in
            ``models/``.
        cfg: analysis configuration (regions and feature names); default: the packaged one.

    Returns:
        A classifier with ``classify(region, features)``.

    Raises:
        ConfigError: unknown kind.
        ModelError: missing or mismatched weights (naming file and shape).
    """
    if kind not in INFERENCE_KINDS:
        raise ConfigError(f"unknown --inference '{kind}' (choose from "
                          f"{', '.join(INFERENCE_KINDS)})")
    if kind == "none":
        return ConstantClassifier(0)
    cfg = cfg if cfg is not None else load_analysis_config()
    weights = load_all_weights(cfg, model_dir)
    log.debug("MLP %s classifier from %s", kind, model_dir or "shipped weights")
    if kind == "torch":
        return TorchMLPClassifier(weights)
    return NumbaMLPClassifier(weights)
