"""``python -m agc_core train``: the signal/background MLPs, one per region
(:func:`agc_core.models.train.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agc_core.errors import AGCError


def add_parser(subparsers: Any) -> None:
    """Register the ``train`` subcommand."""
    from agc_core.config import load_analysis_config
    from agc_core.models.train import (
        DEFAULT_OUT,
        EMBEDDED_EXTRA_EVENTS,
        TRAINING_DATA_SEED,
        TrainSettings,
    )

    d = TrainSettings()
    parser = subparsers.add_parser(
        "train", help="train the signal/background MLPs (one per region)",
        description="Extract the MLP features of the nominal samples with our kernels "
                    "(ttbar = signal, all else = background), train one network per region "
                    "and write mlp_<region>.pt, scaler_<region>.json, training.png and "
                    "training_summary.json. Use --out models to replace the shipped weights.")
    parser.add_argument("--fileset", type=Path, default=None,
                        help="fileset JSON (default: synthetic events of --data-seed, "
                             "generated in memory; the embedded dataset stays held out)")
    parser.add_argument("--data-seed", type=int, default=TRAINING_DATA_SEED,
                        help="generator seed of the training events without --fileset "
                             "(default: %(default)s; the embedded dataset's is "
                             f"{load_analysis_config().dataset.seed})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help="maximum epochs (early stopping; default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    parser.add_argument("--max-events-per-sample", type=int, default=None,
                        help="read at most this many events per sample (default: all)")
    parser.add_argument("--extra-wjets-events", type=int,
                        default=EMBEDDED_EXTRA_EVENTS["wjets"],
                        help="W+jets events generated in addition, for training statistics "
                             "(without --fileset; 0: none; default: %(default)s; as in the "
                             "embedded dataset, events that pass its generator filter)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="minibatch size (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate,
                        help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help="early-stopping patience in epochs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch threads (default: %(default)s)")
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    """Check the numbers, train, print each region's result."""
    from agc_core.models.train import TrainSettings, train

    for name in ("epochs", "batch_size", "patience", "threads"):
        if getattr(args, name) < 1:
            raise AGCError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_events_per_sample is not None and args.max_events_per_sample < 1:
        raise AGCError("--max-events-per-sample must be at least 1")
    if args.extra_wjets_events < 0:
        raise AGCError("--extra-wjets-events must be at least 0")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, patience=args.patience,
                             seed=args.seed, threads=args.threads)
    report = train(args.fileset, args.out, settings, args.max_events_per_sample,
                   extra_events={"wjets": args.extra_wjets_events}, data_seed=args.data_seed)
    for res in report.results.values():
        print(f"{res.region}: val accuracy {res.val_accuracy:.4f} (xsec-weighted "
              f"{res.val_accuracy_xsec:.4f}), ROC AUC {res.val_auc:.4f}, epochs "
              f"{res.epochs_run} (best {res.best_epoch}), {res.n_train} train / {res.n_val} "
              f"val events, {res.seconds:.1f} s")
    print(f"wrote {', '.join(str(p) for p in report.files)}")
    return 0

