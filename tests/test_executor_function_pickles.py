"""A function submitted again is not pickled again (function_pickles.FunctionPickles),
but never at the price of a stale value: whatever the function captures that
changed since — a rebound global, a mutated list, a closure cell, a default —
reaches the worker."""

import sys
import types

import cloudpickle
import pytest
from pmp.client import serialize

SCRIPT = """
from pmp import Executor

offset = 1
big = 10**30
items = [1]


def add(x):
    return x + offset


def add_big(x):
    return x + big


def total():
    return sum(items)


def scaled(x, factor=2):
    return x * factor


def make():
    k = 1

    def plus_k(x):
        return x + k

    def set_k(value):
        nonlocal k
        k = value

    return plus_k, set_k


plus_k, set_k = make()
with Executor(max_workers=1, block_allocation=True) as exe:
    def run(fn, *args):
        return exe.submit(fn, *args).result(timeout=60)

    print(run(add, 1), end=" ")
    offset = 10
    print(run(add, 1), end=" ")
    offset = 10.0
    print(run(add, 1))
    print(run(add_big, 0) - 10**30, end=" ")
    big = 10**30 + 7  # may reuse the old int's address: compared by value
    print(run(add_big, 0) - 10**30)
    print(run(total), end=" ")
    items.append(5)
    print(run(total))
    print(run(plus_k, 1), end=" ")
    set_k(5)
    print(run(plus_k, 1))
    print(run(scaled, 3), end=" ")
    scaled.__defaults__ = (3,)
    print(run(scaled, 3))
"""


def test_what_a_function_captures_is_never_stale(run_script):
    done = run_script(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["2 11 11.0", "0 7", "1 6", "2 6", "6 9"]


def _answer():
    return 42


def test_an_unchanged_function_is_pickled_once_a_changed_one_again():
    first = serialize.dumps_function(_answer)
    assert serialize.dumps_function(_answer) is first
    mutable = [1]

    def reads_a_list():
        return mutable

    # A list can change in place: never taken from the cache.
    assert serialize.dumps_function(reads_a_list) is not serialize.dumps_function(reads_a_list)


def _by_value(source):
    """The namespace of `source` run as a module that cannot be imported:
    its functions are pickled by value, as a notebook's are."""
    namespace = {"__name__": "pmp_test_not_importable"}
    exec(source, namespace)  # noqa: S102 - the test's own source
    return namespace


def _fresh(fn):
    return cloudpickle.dumps(fn, protocol=serialize.PROTOCOL)


def _reads_a_global():
    """A function pickled by value that reads the global `setting` (1), its
    namespace, and its first pickle."""
    namespace = _by_value("setting = 1\ndef reads():\n    return setting\n")
    reads = namespace["reads"]
    return namespace, reads, serialize.dumps_function(reads)


def test_a_global_rebound_to_an_equal_int_keeps_the_pickle_another_type_does_not():
    namespace, reads, first = _reads_a_global()
    namespace["setting"] = int("1")  # another object, the same value
    assert serialize.dumps_function(reads) is first
    for value in (1.0, True, 2, "1"):  # 1 == 1.0 == True: by value and type
        namespace["setting"] = value
        assert serialize.dumps_function(reads) == _fresh(reads)
    namespace["setting"] = 1
    assert serialize.dumps_function(reads) == first


def test_a_global_that_goes_or_comes_is_seen():
    namespace, reads, first = _reads_a_global()
    del namespace["setting"]
    assert serialize.dumps_function(reads) == _fresh(reads) != first
    namespace["setting"] = 1
    assert serialize.dumps_function(reads) == first


def test_a_builtin_shadowed_by_a_global_later_is_seen():
    namespace = _by_value("def size():\n    return len('ab')\n")
    size = namespace["size"]
    first = serialize.dumps_function(size)
    assert serialize.dumps_function(size) is first
    namespace["len"] = abs  # the module's own `len` from now on
    assert serialize.dumps_function(size) == _fresh(size) != first


def test_what_a_function_reads_besides_globals_is_seen():
    plus_k, set_k, clear_k = _by_value(
        """
def make():
    k = 1

    def plus_k(x: int) -> int:
        return x + k

    def set_k(value):
        nonlocal k
        k = value

    def clear_k():
        nonlocal k
        del k

    return plus_k, set_k, clear_k
"""
    )["make"]()

    def current():
        pickled = serialize.dumps_function(plus_k)
        assert pickled == _fresh(plus_k)
        return pickled

    first = current()
    assert current() is first
    set_k(2)
    assert current() != first
    plus_k.__annotations__["x"] = float  # in place
    current()
    plus_k.__defaults__ = (3,)
    current()
    plus_k.__qualname__ = "renamed"
    current()
    plus_k.__code__ = plus_k.__code__.replace(co_name="changed")
    current()
    clear_k()  # an empty cell: never kept
    assert serialize.dumps_function(plus_k) is not serialize.dumps_function(plus_k)


@pytest.fixture
def named_module(monkeypatch):
    """An importable module that holds a class `Named`."""
    module = types.ModuleType("pmp_test_named")

    class Named:
        pass

    Named.__module__, Named.__qualname__ = module.__name__, "Named"
    module.Named = Named
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_a_class_global_is_asked_again_whether_it_pickles_by_name(named_module, monkeypatch):
    namespace = _by_value("def make():\n    return helper()\n")
    namespace["helper"] = named_module.Named
    make = namespace["make"]
    first = serialize.dumps_function(make)
    assert serialize.dumps_function(make) is first
    del named_module.Named  # the same class, no longer importable: pickled by value
    assert serialize.dumps_function(make) is not first
    assert serialize.dumps_function(make) is not serialize.dumps_function(make)


def test_modules_pickled_by_value_turn_the_cache_off(named_module):
    answer = _by_value("def answer():\n    return 42\n")["answer"]
    first = serialize.dumps_function(answer)
    cloudpickle.register_pickle_by_value(named_module)
    try:
        assert serialize.dumps_function(answer) is not serialize.dumps_function(answer)
    finally:
        cloudpickle.unregister_pickle_by_value(named_module)
    assert serialize.dumps_function(answer) is first
