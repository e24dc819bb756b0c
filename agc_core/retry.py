"""The retry policy of a run: how often and after how long a failed chunk (or a remote file
being planned) is tried again, and which failures are worth it. Known to the run's options
(:mod:`agc_core.results`), the executors and the planner alike."""

from __future__ import annotations

from agc_core.errors import AGCError

#: retries of an item whose worker died or raised, or whose remote read failed on the network
DEFAULT_MAX_RETRIES = 2
#: seconds before the first retry of a failed item; doubled for each further one
DEFAULT_RETRY_BACKOFF = 1.0
#: the longest wait before a retry (seconds)
MAX_RETRY_DELAY = 30.0


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying may help: not for ``AGCError`` (bad input, deterministic) unless it says
    so (``retryable = True``: :class:`agc_core.io.remote.TransientInputError`, a network problem);
    every other exception is retried."""
    return bool(getattr(exc, "retryable", not isinstance(exc, AGCError)))


def retry_delay(backoff: float, attempts: int) -> float:
    """Seconds to wait before the next try after ``attempts`` failed ones (doubling, capped)."""
    return min(MAX_RETRY_DELAY, backoff * 2.0 ** max(0, attempts - 1)) if backoff > 0 else 0.0
