"""A call of builtin values is pickled without cloudpickle (serialize's
`_plain_call`), to the very same bytes (a store key hashes them); anything
that could be or hide a Future still goes through the Pickler that finds it."""

import io
from concurrent.futures import Future

import pytest
from pmp.client import serialize


def _slow_frames(args, kwargs, on_future=None):
    """What `dumps_call` made before it had a fast path."""
    buffers = []
    file = io.BytesIO()
    serialize._CallPickler(file, buffers, on_future).dump((args, kwargs))
    return serialize._frames(file.getvalue(), buffers)


class Int(int):
    pass


class Str(str):
    pass


PLAIN = [
    ((), {}),
    ((1,), {}),
    ((1, 2.5, 3j, "x", b"y", None, True, False, 10**40, float("nan")), {}),
    (((1, [2, {"a": (3,)}]),), {"b": [1.0, "z"], "c": {}}),
    (([1, 2], [1, 2]), {}),
    ((dict.fromkeys(range(10), "v"),), {}),
    ((b"x" * 200_000, "y" * 200_000), {}),  # past pickle's 64 KiB frames
]


@pytest.mark.parametrize(("args", "kwargs"), PLAIN)
def test_a_call_of_builtin_values_is_the_same_pickle_without_cloudpickle(args, kwargs):
    assert serialize._plain_call(args, kwargs)
    frames = serialize.dumps_call(args, kwargs, None)
    assert frames == _slow_frames(args, kwargs)
    assert repr(serialize.loads(frames)) == repr((args, kwargs))


def test_a_value_met_twice_is_one_object_again():
    shared = [1]
    args, _ = serialize.loads(serialize.dumps_call((shared, shared), {}, None))
    assert args[0] is args[1]


NOT_PLAIN = [
    ((Int(1),), {}),
    ((Str("x"),), {}),
    (([1, Int(2)],), {}),
    (({Str("k"): 1},), {}),
    ((), {Str("k"): 1}),
    ((bytearray(b"x"),), {}),
    (({1, 2},), {}),
    ((list(range(100)),), {}),  # past the scan's budget
    (([[[[[[1]]]]]],), {}),  # past its depth
]


@pytest.mark.parametrize(("args", "kwargs"), NOT_PLAIN)
def test_anything_else_takes_the_cloudpickle_path(args, kwargs):
    assert not serialize._plain_call(args, kwargs)
    frames = serialize.dumps_call(args, kwargs, None)
    assert frames == _slow_frames(args, kwargs)
    assert serialize.loads(frames) == (args, kwargs)


def test_a_list_that_holds_itself_takes_the_cloudpickle_path():
    loop = [1]
    loop.append(loop)
    assert not serialize._plain_call((loop,), {})


@pytest.mark.parametrize(
    "place",
    [
        lambda f: ((f,), {}),
        lambda f: (([1, f],), {}),
        lambda f: (({"k": (2, f)},), {}),
        lambda f: ((), {"x": [f]}),
    ],
)
def test_a_future_at_any_depth_is_still_found(place):
    future = Future()
    found = []

    def on_future(seen):
        found.append(seen)
        return serialize.as_value(7)

    args, kwargs = place(future)
    frames = serialize.dumps_call(args, kwargs, on_future)
    assert found == [future]
    assert repr(serialize.loads(frames)) == repr(place(7))
