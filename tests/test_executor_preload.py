"""A zygote imports numpy once its workers show they use it (Linux, local
backend, fresh workers): later calls start with numpy imported, and still
get what a fresh process that imported it itself would have had: BLAS
threads as their `threads_per_core` says, a random state of their own, and
a zygote that stays single-threaded to fork. Only numpy is preloaded: a
module a call imports is not there for the next call."""

import os
import sys

import psutil
import pytest
from pmp import Executor
from test_executor_fresh_workers import RESULT_TIMEOUT, warm_up

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the zygote is Linux-only"
)


def numpy_was_there():
    """Whether numpy and numpy.random were imported before this call imported them."""
    there = "numpy" in sys.modules and "numpy.random" in sys.modules
    import numpy.random  # noqa: F401

    return there


def blas_threads_and_draw():
    """(this process's BLAS thread counts, a draw from numpy's global random state)."""
    import numpy
    from threadpoolctl import threadpool_info

    blas = sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
    return os.getppid(), blas, float(numpy.random.rand())


def imports_wave():
    import wave  # noqa: F401

    return True


def wave_was_there():
    return "wave" in sys.modules


def test_numpy_is_imported_once_and_each_call_gets_its_own_threads_and_random_state(
    wait_until,
):
    with Executor(max_cores=2) as exe:
        zygote = warm_up(exe, wait_until)
        assert exe.submit(numpy_was_there).result(RESULT_TIMEOUT) is False
        wait_until(
            lambda: exe.submit(numpy_was_there).result(RESULT_TIMEOUT),
            timeout=30,
            message="the zygote did not preload numpy for later calls",
        )
        # The zygote stays single-threaded: a fork copies only one thread.
        assert psutil.Process(zygote).num_threads() == 1
        one = [exe.submit(blas_threads_and_draw) for _ in range(3)]
        two = exe.submit(blas_threads_and_draw, resource_dict={"threads_per_core": 2})
        one, two = [f.result(RESULT_TIMEOUT) for f in one], two.result(RESULT_TIMEOUT)
    assert {parent for parent, _, _ in one + [two]} == {zygote}
    assert [blas for _, blas, _ in one] == [[1]] * 3
    assert two[1] == [2]
    draws = [draw for _, _, draw in one] + [two[2]]
    assert len(set(draws)) == 4, f"calls drew the same numbers: {draws}"


def test_a_module_a_call_imports_is_not_preloaded(wait_until):
    with Executor(max_cores=1) as exe:
        warm_up(exe, wait_until)
        assert exe.submit(imports_wave).result(RESULT_TIMEOUT)
        assert exe.submit(wave_was_there).result(RESULT_TIMEOUT) is False
