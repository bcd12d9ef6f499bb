"""How functions, calls and values become frames (a pickle, then its
protocol-5 out-of-band buffers), and back.

Futures inside a call's arguments, at any depth, become placeholders; the
worker replaces each with the value of the dependency the scheduler sends
along with the task.
"""

import io
import itertools
import operator
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
    it, made on first use: one check of what it captured serves both.

    That check (`_captured`, 1.5-3 µs) runs again only after a change (and
    at every submit of a function that is never kept): until then each
    submit only sees that the function still reads the very same objects
    (`_Known.still_current`, ~0.6 µs)."""

    def __init__(self):
        self._pickles = weakref.WeakKeyDictionary()  # function -> _Known

    def dumps(self, fn, identity=False):
        """The pickle of `fn`, and with `identity` also its identity pickle."""
        known = self._pickles.get(fn) if type(fn) is types.FunctionType else None
        if known is None or not known.still_current(fn):
            known = self._check(fn, known)
            if known is None:
                pickled = cloudpickle.dumps(fn, protocol=PROTOCOL)
                return (pickled, _dumps_identity(fn)) if identity else pickled
        if not identity:
            return known.pickle
        if known.identity is None:
            known.identity = _dumps_identity(fn)
        return known.pickle, known.identity

    def _check(self, fn, known):
        """`fn`'s `_Known`, pickled again if what it captured changed; None
        when it cannot be kept."""
        if _captured(fn) is None:
            return None  # at no more cost than before: a function pickled every time
        # Read, then check again: what changes after the read is seen next time.
        names = tuple(_code_globals(fn.__code__))
        try:
            reads = _reads(fn, names)
        except ValueError:  # a cell emptied meanwhile
            return None
        captured = _captured(fn)
        if captured is None:
            return None
        if known is None or known.captured != captured:
            known = _Known(captured, cloudpickle.dumps(fn, protocol=PROTOCOL), names, reads)
            self._pickles[fn] = known
        else:
            known.remember(names, reads)  # e.g. a global rebound to an equal int
        return known


class _Known:
    """A function's pickles, what `_captured` said when they were made, and
    the objects the function read then (`_reads`)."""

    __slots__ = ("captured", "identity", "pickle", "seen")

    def __init__(self, captured, pickled, names, reads):
        self.captured = captured
        self.pickle = pickled
        self.identity = None
        self.remember(names, reads)

    def remember(self, names, reads):
        """What the function read (`_reads(fn, names)`) just before
        `_captured` last said `self.captured`."""
        # What `_stable` keys by more than identity (a class stays "pickled
        # by name" only while importable as such, a module's class can be
        # swapped) is asked again at every check.
        # (A name its module lacks, a builtin such as `len`, is `_MISSING`:
        # found there later, it is another object.)
        rechecks = [value for value in reads[4:] if value is not _MISSING and not _fixed(value)]
        # One assignment: another thread checking meanwhile sees all of it or none.
        self.seen = (names, reads, rechecks, list(map(_stable, rechecks)))

    def still_current(self, fn):
        """Whether `_captured(fn)` is provably still `self.captured`: `fn`
        reads the same objects, each of them immutable or rechecked."""
        if fn.__dict__ or fn.__kwdefaults__ or _PICKLE_BY_VALUE_MODULES:
            return False
        names, known, rechecks, keys = self.seen
        try:
            reads = _reads(fn, names)
        except ValueError:  # a cell emptied since
            return False
        # The same objects, not equal ones (1 == 1.0 == True).
        if len(reads) != len(known) or not all(map(operator.is_, reads, known)):
            return False
        return not rechecks or list(map(_stable, rechecks)) == keys


def _reads(fn, names):
    """The objects a by-value pickle of `fn` takes, as `_captured` reads them
    (`names`: the globals its code uses), in a list. Raises ValueError for
    an empty cell. C-level iterators, and only where there is something to
    read: this runs at every submit."""
    reads = [fn.__code__, fn.__name__, fn.__qualname__, fn.__module__, fn.__defaults__]
    if names:
        reads += map(fn.__globals__.get, names, itertools.repeat(_MISSING))
    closure = fn.__closure__
    if closure:
        reads += map(_cell_contents, closure)
    annotations = fn.__annotations__
    if annotations:
        reads += itertools.chain.from_iterable(annotations.items())
    return reads


_cell_contents = operator.attrgetter("cell_contents")


def _fixed(value):
    """Whether `_stable(value)` depends on `value`'s identity alone."""
    kind = type(value)
    if kind is tuple:
        return all(_fixed(item) for item in value)
    # (A builtin function's class cannot be swapped, a module's can.)
    return kind in _SCALARS or kind is types.BuiltinFunctionType


_MISSING = object()
# Modules registered with `cloudpickle.register_pickle_by_value`, a set it
# changes in place: read at every check without copying it
# (`list_registry_pickle_by_value` does).
_PICKLE_BY_VALUE_MODULES = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
_function_pickles = _FunctionPickles()
_SCALARS = frozenset((int, float, complex, str, bytes, bool, type(None)))


def _captured(fn):
    """What a by-value pickle of `fn` depends on, as a comparable tuple; None
    when some of it could change without a change we can see."""
    if type(fn) is not types.FunctionType or fn.__dict__ or fn.__kwdefaults__:
        return None
    if _PICKLE_BY_VALUE_MODULES:
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
    if _plain_call(args, kwargs):
        # Builtin values alone hide no Future and need no cloudpickle: making
        # its Pickler (a subclass, per call) was 2-3 µs of a 2.5-4 µs call.
        # The pickle is the same bytes (a store key hashes them).
        return [pickle.dumps((args, kwargs), protocol=PROTOCOL)]
    buffers = []
    file = io.BytesIO()
    _CallPickler(file, buffers, on_future).dump((args, kwargs))
    return _frames(file.getvalue(), buffers)


# What `dumps_call` pickles without cloudpickle: exact builtin types (a
# subclass may reduce to anything, a Future among them), nested at most
# `_PLAIN_DEPTH` deep, `_PLAIN_ITEMS` values in all. Past that the scan costs
# more than the Pickler it saves, and the slow path is right for anything.
_PLAIN_SCALARS = _SCALARS
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
        if type(value) not in _PLAIN_SCALARS and not _plain(value, _PLAIN_DEPTH, budget):
            return False
    for key, value in kwargs.items():
        if type(key) is not str:  # a str subclass can be a keyword too
            return False
        if type(value) not in _PLAIN_SCALARS and not _plain(value, _PLAIN_DEPTH, budget):
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
        if type(value) not in _PLAIN_SCALARS and not _plain(value, depth - 1, budget):
            return False
    return True


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
