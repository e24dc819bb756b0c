"""Tests of agc_core.retry: the delays double and are capped; which failures are retried."""

from __future__ import annotations

from agc_core.errors import InputError
from agc_core.retry import MAX_RETRY_DELAY, is_retryable, retry_delay


def test_retry_delay_doubles_and_is_capped():
    assert [retry_delay(1.0, a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(1.0, 50) == MAX_RETRY_DELAY
    assert retry_delay(0.0, 3) == 0.0


def test_bad_input_is_not_retried_unless_it_says_so():
    transient = InputError("network")
    transient.retryable = True  # what agc_core.io.remote.TransientInputError says
    assert not is_retryable(InputError("corrupt file"))
    assert is_retryable(transient)
    assert is_retryable(RuntimeError("a worker's bug or a crash"))
