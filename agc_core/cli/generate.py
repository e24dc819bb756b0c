"""``python -m agc_core generate``: the embedded synthetic dataset
(:func:`agc_core.synthetic.generate_dataset`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def generate_command(args: argparse.Namespace) -> int:
    """Generate the dataset and print what was written."""
    from agc_core.synthetic import generate_dataset

    t0 = time.perf_counter()
    path = generate_dataset(args.out, args.events_per_file, args.files_per_sample, args.seed,
                            args.compression, workers=args.workers)
    fileset = json.loads(path.read_text())
    files = [path.parent / f["path"] for vs in fileset.values() for d in vs.values()
             for f in d["files"]]
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} files ({size / 1e6:.1f} MB) and {path} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register the ``generate`` subcommand."""
    from agc_core.config import load_analysis_config
    from agc_core.synthetic import COMPRESSIONS

    cfg = load_analysis_config()
    d = cfg.dataset
    parser = subparsers.add_parser(
        "generate", help="generate the embedded synthetic dataset (AGC ntuple schema)",
        description="Generate the synthetic AGC dataset: all samples, AGC ntuple schema, "
                    "and a fileset JSON (fileset.json) with relative paths.")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: $AGC_CORE_DATA or "
                             "~/.cache/agc-core/dataset)")
    parser.add_argument("--events-per-file", type=int, default=d.events_per_file,
                        help="events per file (default: %(default)s)")
    parser.add_argument("--files-per-sample", type=int, default=d.files_per_sample,
                        help="files per sample (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default: "
                                                                 "%(default)s)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default=d.compression,
                        help="compression algorithm (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes generating files at once (default: one per core; the "
                             "bytes do not depend on it)")
    parser.set_defaults(func=generate_command)
