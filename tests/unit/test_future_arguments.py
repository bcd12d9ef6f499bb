"""A foreign Future argument that is already done (`pmp.client.arguments`):
its value travels; a failed or cancelled one fails the new call the same way."""

from concurrent.futures import Future

import pytest
from pmp.client.arguments import UpstreamFailed, value_of_done
from pmp.client.errors import DependencyCancelledError


def test_a_done_future_is_replaced_by_its_value():
    future = Future()
    future.set_result([1, 2])
    assert value_of_done(future) == [1, 2]


def test_a_failed_future_fails_the_call_with_its_own_exception():
    future = Future()
    error = KeyError("missing")
    future.set_exception(error)
    with pytest.raises(UpstreamFailed) as raised:
        value_of_done(future)
    assert raised.value.exception is error


def test_a_cancelled_future_fails_the_call_as_a_cancelled_dependency():
    future = Future()
    future.cancel()
    with pytest.raises(UpstreamFailed) as raised:
        value_of_done(future)
    assert isinstance(raised.value.exception, DependencyCancelledError)
    assert "was cancelled" in str(raised.value.exception)
