"""Train the per-region signal/background MLPs on features extracted with our kernels.

Recipe (improving on the seed's plain SGD + MSE on raw GeV inputs): features standardized
with the training split's mean/std (stored beside the weights), binary cross-entropy on the
pre-sigmoid output (``BCEWithLogitsLoss``; the shipped network's forward is still the seed's
sigmoid), Adam, a held-out validation split, early stopping on the validation loss (the best
epoch's weights are kept), fixed seeds and deterministic torch algorithms.

Event weights: within each class, events carry their physical weight ``xsec / n_events`` of
their sample (so W+jets vs single top enter the background in their real proportions); then
the two classes are rescaled to equal total weight ("balanced"). The network then estimates
the likelihood ratio for equal priors and ``round(output)`` splits the phase space where
signal and background densities are equal, which keeps both the signal and background
accuracies high instead of labelling nearly every 4j2b event as ttbar. The ROC AUC does not
depend on the class totals, so the reported AUC is the physical (cross-section weighted) one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.errors import InputError
from agc_core.models.weights import MLPWeights, save_weights

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("mlp_training")
# Without --fileset the networks train on events of the synthetic generator with this seed,
# generated in memory, as many per sample as the embedded dataset has: the embedded dataset
# (``cfg.dataset.seed``) stays held out, so the accuracy ``run`` reports on it is measured on
# events the networks never saw.
TRAINING_DATA_SEED = 2015
# Events generated in addition, for training statistics: W+jets passes the selection ~100x
# less often than ttbar (0.13 % in 4j2b), so 200k events leave a few hundred training events
# (and a validation estimate dominated by ~65 events) for half of the 4j2b background.
EMBEDDED_EXTRA_EVENTS: Mapping[str, int] = {"wjets": 1_800_000}
PLOT_NAME = "training.png"
SUMMARY_NAME = "training_summary.json"


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: minibatch size.
        learning_rate: optimizer step size.
        patience: stop after this many epochs without a lower validation loss.
        val_fraction: fraction of the events held out for validation.
        seed: seed of the split, the initialization and the shuffling.
        threads: torch intra-op threads while training (fixed for reproducibility).
        standardize: feed ``(x - mean) / std`` (False: raw GeV inputs, as the seed).
        loss: ``"bce"`` (BCE with logits) or ``"mse"`` (the seed's MSE on the sigmoid).
        optimizer: ``"adam"`` or ``"sgd"`` (the seed's).
    """

    epochs: int = 100
    batch_size: int = 1024
    learning_rate: float = 2e-3
    patience: int = 12
    val_fraction: float = 0.25
    seed: int = 1
    threads: int = 1
    standardize: bool = True
    loss: str = "bce"
    optimizer: str = "adam"

    @classmethod
    def seed_recipe(cls, **overrides: Any) -> TrainSettings:
        """The seed's recipe for comparison: SGD, MSE, raw GeV inputs."""
        base = {"standardize": False, "loss": "mse", "optimizer": "sgd",
                "learning_rate": 0.01}
        return cls(**{**base, **overrides})


