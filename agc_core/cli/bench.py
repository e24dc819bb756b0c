"""``python -m agc_core bench``: benchmark tables (:func:`agc_core.bench.run_bench`).

``--what`` offers every section registered in :mod:`agc_core.bench` (a new section module
listed in ``agc_core.bench.SECTION_MODULES`` appears here by itself); a section's own flags
go below.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the ``bench`` subcommand."""
    from agc_core.bench import BIG_FILE_EVENTS, section_names

    p = subparsers.add_parser(
        "bench", help="benchmark kernels and stages against the reference",
        description="Time the numba kernels (and other stages) against the awkward reference "
                    "on the same in-memory events; prints one table per section.")
    p.add_argument("--what", nargs="+", default=["kernels"],
                   choices=[*section_names(), "all"], help="sections to run (default: kernels)")
    p.add_argument("--events", type=int, default=200_000,
                   help="in-memory events of --process for the kernels (default 200000)")
    p.add_argument("--reference-events", type=int, default=20_000,
                   help="events given to the (slow) reference (default 20000)")
    p.add_argument("--mix-events", type=int, default=50_000,
                   help="events per sample for the per-sample rows and the mix (default "
                        "50000; 0 skips them)")
    p.add_argument("--mix-fileset", default=None,
                   help="weight the sample mix by the nevts of this fileset JSON (e.g. the "
                        "AGC's ntuples_merged.json); default: equal events per sample")
    p.add_argument("--fileset", default=None,
                   help="fileset JSON of the io and e2e sections (default: the embedded "
                        "dataset)")
    p.add_argument("--fit-histograms", nargs="+", default=None,
                   help="histograms.root files of the fit section (default: the real CMS "
                        "reference histograms and ./agc_output/histograms.root, if present)")
    p.add_argument("--process", default="ttbar", help="sample process (nominal) to generate")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per kernel (best kept)")
    p.add_argument("--seed", type=int, default=42, help="generator and JER seed")
    p.add_argument("--no-first-run", dest="first_run", action="store_false",
                   help="e2e: skip the first run (fresh dataset folder and numba cache, ~35 s)")
    p.add_argument("--no-cli-runs", dest="cli_runs", action="store_false",
                   help="e2e: skip the warm and first runs of the CLI")
    p.add_argument("--big-file-events", type=int, default=BIG_FILE_EVENTS,
                   help="e2e: events of the one-file dataset read in default-size chunks "
                        "(generated once; 0 skips that row; default %(default)s)")
    p.add_argument("--scaling-fileset", default=None,
                   help="e2e: also time 1 and 2 workers (processing and I/O only) on this "
                        "fileset, e.g. 9 x 1 M events: python -m agc_core generate --out "
                        "DIR --events-per-file 1000000 --files-per-sample 1")
    p.add_argument("--schemes", nargs="+", choices=("http", "root"), default=["http", "root"],
                   help="remote: URL schemes read through the delaying proxy")
    p.add_argument("--rtt-ms", nargs="+", type=float, default=[0.0, 20.0, 100.0],
                   help="remote: round-trip times the proxy adds (ms)")
    p.add_argument("--remote-repeat", type=int, default=1,
                   help="remote: cold + warm runs per configuration (the median is shown)")
    p.add_argument("--workers", type=int, default=2, help="remote: worker processes per run")
    p.add_argument("--copies", type=int, default=5,
                   help="remote: planning table: also plan the files under this many names "
                        "each (1: only once; 0: no planning table)")
    p.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    """Run the selected sections and print their tables."""
    from agc_core.bench import run_bench

    return run_bench(args)
