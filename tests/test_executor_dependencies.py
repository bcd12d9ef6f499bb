"""Futures as arguments: from this executor, another pmp Executor, or a
foreign `concurrent.futures.Future`, at any depth of list/tuple/dict/set.

Peer breakages these guard against (research/executorlib.md §4, §6): futures
inside tuples and sets were not found and failed to pickle; a cancelled
upstream killed the dependency thread so every later call and shutdown hung.
"""

from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import Future as BaseFuture

import pytest
from gates import wait_for_file
from pmp import DependencyCancelledError, Executor

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def inc(x):
    return x + 1


def identity(x):
    return x


def total(values):
    return sum(values)


def fail(message):
    raise ValueError(message)


def record_and_add(path, a, b):
    with open(path, "a") as f:
        f.write("ran\n")
    return a + b


def array_of(n):
    import numpy as np

    return np.arange(n, dtype=np.int64)


def array_sum(array):
    return int(array.sum())


def test_chain_positional_and_keyword(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        future_1 = exe.submit(add, 1, b=2)
        future_2 = exe.submit(add, future_1, 1)
        future_3 = exe.submit(add, a=1, b=future_2)
        assert future_3.result(timeout=RESULT_TIMEOUT) == 5
        assert future_2.result(timeout=RESULT_TIMEOUT) == 4


def test_long_chain(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        future = exe.submit(inc, 0)
        for _ in range(19):
            future = exe.submit(inc, future)
        assert future.result(timeout=RESULT_TIMEOUT) == 20


def test_diamond_and_same_future_twice(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        top = exe.submit(add, 1, 1)
        left = exe.submit(add, top, 10)
        right = exe.submit(add, top, 100)
        bottom = exe.submit(add, left, right)
        twice = exe.submit(add, top, top)
        assert bottom.result(timeout=RESULT_TIMEOUT) == 114
        assert twice.result(timeout=RESULT_TIMEOUT) == 4


def test_futures_nested_in_containers_at_any_depth(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        f = [exe.submit(identity, i) for i in range(6)]
        argument = [
            f[0],
            (f[1], {"a": f[2], "b": [f[3], (f[4],)]}),
            {f[5], "plain"},
            {"deep": {"deeper": [{"deepest": (f[0], f[1])}]}},
        ]
        expected = [
            0,
            (1, {"a": 2, "b": [3, (4,)]}),
            {5, "plain"},
            {"deep": {"deeper": [{"deepest": (0, 1)}]}},
        ]
        result = exe.submit(identity, argument).result(timeout=RESULT_TIMEOUT)
        assert result == expected
        assert isinstance(result[1], tuple)
        assert isinstance(result[2], set)
        keyword = exe.submit(add, a=(f[1],), b=(f[2], f[3])).result(timeout=RESULT_TIMEOUT)
        assert keyword == (1, 2, 3)


def test_fan_in_of_many_futures(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        parts = [exe.submit(inc, i) for i in range(30)]
        assert exe.submit(total, parts).result(timeout=RESULT_TIMEOUT) == sum(range(1, 31))


def test_submit_does_not_wait_for_dependencies(block_allocation, make_gate):
    gate = make_gate()
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        upstream = exe.submit(wait_for_file, gate.path, 5)
        dependent = exe.submit(add, upstream, 1)  # must return while upstream is blocked
        assert not upstream.done()
        assert not dependent.done()
        gate.open()
        assert dependent.result(timeout=RESULT_TIMEOUT) == 6


def test_already_finished_future_as_argument(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        done = exe.submit(add, 2, 3)
        assert done.result(timeout=RESULT_TIMEOUT) == 5
        assert exe.submit(add, done, done).result(timeout=RESULT_TIMEOUT) == 10


def test_future_of_another_pmp_executor(block_allocation, make_gate):
    gate = make_gate()
    other = Executor(max_workers=1, block_allocation=not block_allocation)
    exe = Executor(max_workers=1, block_allocation=block_allocation)
    with other, exe:
        upstream = other.submit(wait_for_file, gate.path, 20)
        dependent = exe.submit(add, upstream, 2)
        assert not dependent.done()
        gate.open()
        assert dependent.result(timeout=RESULT_TIMEOUT) == 22
        done_elsewhere = other.submit(add, 1, 1)
        assert done_elsewhere.result(timeout=RESULT_TIMEOUT) == 2
        assert exe.submit(inc, done_elsewhere).result(timeout=RESULT_TIMEOUT) == 3


def test_foreign_futures_from_a_thread_pool(block_allocation):
    import threading

    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as threads:
        pending = threads.submit(lambda: release.wait(30) and 7)
        with Executor(max_workers=1, block_allocation=block_allocation) as exe:
            dependent = exe.submit(add, pending, 1)
            nested = exe.submit(identity, {"x": [pending]})
            assert not dependent.done()
            release.set()
            assert dependent.result(timeout=RESULT_TIMEOUT) == 8
            assert nested.result(timeout=RESULT_TIMEOUT) == {"x": [7]}
            finished = threads.submit(lambda: 30)
            assert finished.result() == 30
            assert exe.submit(add, finished, 3).result(timeout=RESULT_TIMEOUT) == 33


def test_plain_concurrent_future_resolved_by_hand(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        manual = BaseFuture()
        dependent = exe.submit(add, manual, 1)
        assert not dependent.done()
        manual.set_result(41)
        assert dependent.result(timeout=RESULT_TIMEOUT) == 42


class ItemOf(BaseFuture):
    """A Future standing for one item of another Future's result, as
    executorlib's selectors do: its callbacks are the wrapped Future's, so
    they receive the wrapped Future, whose result is the whole container."""

    def __init__(self, future, key):
        super().__init__()
        self._future, self._key = future, key

    def done(self):
        return self._future.done()

    def cancelled(self):
        return self._future.cancelled()

    def add_done_callback(self, fn):
        self._future.add_done_callback(fn)

    def exception(self, timeout=None):
        return self._future.exception(timeout)

    def result(self, timeout=None):
        return self._future.result(timeout)[self._key]


def triple():
    return 1, 2, 3


def numbers():
    return {"a": 1, "b": 2}


def test_a_wrapping_future_stands_for_its_own_result(block_allocation, make_gate):
    gate = make_gate()
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        whole = exe.submit(wait_for_file, gate.path, (1, 2, 3))
        first, second = ItemOf(whole, 0), ItemOf(whole, 1)
        pending = exe.submit(add, first, second)  # both still pending here
        nested = exe.submit(identity, [ItemOf(whole, 2)])
        gate.open()
        assert pending.result(timeout=RESULT_TIMEOUT) == 3
        assert nested.result(timeout=RESULT_TIMEOUT) == [3]
        # Already done when submitted: the same answer.
        assert exe.submit(add, first, second).result(timeout=RESULT_TIMEOUT) == 3


def test_executorlib_selectors_as_arguments(block_allocation, make_gate):
    executorlib = pytest.importorskip("executorlib")
    gate = make_gate()
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        upstream = exe.submit(wait_for_file, gate.path, (1, 2, 3))
        split = exe.submit(add, *executorlib.split_future(upstream, 3)[:2])
        mapping = exe.submit(wait_for_file, gate.path, {"a": 1, "b": 2})
        picked = exe.submit(
            add,
            executorlib.get_item_from_future(mapping, "a"),
            executorlib.get_item_from_future(mapping, "b"),
        )
        assert not split.done()
        gate.open()
        assert split.result(timeout=RESULT_TIMEOUT) == 3
        assert picked.result(timeout=RESULT_TIMEOUT) == 3


def test_upstream_exception_propagates_and_dependent_never_runs(block_allocation, tmp_path):
    ran = tmp_path / "ran.txt"
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        upstream = exe.submit(fail, "upstream broke: 17")
        dependent = exe.submit(record_and_add, str(ran), upstream, 1)
        second_level = exe.submit(add, dependent, 1)
        for future in (upstream, dependent, second_level):
            with pytest.raises(ValueError, match="upstream broke: 17"):
                future.result(timeout=RESULT_TIMEOUT)
        # The executor keeps working after a failed chain.
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
    assert not ran.exists()


def test_foreign_upstream_exception_propagates(block_allocation):
    def broken():
        raise KeyError("missing-key-99")

    with ThreadPoolExecutor(max_workers=1) as threads:
        failed = threads.submit(broken)
        with Executor(max_workers=1, block_allocation=block_allocation) as exe:
            dependent = exe.submit(add, failed, 1)
            with pytest.raises(KeyError, match="missing-key-99"):
                dependent.result(timeout=RESULT_TIMEOUT)
            pending = BaseFuture()
            later = exe.submit(identity, [pending])
            pending.set_exception(ZeroDivisionError("late failure"))
            with pytest.raises(ZeroDivisionError, match="late failure"):
                later.result(timeout=RESULT_TIMEOUT)
            assert exe.submit(add, 2, 2).result(timeout=RESULT_TIMEOUT) == 4


def test_cancelled_upstream_fails_dependent_and_executor_survives(
    block_allocation, make_gate, tmp_path
):
    gate = make_gate()
    ran = tmp_path / "ran.txt"
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        blocker = exe.submit(wait_for_file, gate.path, "blocker")
        queued = exe.submit(record_and_add, str(ran), 1, 1)
        assert queued.cancel() is True
        dependent = exe.submit(record_and_add, str(ran), queued, 1)
        in_list = exe.submit(identity, [queued])
        gate.open()
        assert blocker.result(timeout=RESULT_TIMEOUT) == "blocker"
        for future in (dependent, in_list):
            with pytest.raises(DependencyCancelledError):
                future.result(timeout=RESULT_TIMEOUT)
        assert issubclass(DependencyCancelledError, CancelledError)
        # The peer's dependency thread died here and everything after hung.
        assert exe.submit(add, 3, 4).result(timeout=RESULT_TIMEOUT) == 7
    assert not ran.exists()


def test_cancelled_foreign_future_before_and_after_submit(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        already = BaseFuture()
        assert already.cancel()
        with pytest.raises(CancelledError) as raised:
            exe.submit(add, already, 1).result(timeout=RESULT_TIMEOUT)
        assert isinstance(raised.value, DependencyCancelledError)
        later = BaseFuture()
        dependent = exe.submit(add, later, 1)
        assert later.cancel()
        with pytest.raises(DependencyCancelledError):
            dependent.result(timeout=RESULT_TIMEOUT)
        assert exe.submit(add, 5, 5).result(timeout=RESULT_TIMEOUT) == 10


def test_disable_dependencies_rejects_future_arguments(block_allocation):
    with Executor(
        max_workers=1, block_allocation=block_allocation, disable_dependencies=True
    ) as exe:
        done = exe.submit(add, 1, 2)
        assert done.result(timeout=RESULT_TIMEOUT) == 3
        with pytest.raises(ValueError):
            exe.submit(add, done, 1)
        with pytest.raises(ValueError):
            exe.submit(identity, {"nested": [done]})
        # Nothing was queued by the rejected calls; plain calls still run.
        assert exe.submit(add, 2, 2).result(timeout=RESULT_TIMEOUT) == 4


def test_large_array_passes_between_tasks(block_allocation):
    n = 2_000_000  # 16 MB of int64
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        array = exe.submit(array_of, n)
        assert exe.submit(array_sum, array).result(timeout=RESULT_TIMEOUT) == n * (n - 1) // 2


def test_results_survive_shutdown(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        first = exe.submit(add, 1, 2)
        second = exe.submit(add, first, first)
    # Leaving `with` waited for the whole graph.
    assert first.done() and second.done()
    assert second.result(timeout=0) == 6
