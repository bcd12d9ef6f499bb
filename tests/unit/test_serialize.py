"""Frames of calls, results and functions (`pmp.client.serialize`): Future
arguments become placeholders the worker fills, large buffers travel out of
band, and a function's identity for store keys ignores where it was defined."""

from concurrent.futures import Future

import numpy
import pytest
from pmp.client import serialize


def test_future_arguments_become_placeholders_filled_by_the_dependency_values():
    first, second = Future(), Future()
    indexes = {first: 0, second: 1}
    frames = serialize.dumps_call(
        (first, [second, first]),
        {"k": {"x": second}},
        lambda f: serialize.as_dependency(indexes[f]),
    )
    args, kwargs = serialize.loads_call(frames, ["one", "two"])
    assert args == ("one", ["two", "one"])
    assert kwargs == {"k": {"x": "two"}}


def test_a_placeholder_unpickled_outside_a_worker_says_so():
    frames = serialize.dumps_call((Future(),), {}, lambda f: serialize.as_dependency(0))
    with pytest.raises(RuntimeError, match="placeholder was unpickled outside a pmp worker"):
        serialize.loads(frames)


def test_an_arrays_buffer_travels_as_a_frame_of_its_own():
    array = numpy.arange(100_000, dtype=numpy.float64)
    frames = serialize.dumps_call((array,), {}, None)
    assert len(frames) == 2
    assert len(frames[1]) == array.nbytes
    (back,), _ = serialize.loads(frames)
    assert numpy.array_equal(back, array)


def test_a_result_the_standard_pickler_refuses_comes_back_through_cloudpickle():
    def local(x):
        return x + 1

    assert serialize.loads(serialize.dumps_result(local))(1) == 2
    assert serialize.loads(serialize.dumps_result({"a": (1, 2)})) == {"a": (1, 2)}


def defined_in(filename, line, body="x * 2"):
    """`double`, as a notebook cell defines it (by value: in `__main__`),
    from `filename` at `line`."""
    namespace = {"__name__": "__main__", "__file__": filename}
    source = "\n" * line + f"def double(x):\n    return {body}\n"
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the test's own source
    return namespace["double"]


def test_a_functions_identity_ignores_the_file_and_line_it_was_defined_at():
    here = defined_in("/tmp/ipykernel_1/cell.py", 0)
    there = defined_in("/tmp/ipykernel_2/other.py", 40)
    assert serialize.dumps_function(here) != serialize.dumps_function(there)
    assert serialize.function_identity(here) == serialize.function_identity(there)


def test_a_functions_identity_changes_with_what_it_does():
    double = defined_in("cell.py", 0)
    triple = defined_in("cell.py", 0, body="x * 3")
    assert serialize.function_identity(double) != serialize.function_identity(triple)
