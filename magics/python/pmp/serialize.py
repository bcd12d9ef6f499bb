"""How functions, calls and values become frames (a pickle, then its
protocol-5 out-of-band buffers), and back.

Futures inside a call's arguments, at any depth, become placeholders; the
worker replaces each with the value of the dependency the scheduler sends
along with the task.
"""

import io
import pickle

import cloudpickle

PROTOCOL = 5

# The values of the current task's dependencies while its call is unpickled
# (the worker runs one task at a time).
_dependency_values = None


def _dependency_value(index):
    if _dependency_values is None:
        raise RuntimeError("a pmp dependency placeholder was unpickled outside a pmp worker")
    return _dependency_values[index]


def _identity(value):
    return value


def as_dependency(index):
    """How a Future argument pickles: the index of a dependency's value."""
    return _dependency_value, (index,)


def as_value(value):
    """How a finished Future argument pickles: its value, in place."""
    return _identity, (value,)


class _CallPickler(cloudpickle.Pickler):
    def __init__(self, file, buffers, on_future):
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffers.append)
        self._on_future = on_future

    def reducer_override(self, obj):
        if isinstance(obj, _base_future()):
            return self._on_future(obj)
        return super().reducer_override(obj)


def _base_future():
    # Imported here: workers unpickle without ever loading concurrent.futures.
    from concurrent.futures import Future

    return Future


def _frames(pickled, buffers):
    return [pickled, *(buffer.raw() for buffer in buffers)]


def dumps_function(fn):
    return cloudpickle.dumps(fn, protocol=PROTOCOL)


def dumps_call(args, kwargs, on_future):
    """Frames of ``(args, kwargs)``. ``on_future(future)`` is called once per
    distinct Future found in them and returns `as_dependency(...)` or `as_value(...)`."""
    buffers = []
    file = io.BytesIO()
    _CallPickler(file, buffers, on_future).dump((args, kwargs))
    return _frames(file.getvalue(), buffers)


def dumps_value(value):
    buffers = []
    file = io.BytesIO()
    cloudpickle.Pickler(file, protocol=PROTOCOL, buffer_callback=buffers.append).dump(value)
    return _frames(file.getvalue(), buffers)


def loads(frames):
    return pickle.loads(frames[0], buffers=frames[1:])


def loads_call(frames, dependency_values):
    global _dependency_values
    _dependency_values = dependency_values
    try:
        return loads(frames)
    finally:
        _dependency_values = None
