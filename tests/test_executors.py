"""Tests of agc_core.executors: same outcomes everywhere, retries, dying workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agc_core import executors
from agc_core.errors import ConfigError, InputError
from agc_core.executors import Outcome, make_executor
from agc_core.io.remote import TransientInputError

# --- work functions (module level: picklable for the worker processes) ----------------------


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return x


def bad_input_on_three(x: int) -> int:
    if x == 3:
        raise InputError("item three: bad input")
    return x


def network_error_twice(item: tuple[int, str]) -> int:
    """Item 2 fails with a transient network error on its first two tries (a file counts)."""
    x, marker = item
    if x == 2:
        path = Path(marker)
        tries = int(path.read_text()) if path.exists() else 0
        path.write_text(str(tries + 1))
        if tries < 2:
            raise TransientInputError("root://127.0.0.1:1//f.root: cannot open: connection "
                                      "refused by 127.0.0.1:1")
    return x


def die_on_three(x: int) -> int:
    if x == 3:
        os._exit(13)
    return x


def die_once(item: tuple[int, str]) -> int:
    """Kills its worker the first time it sees item 1 (a marker file remembers)."""
    x, marker = item
    if x == 1 and not Path(marker).exists():
        Path(marker).write_text("died")
        os._exit(9)
    return x


def sigkill_once(item: tuple[int, str]) -> int:
    """SIGKILLs its own worker process the first time it sees item 1 (a marker file remembers)."""
    import signal

    x, marker = item
    if x == 1 and not Path(marker).exists():
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_INIT: list[int] = []


def remember_init(value: int) -> None:
    _INIT.append(value)


def initialized(x: int) -> tuple[int, int]:
    return x, len(_INIT)


# --- helpers ----------------------------------------------------------------------------------


def collect(outcomes) -> dict[int, Outcome]:
    out: dict[int, Outcome] = {}
    for o in outcomes:
        assert o.index not in out, "an item was reported twice"
        out[o.index] = o
    return out


@pytest.fixture(params=["iterative", "processes", "dask"])
def executor(request):
    if request.param == "dask":
        pytest.importorskip("distributed")
    ex = make_executor(request.param, 2, max_retries=1, retry_backoff=0.01)
    yield ex
    ex.close()


# --- tests ------------------------------------------------------------------------------------


def test_all_executors_give_the_same_outcomes(executor):
    items = list(range(7))
    got = collect(executor.run(square, items))
    assert sorted(got) == items
    assert all(o.ok and o.value == i * i and o.attempts == 1 for i, o in got.items())


def test_exception_is_retried_then_reported(executor):
    got = collect(executor.run(fail_on_three, list(range(5))))
    assert sorted(i for i, o in got.items() if o.ok) == [0, 1, 2, 4]
    bad = got[3]
    assert not bad.ok and bad.value is None
    assert bad.error == "ValueError: three is bad"
    assert bad.attempts == 2  # max_retries=1
    assert "Traceback" in bad.detail


def test_bad_input_is_not_retried(executor):
    got = collect(executor.run(bad_input_on_three, list(range(5))))
    assert got[3].error == "InputError: item three: bad input"
    assert got[3].attempts == 1
    assert all(got[i].ok for i in (0, 1, 2, 4))


@pytest.fixture(params=["iterative", "processes"])
def local_executor(request):
    ex = make_executor(request.param, 2, max_retries=2, retry_backoff=0.01)
    yield ex
    ex.close()


def test_transient_network_error_is_retried_with_backoff(tmp_path, local_executor):
    marker = str(tmp_path / "tries")
    executor = local_executor
    got = collect(executor.run(network_error_twice, [(i, marker) for i in range(4)]))
    assert all(o.ok and o.value == i for i, o in got.items())
    assert got[2].attempts == 3 and Path(marker).read_text() == "3"


def test_persistent_network_error_names_url_and_cause(tmp_path, local_executor):
    marker = str(tmp_path / "tries")
    Path(marker).write_text("-5")  # fails more often than retried
    got = collect(local_executor.run(network_error_twice, [(2, marker)]))
    assert not got[0].ok and got[0].attempts == 3
    assert got[0].error == ("TransientInputError: root://127.0.0.1:1//f.root: cannot open: "
                            "connection refused by 127.0.0.1:1")


def test_initializer_runs_in_every_worker():
    ex = make_executor("processes", 2)
    try:
        got = collect(ex.run(initialized, list(range(6)), remember_init, (7,)))
    finally:
        ex.close()
    assert all(o.value == (i, 1) for i, o in got.items())


def test_dead_worker_is_isolated_and_others_survive():
    ex = make_executor("processes", 2, max_retries=1)
    try:
        got = collect(ex.run(die_on_three, list(range(8))))
    finally:
        ex.close()
    assert sorted(got) == list(range(8))
    assert not got[3].ok and got[3].error.startswith("WorkerDied")
    assert got[3].attempts == 2
    assert all(got[i].ok and got[i].value == i and got[i].attempts == 1
               for i in range(8) if i != 3)


def test_dead_worker_item_is_retried(tmp_path):
    ex = make_executor("processes", 2, max_retries=2)
    marker = str(tmp_path / "died")
    try:
        got = collect(ex.run(die_once, [(i, marker) for i in range(5)]))
    finally:
        ex.close()
    assert Path(marker).exists()
    assert all(o.ok and o.value == i for i, o in got.items())
    assert ex.pools_created >= 2  # the pool was rebuilt after the death


def test_make_executor_rejects_bad_options():
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(ConfigError, match="at least 1"):
        make_executor("processes", 0)
    with pytest.raises(ConfigError, match="start method"):
        make_executor("processes", 1, start_method="nonsense")


def test_iterative_runs_in_this_process():
    ex = make_executor("iterative", 4)
    assert ex.workers == 1
    got = collect(ex.run(lambda x: os.getpid(), [0, 1]))
    assert {o.value for o in got.values()} == {os.getpid()}


def test_default_workers_is_positive():
    assert executors.default_workers() >= 1


def test_killed_dask_worker_item_is_retried(tmp_path):
    """A Dask worker process killed while running an item: the item is run again, elsewhere."""
    pytest.importorskip("distributed")
    marker = str(tmp_path / "died")
    ex = make_executor("dask", 2, max_retries=1, retry_backoff=0.01)
    try:
        got = collect(ex.run(die_once, [(i, marker) for i in range(4)]))
    finally:
        ex.close()
    assert Path(marker).exists()  # the worker did die
    assert all(o.ok and o.value == i for i, o in got.items())


def test_sigkilled_pool_worker_item_is_retried(tmp_path):
    marker = str(tmp_path / "killed")
    ex = make_executor("processes", 2, max_retries=1, retry_backoff=0.01)
    try:
        got = collect(ex.run(sigkill_once, [(i, marker) for i in range(5)]))
    finally:
        ex.close()
    assert Path(marker).exists()
    assert all(o.ok and o.value == i for i, o in got.items())
