"""How functions, calls and values become frames (a pickle, then its
protocol-5 out-of-band buffers), and back.

Futures inside a call's arguments, at any depth, become placeholders; the
worker replaces each with the value of the dependency the scheduler sends
along with the task.
"""

import io
import pickle
import types
import weakref

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


def _dumps_identity(fn):
    file = io.BytesIO()
    _IdentityPickler(file, protocol=PROTOCOL).dump(fn)
    return file.getvalue()


class _FunctionPickles:
    """Pickling a function defined in ``__main__`` or a notebook (by value,
    ~15 µs) was most of `submit`'s time. A function submitted again is not
    pickled again when everything its pickle captured is provably the same:
    its code, and the globals, closure cells, defaults and annotations it
    uses, when each of those is an immutable scalar (compared by value) or
    something pickled by name (a module, an importable function or class;
    compared by identity). A function that captures anything else — a list,
    an array, another notebook function — is pickled at every submit.

    Its identity pickle (`function_identity`, for store keys) is kept with
    it, made on first use: one check of what it captured serves both."""

    def __init__(self):
        self._pickles = weakref.WeakKeyDictionary()  # function -> [captured, pickle, identity]

    def dumps(self, fn, identity=False):
        """The pickle of `fn`, and with `identity` also its identity pickle."""
        captured = _captured(fn)
        if captured is None:
            pickled = cloudpickle.dumps(fn, protocol=PROTOCOL)
            return (pickled, _dumps_identity(fn)) if identity else pickled
        known = self._pickles.get(fn)
        if known is None or known[0] != captured:
            known = [captured, cloudpickle.dumps(fn, protocol=PROTOCOL), None]
            self._pickles[fn] = known
        if not identity:
            return known[1]
        if known[2] is None:
            known[2] = _dumps_identity(fn)
        return known[1], known[2]


_function_pickles = _FunctionPickles()
_SCALARS = frozenset((int, float, complex, str, bytes, bool, type(None)))


def _captured(fn):
    """What a by-value pickle of `fn` depends on, as a comparable tuple; None
    when some of it could change without a change we can see."""
    if type(fn) is not types.FunctionType or fn.__dict__ or fn.__kwdefaults__:
        return None
    if cloudpickle.list_registry_pickle_by_value():
        return None  # modules pickled by value: their contents are captured too
    code = fn.__code__
    namespace = fn.__globals__
    parts = [code, fn.__name__, fn.__qualname__, fn.__module__]
    for name in _code_globals(code):
        if name in namespace:
            parts.append(name)
            parts.append(_stable(namespace[name]))
    for cell in fn.__closure__ or ():
        try:
            parts.append(_stable(cell.cell_contents))
        except ValueError:  # an empty cell
            return None
    parts.append(_stable(fn.__defaults__ or ()))
    for name, annotation in fn.__annotations__.items():
        parts.append(name)
        parts.append(_stable(annotation))
    return None if _UNSTABLE in parts else tuple(parts)


_UNSTABLE = object()


def _stable(value):
    """A key equal for equal immutable scalars and for the same named
    object; `_UNSTABLE` for anything that could change in place."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value)
    if kind is tuple:
        items = tuple(_stable(item) for item in value)
        return _UNSTABLE if _UNSTABLE in items else (tuple, items)
    if kind is types.ModuleType or kind is types.BuiltinFunctionType:
        return (kind, value)
    if (isinstance(value, type) or kind is types.FunctionType) and _by_reference(value):
        return (kind, value)
    return _UNSTABLE


def _code_globals(code):
    return cloudpickle.cloudpickle._extract_code_globals(code)


def _by_reference(value):
    return cloudpickle.cloudpickle._should_pickle_by_reference(value)


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
