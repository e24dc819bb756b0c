"""Command-line interface: a thin layer of subcommands over the Python API.

Each subcommand lives in the module of its pipeline stage, which provides
``add_cli(subparsers)`` registering a parser whose ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from agc_core.errors import AGCError

log = logging.getLogger(__name__)

# modules that register subcommands, in the order they appear in --help
SUBCOMMAND_MODULES = (
    "agc_core.synthetic",   # generate
    "agc_core.runner",      # run
    "models.train",         # train
    "agc_core.bench",       # bench
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in --help unless its help text already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m agc_core",
        description="AGC CMS 2015 ttbar analysis: uproot + numba kernels + pyhf/iminuit.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AGCError as exc:
        print(f"agc_core {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"agc_core {args.command}: interrupted", file=sys.stderr)
        return 130
