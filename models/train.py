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
from agc_core.models.features import LabelledFeatures, collect_features, generated_features
from agc_core.models.metrics import balanced_weights, roc_curve, weighted_accuracy
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
