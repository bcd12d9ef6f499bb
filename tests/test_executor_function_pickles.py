"""A function submitted again is not pickled again (serialize._FunctionPickles),
but never at the price of a stale value: whatever the function captures that
changed since — a rebound global, a mutated list, a closure cell, a default —
reaches the worker."""

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
