"""The agc-core exception family: every user-facing error names the file, branch or key."""

from __future__ import annotations


class AGCError(Exception):
    """Base class of every error agc-core raises on purpose (the CLI prints it as one line)."""


class ConfigError(AGCError):
    """Invalid or missing configuration: the message names the file and the key."""


class InputError(AGCError):
    """Unusable input data (fileset, ROOT file, tree, branch): the message names it."""


class ModelError(AGCError):
    """Missing or mismatched model weights: the message names the file and expected shape."""


class ProcessingError(AGCError):
    """A chunk failed during processing; the message names sample, file and entry range."""
