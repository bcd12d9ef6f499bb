"""The notebook's record of Executors and their calls (`pmp.client.registry`):
held weakly, and of the ended calls only the latest `KEPT_ENDED`."""

import gc
import weakref
from concurrent.futures import Future

from pmp.client import registry
from pmp.client.registry import KEPT_ENDED


class FakeExecutor:
    """Anything an Executor is to the registry: an object that holds its Calls."""

    def __init__(self):
        self._notebook_calls = registry.new_calls(self)


def done():
    future = Future()
    future.set_result(None)
    return future


def test_executors_are_listed_in_the_order_they_were_made():
    first, second = FakeExecutor(), FakeExecutor()
    listed = [executor for executor, _ in registry.executors()]
    assert listed.index(first) < listed.index(second)
    assert registry.number_of(first) < registry.number_of(second)
    assert registry.number_of(object()) == float("inf")


def test_an_executor_let_go_of_is_not_kept_by_the_registry_nor_are_its_calls():
    executor = FakeExecutor()
    executor._notebook_calls.add(Future())
    executor_ref, calls_ref = weakref.ref(executor), weakref.ref(executor._notebook_calls)
    del executor
    gc.collect()
    assert executor_ref() is None
    assert calls_ref() is None  # with its Futures and their results


def test_a_call_leads_back_to_its_executor_while_it_is_kept():
    executor = FakeExecutor()
    future = Future()
    executor._notebook_calls.add(future)
    assert registry.executor_of(future) is executor
    assert registry.executor_of(Future()) is None


def test_the_latest_ended_calls_are_kept_with_every_unfinished_one():
    calls = FakeExecutor()._notebook_calls
    pending = Future()
    calls.add(pending)
    ended = [done() for _ in range(3 * KEPT_ENDED)]
    for future in ended:
        calls.add(future)
    kept = calls.futures()
    assert kept == [pending, *ended[-KEPT_ENDED:]]
    assert calls.forgotten == 2 * KEPT_ENDED
    assert not calls.holds(ended[0])
    assert calls.holds(ended[-1])


def test_calls_that_end_after_they_were_added_are_let_go_too():
    calls = FakeExecutor()._notebook_calls
    futures = [Future() for _ in range(KEPT_ENDED + 5)]
    for future in futures:
        calls.add(future)
    assert calls.futures() == futures
    for future in futures:
        future.set_result(None)
    assert calls.futures() == futures[5:]
    assert calls.forgotten == 5
