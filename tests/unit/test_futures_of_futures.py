"""Futures made from other Futures, as executorlib has them
(`pmp.client.future_tools`): an item of a result, a result split in n, and
batches of results in the order they finish."""

from concurrent.futures import CancelledError, Future

import pytest
from pmp.client.future_tools import batched, get_item_from_future, split_future


def test_an_item_future_resolves_with_its_item_once_the_result_is_there():
    future = Future()
    item = get_item_from_future(future, "b")
    assert not item.done()
    future.set_result({"a": 1, "b": 2})
    assert item.result(timeout=0) == 2


def test_a_missing_item_fails_its_future_with_the_lookup_error():
    future = Future()
    item = get_item_from_future(future, 5)
    future.set_result([0, 1])
    assert isinstance(item.exception(timeout=0), IndexError)


def test_an_item_of_a_failed_or_cancelled_future_fails_or_is_cancelled_with_it():
    failing, cancelled = Future(), Future()
    failed_item = get_item_from_future(failing, 0)
    cancelled_item = get_item_from_future(cancelled, 0)
    failing.set_exception(OSError("disk"))
    cancelled.cancel()
    assert str(failed_item.exception(timeout=0)) == "disk"
    assert cancelled_item.cancelled()


def test_split_future_gives_one_future_per_item():
    future = Future()
    parts = split_future(future, 3)
    future.set_result(("x", "y", "z"))
    assert [part.result(timeout=0) for part in parts] == ["x", "y", "z"]


@pytest.mark.parametrize("n", [0, -1, 1.0, True, "2"])
def test_a_count_that_is_no_positive_int_is_refused_naming_n(n):
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        split_future(Future(), n)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        batched([], n)


def test_batches_fill_in_the_order_calls_finish_and_the_last_may_be_shorter():
    futures = [Future() for _ in range(5)]
    batches = batched(futures, 2)
    assert len(batches) == 3
    futures[3].set_result("d")
    futures[0].set_result("a")
    assert batches[0].result(timeout=0) == ["a", "d"]
    assert not batches[1].done()
    futures[4].set_result("e")
    assert not batches[1].done()
    futures[2].set_result("c")
    assert batches[1].result(timeout=0) == ["c", "e"]
    assert not batches[2].done()
    futures[1].set_result("b")
    assert batches[2].result(timeout=0) == ["b"]


def test_failed_calls_are_skipped_and_fail_only_batches_nothing_else_can_fill():
    futures = [Future() for _ in range(4)]
    batches = batched(futures, 2)
    futures[0].set_exception(ValueError("first"))
    futures[1].set_result(1)
    futures[2].set_result(2)
    assert batches[0].result(timeout=0) == [1, 2]
    futures[3].cancel()
    assert isinstance(batches[1].exception(timeout=0), ValueError)


def test_a_batch_of_cancelled_calls_alone_fails_as_cancelled():
    futures = [Future()]
    batches = batched(futures, 1)
    futures[0].cancel()
    assert isinstance(batches[0].exception(timeout=0), CancelledError)
