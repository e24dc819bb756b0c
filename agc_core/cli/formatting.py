"""The subcommands' help formatter."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in --help unless its help text already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def size(text: str) -> int:
    """An argparse type: a size such as ``20GB`` in bytes (a usage error when it is none)."""
    from agc_core.errors import ConfigError
    from agc_core.io.cache import parse_size

    try:
        value = parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert value is not None
    return value
