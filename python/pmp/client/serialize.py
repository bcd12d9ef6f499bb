"""How functions, calls and values become frames (a pickle, then its
protocol-5 out-of-band buffers), and back.

Futures inside a call's arguments, at any depth, become placeholders; the
worker replaces each with the value of the dependency the scheduler sends
along with the task.
"""

import io
import pickle
import types

import cloudpickle

from pmp.client.function_pickles import SCALARS, FunctionPickles
from pmp.worker.task_traceback import CELL_SOURCE

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
    return _function_pickles.dumps(fn)


def dumps_function_and_identity(fn):
    """`dumps_function(fn)` and `function_identity(fn)`, at the cost of one."""
    return _function_pickles.dumps(fn, identity=True)


def function_identity(fn):
    """What a call's store key knows of its function: its pickle with every
    code object's file name and first line number left out. Those say where
    the function was defined, not what it does, and the file of a notebook
    cell changes with every kernel (ipykernel: /tmp/ipykernel_<pid>/...)."""
    return _function_pickles.dumps(fn, identity=True)[1]


_KEY_FILENAME = "<pmp>"


class _IdentityPickler(cloudpickle.Pickler):
    def reducer_override(self, obj):
        if type(obj) is types.CodeType and (
            obj.co_filename != _KEY_FILENAME or obj.co_firstlineno != 1
        ):
            return _identity, (obj.replace(co_filename=_KEY_FILENAME, co_firstlineno=1),)
        return super().reducer_override(obj)

    def _function_getnewargs(self, func):
        # The module's __file__ (and __path__) travel for relative imports:
        # where, again, not what.
        code, base_globals, name, defaults, closure = super()._function_getnewargs(func)
        base_globals = {k: v for k, v in base_globals.items() if k not in ("__file__", "__path__")}
        return code, base_globals, name, defaults, closure

    def _dynamic_function_reduce(self, func):
        # A %%pmp cell's text and cell number (`CELL_SOURCE`) are for its
        # tracebacks; its code already says what it does.
        make, newargs, (attributes, slots), *rest = super()._dynamic_function_reduce(func)
        if CELL_SOURCE in attributes:
            attributes = {k: v for k, v in attributes.items() if k != CELL_SOURCE}
        return (make, newargs, (attributes, slots), *rest)


def _dumps_identity(fn):
    file = io.BytesIO()
    _IdentityPickler(file, protocol=PROTOCOL).dump(fn)
    return file.getvalue()


_function_pickles = FunctionPickles(
    lambda fn: cloudpickle.dumps(fn, protocol=PROTOCOL), _dumps_identity
)


def dumps_call(args, kwargs, on_future):
    """Frames of ``(args, kwargs)``. ``on_future(future)`` is called once per
    distinct Future found in them and returns `as_dependency(...)` or `as_value(...)`."""
    if _plain_call(args, kwargs):
        # Builtin values alone hide no Future and need no cloudpickle: making
        # its Pickler (a subclass, per call) was 2-3 µs of a 2.5-4 µs call.
        # The pickle is the same bytes (a store key hashes them).
        return [pickle.dumps((args, kwargs), protocol=PROTOCOL)]
    buffers = []
    file = io.BytesIO()
    _CallPickler(file, buffers, on_future).dump((args, kwargs))
    return _frames(file.getvalue(), buffers)


# What `dumps_call` pickles without cloudpickle: exact builtin types (`SCALARS`; a
# subclass may reduce to anything, a Future among them), nested at most
# `_PLAIN_DEPTH` deep, `_PLAIN_ITEMS` values in all. Past that the scan costs
# more than the Pickler it saves, and the slow path is right for anything.
_PLAIN_DEPTH = 4
_PLAIN_ITEMS = 64


def _plain_call(args, kwargs):
    """Whether `args` (a tuple) and `kwargs` (a dict) hold only
    builtin scalars in builtin containers. Loops, not recursion into each
    scalar: this runs at every submit."""
    budget = [_PLAIN_ITEMS - len(args) - len(kwargs)]
    if budget[0] < 0:
        return False
    for value in args:
        if type(value) not in SCALARS and not _plain(value, _PLAIN_DEPTH, budget):
            return False
    for key, value in kwargs.items():
        if type(key) is not str:  # a str subclass can be a keyword too
            return False
        if type(value) not in SCALARS and not _plain(value, _PLAIN_DEPTH, budget):
            return False
    return True


def _plain(container, depth, budget):
    """`_plain_call` for one value that is not a scalar; `budget` is a
    one-item list of how many more values may be looked at."""
    kind = type(container)
    if kind is dict:
        items = [*container.keys(), *container.values()]
    elif kind is tuple or kind is list:
        items = container
    else:
        return False
    budget[0] -= len(items)
    if depth == 0 or budget[0] < 0:
        return False
    for value in items:
        if type(value) not in SCALARS and not _plain(value, depth - 1, budget):
            return False
    return True


def dumps_result(value):
    """A task's result as frames. The standard pickler costs a tenth of
    cloudpickle's to set up (3 µs of a tiny task's 8) and pickles a result the
    same way whenever it can pickle it at all: both pickle what is importable
    by reference. What it refuses, a lambda or an instance of a class that
    came by value with the task's function, goes to cloudpickle."""
    buffers = []
    try:
        pickled = pickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
    except Exception:  # noqa: BLE001 - cloudpickle tries again, and reports its own failure
        return dumps_value(value)
    return _frames(pickled, buffers)


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