@dataclass(frozen=True)
class LabelledFeatures:
    """Features of selected events with their labels and physical weights.

    Attributes:
        features: float32 (n, n_features).
        labels: int8 (n,), 1 for the signal process, 0 otherwise.
        weights: float64 (n,), ``xsec / n_events_read`` of the event's sample (positive).
        process: int16 (n,), index into ``processes``.
        processes: process names.
    """

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    process: np.ndarray
    processes: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of events."""
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class RegionResult:
    """Outcome of training one region's network.

    Attributes:
        region: region name.
        weights: the trained network (best validation epoch) and scaler.
        n_train, n_val: events in the training and validation splits.
        epochs_run: epochs actually run (early stopping).
        best_epoch: the epoch (1-based) whose weights were kept.
        train_loss, val_loss: weighted loss per epoch (val: on the balanced validation split).
        val_accuracy: balanced accuracy at output > 0.5 on the validation split.
        val_accuracy_xsec: accuracy at output > 0.5 with cross-section weights (the seed's
            "total accuracy" definition).
        val_accuracy_process: per-process accuracy (cross-section weighted) on validation.
        val_auc: ROC AUC on the validation split (cross-section weighted).
        roc_fpr, roc_tpr: validation ROC curve (background / signal efficiencies).
        seconds: wall time of the training.
    """

    region: str
    weights: MLPWeights
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    val_accuracy: float
    val_accuracy_xsec: float
    val_accuracy_process: Mapping[str, float]
    val_auc: float
    roc_fpr: np.ndarray = field(repr=False)
    roc_tpr: np.ndarray = field(repr=False)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures of merit."""
        return {
            "region": self.region, "n_train": self.n_train, "n_val": self.n_val,
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
            "val_loss": round(self.val_loss[self.best_epoch - 1], 6),
            "val_accuracy": round(self.val_accuracy, 5),
            "val_accuracy_xsec": round(self.val_accuracy_xsec, 5),
            "val_accuracy_process": {k: round(v, 5)
                                     for k, v in self.val_accuracy_process.items()},
            "val_auc": round(self.val_auc, 5), "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class TrainingReport:
    """Outcome of :func:`train`: per-region results and the files written."""

    results: Mapping[str, RegionResult]
    files: tuple[Path, ...]


# ---------------------------------------------------------------------------------------------
# metrics


def roc_curve(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC curve (tied scores grouped), from (0, 0) to (1, 1).

    Args:
        scores: (n,) classifier outputs, larger = more signal-like.
        labels: (n,) 1 for signal, 0 for background.
        weights: (n,) non-negative event weights (default 1).

    Returns:
        (fpr, tpr): background and signal efficiencies above each distinct threshold,
        float64, starting with 0 and ending with 1.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(np.where(y, w, 0.0))
    fp = np.cumsum(np.where(y, 0.0, w))
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, int)
    tp, fp = np.r_[0.0, tp[last]], np.r_[0.0, fp[last]]
    ps, ns = tp[-1], fp[-1]
    if ps <= 0 or ns <= 0:
        raise ValueError("ROC curve needs signal and background events with positive weight")
    return fp / ns, tp / ps


def roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
            ) -> float:
    """Area under the weighted ROC curve (trapezoids; ties count one half)."""
    fpr, tpr = roc_curve(scores, labels, weights)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def weighted_accuracy(predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Weighted fraction of events whose 0/1 prediction equals the label."""
    correct = np.asarray(predicted).astype(np.int64) == np.asarray(labels).astype(np.int64)
    total = float(np.sum(weights))
    return float(np.sum(np.where(correct, weights, 0.0)) / total) if total > 0 else float("nan")


def balanced_weights(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rescale weights so that each class has total weight n / 2 (mean weight 1)."""
    y = np.asarray(labels).astype(bool)
    w = np.asarray(weights, dtype=np.float64)
    out = np.empty_like(w)
    half = w.size / 2.0
    for cls in (True, False):
        total = w[y == cls].sum()
        if total <= 0:
            raise ValueError(f"no {'signal' if cls else 'background'} events with positive "
                             f"weight")
        out[y == cls] = w[y == cls] * (half / total)
    return out


# ---------------------------------------------------------------------------------------------
# training


@contextlib.contextmanager
def _torch_state(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the duration of a training."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) index split, reproducible from ``seed``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_scaler(features: np.ndarray, standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32; std of a constant feature is set to 1).

    With ``standardize=False`` the identity scaler (mean 0, std 1) is returned.
    """
    n_feat = features.shape[1]
    if not standardize:
        return np.zeros(n_feat, np.float32), np.ones(n_feat, np.float32)
    x = features.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[~(std > 0)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _loss_fn(kind: str) -> Any:
    import torch

    if kind == "bce":
        bce = torch.nn.BCEWithLogitsLoss(reduction="none")
        return lambda logits, y: bce(logits, y)
    if kind == "mse":
        return lambda logits, y: (torch.sigmoid(logits) - y) ** 2
    raise ValueError(f"unknown loss {kind!r}; choose 'bce' or 'mse'")


def _optimizer(kind: str, params: Any, lr: float) -> Any:
    import torch

    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {kind!r}; choose 'adam' or 'sgd'")


def _weighted_loss(net: Any, loss: Any, x: Any, y: Any, w: Any, batch: int = 65536) -> float:
    import torch

    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            sl = slice(start, start + batch)
            total += float((loss(net.logits(x[sl]).reshape(-1), y[sl]) * w[sl]).sum())
    return total / float(w.sum())


def _outputs(net: Any, x: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(x).reshape(-1).numpy()


def train_region(data: LabelledFeatures, region: str, feature_names: Sequence[str],
                 settings: TrainSettings | None = None) -> RegionResult:
    """Train one region's network on labelled, weighted features.

    Args:
        data: features, labels (1 = signal), physical weights and processes of the events.
        region: region name (stored with the weights).
        feature_names: names of the feature columns (stored in the scaler).
        settings: hyper-parameters (default :class:`TrainSettings`).

    Returns:
        The result with the best-validation-loss weights.

    Raises:
        ValueError: inconsistent shapes, too few events, or a class missing.
    """
    import torch

    from agc_core.models.net import Net

    settings = settings or TrainSettings()
    x_all = np.asarray(data.features, dtype=np.float32)
    if x_all.ndim != 2 or x_all.shape[1] != len(feature_names):
        raise ValueError(f"features of shape {x_all.shape} do not match {len(feature_names)} "
                         f"feature names")
    if not (data.labels.shape == data.weights.shape == (x_all.shape[0],)):
        raise ValueError("features, labels and weights must have the same length")
    if x_all.shape[0] < 4:
        raise ValueError(f"region {region}: too few events to train ({x_all.shape[0]})")
    t0 = time.perf_counter()
    i_train, i_val = split_indices(x_all.shape[0], settings.val_fraction, settings.seed)
    y_all = data.labels.astype(np.float32)
    w_train = balanced_weights(data.labels[i_train], data.weights[i_train])
    w_val = balanced_weights(data.labels[i_val], data.weights[i_val])
    mean, std = fit_scaler(x_all[i_train], settings.standardize)
    z_all = (x_all - mean) / std

    with _torch_state(settings.threads):
        torch.manual_seed(settings.seed)
        gen = torch.Generator().manual_seed(settings.seed)
        net = Net(x_all.shape[1])
        opt = _optimizer(settings.optimizer, net.parameters(), settings.learning_rate)
        loss = _loss_fn(settings.loss)
        xt, yt = torch.from_numpy(z_all[i_train]), torch.from_numpy(y_all[i_train])
        wt = torch.from_numpy(w_train.astype(np.float32))
        xv, yv = torch.from_numpy(z_all[i_val]), torch.from_numpy(y_all[i_val])
        wv = torch.from_numpy(w_val.astype(np.float32))
        train_hist: list[float] = []
        val_hist: list[float] = []
        best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
        for epoch in range(1, settings.epochs + 1):
            net.train()
            perm = torch.randperm(xt.shape[0], generator=gen)
            run, run_w = 0.0, 0.0
            for start in range(0, xt.shape[0], settings.batch_size):
                idx = perm[start:start + settings.batch_size]
                wb = wt[idx]
                per_event = loss(net.logits(xt[idx]).reshape(-1), yt[idx]) * wb
                batch_loss = per_event.sum() / wb.sum().clamp_min(1e-12)
                opt.zero_grad()
                batch_loss.backward()
                opt.step()
                run += float(per_event.detach().sum())
                run_w += float(wb.sum())
            net.eval()
            train_hist.append(run / run_w)
            val_hist.append(_weighted_loss(net, loss, xv, yv, wv))
            log.debug("%s epoch %d: train loss %.5f, val loss %.5f", region, epoch,
                      train_hist[-1], val_hist[-1])
            if val_hist[-1] < best[0]:
                best = (val_hist[-1], epoch, {k: v.clone() for k, v in net.state_dict().items()})
            elif epoch - best[1] >= settings.patience:
                break
        net.load_state_dict(best[2])
        net.eval()
        out_val = _outputs(net, xv)

    pred = out_val.round()  # the seed's classification: numpy rounding, 0.5 -> 0
    labels_val = data.labels[i_val]
    phys_val = data.weights[i_val]
    per_process = {}
    for ip, name in enumerate(data.processes):
        sel = data.process[i_val] == ip
        if np.any(sel):
            per_process[name] = weighted_accuracy(pred[sel], labels_val[sel], phys_val[sel])
    fpr, tpr = roc_curve(out_val, labels_val, phys_val)
    state = {k: v.detach().numpy().copy() for k, v in best[2].items()}
    weights = MLPWeights(
        region=region, features=tuple(feature_names), mean=mean, std=std,
        w1=state["fc1.weight"], b1=state["fc1.bias"], w2=state["fc2.weight"],
        b2=state["fc2.bias"], w3=state["fc3.weight"], b3=state["fc3.bias"],
    )
    result = RegionResult(
        region=region, weights=weights, n_train=int(i_train.size), n_val=int(i_val.size),
        epochs_run=len(val_hist), best_epoch=best[1], train_loss=tuple(train_hist),
        val_loss=tuple(val_hist),
        val_accuracy=weighted_accuracy(pred, labels_val, w_val),
        val_accuracy_xsec=weighted_accuracy(pred, labels_val, phys_val),
        val_accuracy_process=per_process,
        val_auc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        roc_fpr=fpr, roc_tpr=tpr, seconds=time.perf_counter() - t0,
    )
    log.info("%s: %d train / %d val events, %d epochs (best %d), val accuracy %.4f, "
             "ROC AUC %.4f", region, result.n_train, result.n_val, result.epochs_run,
             result.best_epoch, result.val_accuracy, result.val_auc)
    return result


# ---------------------------------------------------------------------------------------------
# data


def collect_features(fileset: str | Path, cfg: AnalysisConfig, max_events_per_sample: int | None
                     = None, seed: int | None = None,
                     extra_events: Mapping[str, int] | None = None, extra_first_file: int = 0
                     ) -> dict[str, LabelledFeatures]:
    """Run our kernels over the nominal samples of a fileset and collect the MLP features.

    Args:
        fileset: fileset JSON (AGC format).
        cfg: analysis configuration (signal process, regions, branches).
        max_events_per_sample: read at most this many events per sample (from its first
            files); None reads everything.
        seed: JER seed passed to the feature extraction (features use nominal kinematics,
            so it does not matter); default: the dataset seed.
        extra_events: process -> events of its nominal sample generated in memory by the
            synthetic generator (dataset seed, file indices from ``extra_first_file`` on) and
            added to the ones read; the sample's weight becomes ``xsec / (read + generated)``.
        extra_first_file: first file index of the generated events (the number of files per
            sample of the dataset, so that they differ from the files' events).

    Returns:
        Region name -> labelled features of all selected events.

    Raises:
        InputError: unreadable fileset or files, or no events selected in a region.
    """
    from agc_core import io, processor
    from agc_core.fileset import load_fileset

    seed = cfg.dataset.seed if seed is None else seed
    samples = [s for s in load_fileset(fileset, cfg) if s.variation == "nominal"]
    processes = tuple(dict.fromkeys(s.process for s in samples))
    parts: dict[str, list[tuple[np.ndarray, float, int, int]]] = {r.name: [] for r in cfg.regions}
    for sample in samples:
        budget = max_events_per_sample if max_events_per_sample is not None else -1
        n_read, n_norm = 0, 0.0
        sample_parts: dict[str, list[np.ndarray]] = {r.name: [] for r in cfg.regions}
        for entry in sample.files:
            if budget == 0:
                break
            stop = io.num_entries(entry.path, cfg.dataset.tree)
            if budget > 0:
                stop = min(stop, budget)
            chunk = io.read_chunk(entry.path, cfg.analysis_branches, 0, stop,
                                  tree=cfg.dataset.tree)
            info = processor.SampleInfo(sample.process, sample.variation, sample.sample_id,
                                        entry.file_id, sample.xsec_weight)
            feats = processor.compute_features(chunk, info, cfg, seed)
            for region, arr in feats.items():
                sample_parts[region].append(np.asarray(arr, dtype=np.float32))
            n_read += chunk.n_events
            # a generator-filtered file's entries stand for its nevts generated events
            n_norm += chunk.n_events * entry.nevts / max(entry.expected_entries, 1)
            if budget > 0:
                budget -= chunk.n_events
        n_extra = (extra_events or {}).get(sample.process, 0)
        if n_extra > 0:
            info = processor.SampleInfo(sample.process, sample.variation, sample.sample_id,
                                        extra_first_file, sample.xsec_weight)
            for feats, n_gen in _generated_features(sample.process, n_extra, extra_first_file,
                                                    info, cfg, seed, cfg.dataset.seed):
                for region, arr in feats.items():
                    sample_parts[region].append(np.asarray(arr, dtype=np.float32))
                n_norm += n_gen
            n_read += n_extra
        if n_read == 0:
            continue
        _add_sample(parts, sample_parts, sample.process, sample.xsec / n_norm, processes, cfg)
        log.info("%s: %d events read, selected %s", sample.process, n_read,
                 {r: int(sum(a.shape[0] for a in v)) for r, v in sample_parts.items()})
    return _labelled(parts, processes, str(fileset))


def generated_features(cfg: AnalysisConfig, data_seed: int, events_per_sample: int,
                       extra_events: Mapping[str, int] | None = None
                       ) -> dict[str, LabelledFeatures]:
    """MLP features of nominal events generated in memory by the synthetic generator.

    Args:
        cfg: analysis configuration (processes, signal process, regions).
        data_seed: the generator seed (not the embedded dataset's, to keep it held out).
        events_per_sample: events of every process's nominal sample.
        extra_events: process -> events generated in addition (for training statistics).

    Returns:
        Region name -> labelled features of all selected events.

    Raises:
        InputError: no events selected in a region.
    """
    from agc_core import processor

    processes = tuple(p for p, v in cfg.samples if v == "nominal")
    parts: dict[str, list[tuple[np.ndarray, float, int, int]]] = {r.name: [] for r in cfg.regions}
    for process in processes:
        n = events_per_sample + (extra_events or {}).get(process, 0)
        info = processor.SampleInfo(process, "nominal", cfg.samples.index((process, "nominal")),
                                    0, cfg.xsec_pb[process] * cfg.luminosity_pb / n)
        sample_parts: dict[str, list[np.ndarray]] = {r.name: [] for r in cfg.regions}
        n_gen = 0  # more than n for a generator-filtered process (W+jets)
        for feats, n_block in _generated_features(process, n, 0, info, cfg, data_seed,
                                                  data_seed):
            for region, arr in feats.items():
                sample_parts[region].append(np.asarray(arr, dtype=np.float32))
            n_gen += n_block
        _add_sample(parts, sample_parts, process, cfg.xsec_pb[process] / n_gen, processes, cfg)
        log.info("%s: %d events generated (seed %d), selected %s", process, n_gen, data_seed,
                 {r: int(sum(a.shape[0] for a in v)) for r, v in sample_parts.items()})
    return _labelled(parts, processes, f"generator seed {data_seed}")


def _add_sample(parts: dict[str, list[tuple[np.ndarray, float, int, int]]],
                sample_parts: Mapping[str, list[np.ndarray]], process: str, weight: float,
                processes: tuple[str, ...], cfg: AnalysisConfig) -> None:
    """Append one sample's selected features (with weight, label, process index) per region."""
    label = int(process == cfg.signal_process)
    for region, arrs in sample_parts.items():
        x = np.concatenate(arrs) if arrs else np.zeros((0, 0), np.float32)
        parts[region].append((x, weight, label, processes.index(process)))


def _labelled(parts: Mapping[str, list[tuple[np.ndarray, float, int, int]]],
              processes: tuple[str, ...], what: str) -> dict[str, LabelledFeatures]:
    """Concatenate the samples' parts into one LabelledFeatures per region."""
    out = {}
    for region, items in parts.items():
        items = [it for it in items if it[0].shape[0] > 0]
        if not items:
            raise InputError(f"{what}: no selected events in region {region}")
        out[region] = LabelledFeatures(
            features=np.concatenate([x for x, *_ in items]),
            labels=np.concatenate([np.full(x.shape[0], lab, np.int8) for x, _, lab, _ in items]),
            weights=np.concatenate([np.full(x.shape[0], w) for x, w, _, _ in items]),
            process=np.concatenate([np.full(x.shape[0], p, np.int16) for x, _, _, p in items]),
            processes=processes,
        )
    return out


def _generated_features(process: str, n_events: int, first_file: int, info: Any,
                        cfg: AnalysisConfig, seed: int, data_seed: int
                        ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """MLP features of nominal events of one process generated in memory (generator seed
    ``data_seed``, files of ``cfg.dataset.events_per_file`` from ``first_file`` on), per
    block, with the events generated for the block (more than it holds for a
    generator-filtered process); ``seed`` keys the JER draws."""
    from agc_core import processor
    from agc_core.io import Chunk
    from agc_core.synthetic import iter_sample_events

    per_file = cfg.dataset.events_per_file
    for k, start in enumerate(range(0, n_events, per_file)):
        for batch in iter_sample_events(process, "nominal", min(per_file, n_events - start),
                                        data_seed, cfg, first_file + k):
            columns = {name: np.ascontiguousarray(values, dtype=np.float32)
                       for name, values in batch.branches().items()
                       if name in cfg.analysis_branches}
            offsets = {coll: batch.offsets(coll) for coll in ("jet", "electron", "muon")}
            chunk = Chunk(batch.n_events, 0, batch.n_events, columns, offsets, 0)
            yield processor.compute_features(chunk, info, cfg, seed), batch.n_generated


# ---------------------------------------------------------------------------------------------
# outputs


def plot_training(results: Mapping[str, RegionResult], path: str | Path) -> Path:
    """Loss curves and validation ROC curves of every region in one PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agc_core.outputs import atomic_path

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4.2 * len(results)), squeeze=False)
    for row, (region, res) in enumerate(results.items()):
        ax = axes[row, 0]
        epochs = np.arange(1, res.epochs_run + 1)
        ax.plot(epochs, res.train_loss, label="training")
        ax.plot(epochs, res.val_loss, label="validation")
        ax.axvline(res.best_epoch, color="grey", linestyle=":", label="kept epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted loss")
        ax.set_title(f"{region}: loss")
        ax.legend(frameon=False)
        ax = axes[row, 1]
        ax.plot(res.roc_fpr, res.roc_tpr, label=f"AUC = {res.val_auc:.4f}")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_xlabel("background efficiency")
        ax.set_ylabel("signal efficiency")
        ax.set_title(f"{region}: validation ROC (accuracy {res.val_accuracy:.4f})")
        ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return target


def train(fileset: str | Path | None = None, out_dir: str | Path = DEFAULT_OUT,
          settings: TrainSettings | None = None, max_events_per_sample: int | None = None,
          cfg: AnalysisConfig | None = None, extra_events: Mapping[str, int] | None = None,
          data_seed: int = TRAINING_DATA_SEED) -> TrainingReport:
    """Extract features, train one network per region, write weights, scaler and plots.

    Args:
        fileset: fileset JSON; default: events of the synthetic generator with ``data_seed``
            generated in memory, as many per sample as the embedded dataset has (which,
            with another seed, stays held out for ``run``).
        out_dir: where ``mlp_<region>.pt``, ``scaler_<region>.json``, ``training.png`` and
            ``training_summary.json`` are written.
        settings: hyper-parameters (default :class:`TrainSettings`).
        max_events_per_sample: read at most this many events per sample.
        cfg: analysis configuration (default: the packaged one).
        extra_events: process -> nominal events generated in addition (generated training
            set only; default :data:`EMBEDDED_EXTRA_EVENTS`).
        data_seed: generator seed of the training events (without ``fileset``).

    Returns:
        Per-region results and the files written.
    """
    import torch

    cfg = cfg or load_analysis_config()
    settings = settings or TrainSettings()
    t0 = time.perf_counter()
    provenance: dict[str, Any] = {}
    if fileset is None:
        from agc_core.synthetic import GENERATOR_VERSION

        d = cfg.dataset
        per_sample = d.events_per_file * d.files_per_sample
        if max_events_per_sample is not None:
            per_sample = min(per_sample, max_events_per_sample)
        extra = dict(EMBEDDED_EXTRA_EVENTS if extra_events is None else extra_events)
        extra = {p: n for p, n in extra.items() if n > 0}
        source = (f"synthetic generator {GENERATOR_VERSION}, seed {data_seed}, {per_sample} "
                  "events per sample generated in memory")
        if extra:
            source += ", plus " + ", ".join(f"{n} {p}" for p, n in extra.items())
        gen_filter = d.generator_filter
        if gen_filter is not None:
            source += (f" ({gen_filter.process} generator-filtered as the embedded dataset: "
                       "those events pass the filter)")
        provenance = {"generator": GENERATOR_VERSION, "data_seed": data_seed}
        if data_seed == d.seed:
            log.warning("training on the embedded dataset's seed %d: run's accuracy will be "
                        "measured on the training events", data_seed)
        data = generated_features(cfg, data_seed, per_sample, extra)
    else:
        source = Path(fileset).name
        extra = {}
        data = collect_features(fileset, cfg, max_events_per_sample)
    log.info("features extracted in %.1f s", time.perf_counter() - t0)
    results: dict[str, RegionResult] = {}
    files: list[Path] = []
    for region in cfg.regions:
        res = train_region(data[region.name], region.name, region.features, settings)
        meta = {
            "dataset": source, **provenance, "max_events_per_sample": max_events_per_sample,
            "extra_events": extra,
            "signal_process": cfg.signal_process, "class_weights": "balanced (xsec within class)",
            "settings": asdict(settings), "torch": torch.__version__, **res.summary(),
        }
        res = replace(res, weights=replace(res.weights, metadata=meta))
        results[region.name] = res
        files.extend(save_weights(res.weights, out_dir))
    files.append(plot_training(results, Path(out_dir) / PLOT_NAME))
    from agc_core.outputs import write_text_atomic

    summary = {"dataset": source, **provenance, "settings": asdict(settings),
               "regions": {k: r.summary() for k, r in results.items()}}
    files.append(write_text_atomic(Path(out_dir) / SUMMARY_NAME,
                                   json.dumps(summary, indent=1) + "\n"))
    return TrainingReport(results, tuple(files))
