"""``python -m agc_core fit``: statistical inference alone on a run's histograms
(:func:`agc_core.inference.run_inference`), with report.html."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agc_core.cli.formatting import HelpFormatter


def add_parser(subparsers: Any) -> None:
    """Register the ``fit`` subcommand."""
    parser = subparsers.add_parser(
        "fit", help="statistical inference alone: workspace, fit, scan, ranking, report",
        description="Build the pyhf workspace from a cabinetry-style histograms.root (ours or "
                    "the seed's) or histograms_full.npz, fit it with iminuit (MIGRAD, HESSE, "
                    "MINOS on the POI), run the goodness of fit, the expected uncertainty, "
                    "the scan and the ranking, draw the fit plots and write report.html. Exit "
                    "code 1 if a fit did not converge.",
        formatter_class=HelpFormatter)
    parser.add_argument("--histograms", type=Path, required=True,
                        help="histograms.root or histograms_full.npz")
    parser.add_argument("--fit-config", type=Path, default=None,
                        help="fit YAML (default: the packaged configs/fit.yaml)")
    parser.add_argument("--config", type=Path, default=None,
                        help="analysis YAML (default: the packaged configs/analysis.yaml)")
    parser.add_argument("--split-by-classification", action="store_true",
                        help="two channels per region by MLP classification (needs "
                             "histograms_full.npz)")
    parser.add_argument("--ranking", action=argparse.BooleanOptionalAction, default=True,
                        help="rank the nuisance parameters by impact on the POI")
    parser.add_argument("--scan", action="store_true", help="profile-likelihood scan of the POI")
    parser.add_argument("--no-plots", action="store_true", help="no PNG plots")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="output folder (default: the folder of --histograms)")
    parser.set_defaults(func=fit_command)


def fit_command(args: argparse.Namespace) -> int:
    """Run the inference stage, write report.html, print the result; exit code 1 if a fit
    did not converge."""
    from agc_core import report_html
    from agc_core.config import load_analysis_config, load_fit_config
    from agc_core.inference import FIT_RESULTS_FILE_NAME, run_inference

    cfg = load_analysis_config(args.config)
    fit_cfg = load_fit_config(args.fit_config, cfg)
    out = args.output_dir or args.histograms.parent
    result = run_inference(args.histograms, out, fit_cfg, cfg, args.split_by_classification,
                           ranking=args.ranking, scan=args.scan, plots=not args.no_plots)
    report = report_html.write_report(out / report_html.REPORT_FILE_NAME, inference=result)
    print(f"agc_core fit: {result.summary_line()}")
    if result.gof is not None:
        print(f"  goodness of fit : p = {result.gof.p_value:.3f} "
              f"(-2 dlnL = {result.gof.twice_delta_nll:.2f}, {result.gof.ndof} dof)")
    for message in result.errors:
        print(f"  FAILED          : {message}")
    for message in result.study_errors:
        print(f"  study fit failed: {message}")
    print(f"  outputs in      : {out} (workspace.json, {FIT_RESULTS_FILE_NAME}, "
          f"{report.name})")
    return 0 if result.ok else 1
