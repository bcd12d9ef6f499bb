"""A function submitted again is pickled again only when what its pickle
captured changed (`pmp.client.function_pickles.FunctionPickles`), counted
here by the pickles it asks for."""

import pytest
from pmp.client.function_pickles import FunctionPickles

LIMIT = 3
TABLE = [1, 2]


class Counting:
    """A FunctionPickles whose pickles are counted and name their version."""

    def __init__(self):
        self.made = 0
        self.identities = 0
        self.pickles = FunctionPickles(self._dumps, self._identity)

    def _dumps(self, fn):
        self.made += 1
        return f"pickle {self.made}"

    def _identity(self, fn):
        self.identities += 1
        return f"identity {self.identities}"


def below_limit(x):
    return x < LIMIT


def reads_table():
    return TABLE


@pytest.fixture
def counting():
    return Counting()


def test_an_unchanged_function_is_pickled_once(counting):
    assert counting.pickles.dumps(below_limit) == "pickle 1"
    assert counting.pickles.dumps(below_limit) == "pickle 1"
    assert counting.made == 1


def test_a_rebound_global_makes_a_new_pickle_an_equal_one_does_not(counting, monkeypatch):
    counting.pickles.dumps(below_limit)
    monkeypatch.setitem(globals(), "LIMIT", 3)
    assert counting.pickles.dumps(below_limit) == "pickle 1"
    monkeypatch.setitem(globals(), "LIMIT", 4)
    assert counting.pickles.dumps(below_limit) == "pickle 2"
    monkeypatch.setitem(globals(), "LIMIT", 4.0)  # equal, but another type
    assert counting.pickles.dumps(below_limit) == "pickle 3"


def test_a_function_that_reads_something_mutable_is_pickled_every_time(counting):
    counting.pickles.dumps(reads_table)
    counting.pickles.dumps(reads_table)
    assert counting.made == 2


def test_a_changed_default_or_closure_makes_a_new_pickle(counting):
    def with_default(x=1):
        return x

    counting.pickles.dumps(with_default)
    with_default.__defaults__ = (2,)
    assert counting.pickles.dumps(with_default) == "pickle 2"

    seen = 1

    def closure():
        return seen

    counting.pickles.dumps(closure)
    assert counting.pickles.dumps(closure) == "pickle 3"
    seen = 2  # read by closure() through its cell
    assert counting.pickles.dumps(closure) == "pickle 4"


def test_the_identity_pickle_is_made_once_on_first_use_and_kept_with_the_pickle(counting):
    counting.pickles.dumps(below_limit)
    assert counting.identities == 0
    assert counting.pickles.dumps(below_limit, identity=True) == ("pickle 1", "identity 1")
    assert counting.pickles.dumps(below_limit, identity=True) == ("pickle 1", "identity 1")
    assert counting.identities == 1


def test_what_is_no_plain_function_is_pickled_every_time(counting):
    counting.pickles.dumps(len)
    counting.pickles.dumps(len)
    assert counting.made == 2
