"""The command line: ``python -m agc_core COMMAND`` (and the ``agc-core`` script).

One small module per subcommand (:mod:`~agc_core.cli.run`, :mod:`~agc_core.cli.fit`,
:mod:`~agc_core.cli.generate`, :mod:`~agc_core.cli.train`, :mod:`~agc_core.cli.calibrate`,
:mod:`~agc_core.cli.bench`), each a thin layer that parses its flags and calls the library;
each provides ``add_parser(subparsers)`` registering a parser whose ``func(args) -> int`` runs
it. The library never imports this package; argparse lives only here.

A new subcommand: a module here with ``add_parser``, and its name in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from agc_core.errors import AGCError

log = logging.getLogger(__name__)

#: subcommand -> its module, in the order they appear in --help
SUBCOMMANDS = {
    "run": "agc_core.cli.run",
    "generate": "agc_core.cli.generate",
    "train": "agc_core.cli.train",
    "bench": "agc_core.cli.bench",
    "fit": "agc_core.cli.fit",
    "calibrate": "agc_core.cli.calibrate",
    "cache": "agc_core.cli.cache",
}
GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand, or with ``only`` that one (what
    :func:`main` does for a known command: the other stages' modules are not imported,
    ~0.25 s saved before a run starts)."""
    parser = argparse.ArgumentParser(
        prog="python -m agc_core",
        description="AGC CMS 2015 ttbar analysis: uproot + numba kernels + pyhf/iminuit.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, name in SUBCOMMANDS.items():
        if only is None or command == only:
            importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    from agc_core import forkserver

    argv = sys.argv[1:] if argv is None else list(argv)
    forkserver.start_for_cli(argv)  # before the imports
    command = next((a for a in argv if a not in GLOBAL_FLAGS), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
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
