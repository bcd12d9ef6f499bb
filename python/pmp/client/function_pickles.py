"""Pickles of functions, kept between submits: a function submitted again
is not pickled again while what its pickle captured provably did not change
(see `FunctionPickles`). `serialize` makes the pickles; this module decides
when one made before is still the one a fresh pickle would be."""

import itertools
import operator
import types
import weakref

import cloudpickle


class FunctionPickles:
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

    def __init__(self, dumps, dumps_identity):
        self._dumps = dumps  # fn -> its pickle
        self._dumps_identity = dumps_identity  # fn -> its identity pickle
        self._pickles = weakref.WeakKeyDictionary()  # function -> _Known

    def dumps(self, fn, identity=False):
        """The pickle of `fn`, and with `identity` also its identity pickle."""
        known = self._pickles.get(fn) if type(fn) is types.FunctionType else None
        if known is None or not known.still_current(fn):
            known = self._check(fn, known)
            if known is None:
                pickled = self._dumps(fn)
                return (pickled, self._dumps_identity(fn)) if identity else pickled
        if not identity:
            return known.pickle
        if known.identity is None:
            known.identity = self._dumps_identity(fn)
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
            known = _Known(captured, self._dumps(fn), names, reads)
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
    return kind in SCALARS or kind is types.BuiltinFunctionType


_MISSING = object()
# Modules registered with `cloudpickle.register_pickle_by_value`, a set it
# changes in place: read at every check without copying it
# (`list_registry_pickle_by_value` does).
_PICKLE_BY_VALUE_MODULES = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
SCALARS = frozenset((int, float, complex, str, bytes, bool, type(None)))


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
    if kind in SCALARS:
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
