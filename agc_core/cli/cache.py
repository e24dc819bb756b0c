"""``python -m agc_core cache``: what the cache of remote inputs holds; trim or clear it
(:class:`agc_core.io.cache.ByteCache`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cache_command(args: argparse.Namespace) -> int:
    """Show the cache (after clearing or trimming it when asked)."""
    from agc_core.io.cache import ByteCache, cache_folder, format_bytes

    cache = ByteCache(cache_folder(args.cache_dir), args.cache_size)
    if args.clear:
        removed = cache.clear(plans=True)
        print(f"cleared {cache.folder}: {format_bytes(removed)} of byte ranges and the plans")
    elif args.trim is not None:
        removed = cache.trim(args.trim)
        print(f"trimmed {cache.folder} to {format_bytes(args.trim)}: removed "
              f"{format_bytes(removed)} (least recently used first)")
    print(cache.summary().describe())
    return 0


def add_parser(subparsers: Any) -> None:
    """Register the ``cache`` subcommand."""
    from agc_core.cli.formatting import size

    parser = subparsers.add_parser(
        "cache", help="show, trim or clear the cache of remote inputs",
        description="The cache of remote inputs (https://, http://, root://): the byte ranges "
                    "runs fetched (verified on every read, bounded, least recently used first) "
                    "and the files' plans (entries, basket layouts). Runs use it by default; "
                    "`run --no-cache` bypasses it.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="the cache folder (default: $AGC_CORE_CACHE or ~/.cache/agc-core)")
    parser.add_argument("--cache-size", type=size, default=None, metavar="SIZE",
                        help="the bound to report (default: $AGC_CORE_CACHE_SIZE or 20GB)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--clear", action="store_true",
                      help="remove every cached byte range and plan")
    what.add_argument("--trim", type=size, default=None, metavar="SIZE",
                      help="remove the least recently used byte ranges beyond SIZE (e.g. 5GB)")
    parser.set_defaults(func=cache_command)
