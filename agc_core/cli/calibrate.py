"""``python -m agc_core calibrate``: the embedded dataset against the real CMS histograms
(:mod:`agc_core.calibration`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from agc_core.cli.formatting import HelpFormatter


def _label(path: Path) -> str:
    """A histogram file's name in the table: its run's folder for ``histograms_full.npz``."""
    from agc_core.outputs import FULL_FILE_NAME

    return (path.resolve().parent.name if path.name == FULL_FILE_NAME else path.stem)[-14:]


def calibrate_command(args: argparse.Namespace) -> int:
    """Run the checks with the package's log at WARNING (unless --verbose)."""
    package_log = logging.getLogger("agc_core")
    level = package_log.level
    if not getattr(args, "verbose", False):  # a line per fit or run step is noise here
        package_log.setLevel(logging.WARNING)
    try:
        return _calibrate(args)
    finally:  # the caller's logging as it was (the command may run inside another program)
        package_log.setLevel(level)


def _calibrate(args: argparse.Namespace) -> int:
    from agc_core.calibration import (
        ITEMS,
        calibrate,
        format_rows,
        parse_seeds,
        seed_calibrations,
        spread_table,
    )
    from agc_core.config import load_analysis_config
    from agc_core.outputs import load_full_histogram
    from agc_core.reference_histograms import reference_histogram

    cfg = load_analysis_config(args.config)
    ref = reference_histogram(args.reference, args.reference_fileset, cfg)
    results = [(_label(Path(path)), calibrate(load_full_histogram(path), ref, cfg))
               for path in args.histograms or []]
    if len(results) == 1 and not args.seeds:
        for item in ITEMS:
            print(format_rows(item, results[0][1].item(item)))
    failed: list[int] = []
    if args.seeds:
        checked, failed = seed_calibrations(
            parse_seeds(args.seeds), ref, cfg, args.events_per_file, args.workdir,
            announce=lambda line: print(line, flush=True))
        results += checked
    if not results:
        print("nothing to check: give --histograms and/or --seeds")
        return 2
    print(spread_table(results))
    if failed:
        print(f"seeds not checked (errors above): {', '.join(map(str, failed))}")
    return 0 if not failed and all(not cal.failures for _, cal in results) else 1


def add_parser(subparsers: Any) -> None:
    """Register the ``calibrate`` subcommand."""
    from agc_core.reference_histograms import FILESET_FILE, REFERENCE_FILE

    parser = subparsers.add_parser(
        "calibrate", help="the embedded dataset against the real CMS histograms (issue 11)",
        description="Compare runs' histograms (--histograms) and/or datasets generated with "
                    "other seeds (--seeds: each generated, analysed without plots, checked, "
                    "deleted; ~15 s a default-size dataset on 2 cores) with the AGC's "
                    "published real-CMS histograms: yields, shapes, ttbar variations, b-tag "
                    "jet pts and the fitted ttbar_norm at equal MC precision. Prints each "
                    "item's worst case per dataset and item 4's spread. Exit code 1 if a "
                    "dataset misses an item.",
        formatter_class=HelpFormatter)
    parser.add_argument("--histograms", type=Path, nargs="+", default=None,
                        help="runs' histograms_full.npz (one: every item's table)")
    parser.add_argument("--seeds", default=None, help="dataset seeds, e.g. 42-56 or 43,47")
    parser.add_argument("--events-per-file", type=int, default=None,
                        help="events per file of the generated datasets (default: the "
                             "embedded dataset's)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep each seed's run outputs here (default: a temporary folder, "
                             "deleted)")
    parser.add_argument("--reference", type=Path, default=REFERENCE_FILE,
                        help="the AGC reference histograms JSON")
    parser.add_argument("--reference-fileset", type=Path, default=FILESET_FILE,
                        help="the AGC fileset whose nevts weight the reference")
    parser.add_argument("--config", type=Path, default=None,
                        help="analysis YAML (default: the packaged configs/analysis.yaml)")
    parser.set_defaults(func=calibrate_command)
