"""The Executors made in a notebook and the calls submitted to them, for the
notebook's overview of its tasks (`%pmp status`), which also lists the
calls of Executors the user made (`with pmp.Executor() as exe: exe.map(...)`),
not only the magics' ones.

Kept only where a notebook shows them (an Executor made in a kernel records
its calls), and small. An Executor holds its own `Calls`, and this registry
holds those only weakly: what the user lets go of ends as before (its calls
may lead back to it, a cycle the collector frees). Of its calls, an Executor
keeps the unfinished ones (its scheduler holds them anyway until their end)
and the latest `KEPT_ENDED` ended ones, so that a long-lived Executor does
not keep every result alive.
"""

import itertools
import threading
import weakref

KEPT_ENDED = 50

_live = weakref.WeakSet()  # the Calls of live Executors
_numbers = itertools.count(1)


class Calls:
    """One Executor's calls in submit order: the unfinished ones and the
    latest ended ones; `forgotten` counts the ended ones let go."""

    def __init__(self, executor):
        self.executor = weakref.ref(executor)
        self.number = next(_numbers)  # the Executor's, in the order they were made
        self.forgotten = 0
        self._lock = threading.Lock()
        self._futures = []
        self._limit = 2 * KEPT_ENDED

    def add(self, future):
        with self._lock:
            self._futures.append(future)
            if len(self._futures) > self._limit:
                self._let_go()

    def _let_go(self):
        """Let go of the ended calls but the latest KEPT_ENDED; asked (by
        `done()`, which waits for nothing) only once the list has doubled, so
        that a call costs the same however many came before."""
        ended = [index for index, future in enumerate(self._futures) if future.done()]
        gone = set(ended[:-KEPT_ENDED])
        if gone:
            self._futures = [f for index, f in enumerate(self._futures) if index not in gone]
            self.forgotten += len(gone)
        self._limit = max(2 * KEPT_ENDED, 2 * len(self._futures))

    def holds(self, future):
        with self._lock:
            # A call just submitted is the last one: found first.
            return any(kept is future for kept in reversed(self._futures))

    def futures(self):
        """The calls kept, in submit order."""
        with self._lock:
            self._let_go()
            return list(self._futures)


def new_calls(executor):
    """Where `executor` records its calls (`Calls.add`); it holds them."""
    calls = Calls(executor)
    _live.add(calls)
    return calls


def executors():
    """[(Executor, Calls)] of the live Executors that record their calls,
    in the order they were made."""
    found = [(calls.executor(), calls) for calls in list(_live)]
    return sorted(
        [(executor, calls) for executor, calls in found if executor is not None],
        key=lambda item: item[1].number,
    )


def executor_of(future):
    """The live Executor that `future` was submitted to, while it keeps the
    call (a call just submitted is kept); None if none does."""
    for executor, calls in executors():
        if calls.holds(future):
            return executor
    return None


def number_of(executor):
    """The Executor's place in the order they were made; one not recorded
    (made outside a kernel) comes last."""
    calls = getattr(executor, "_notebook_calls", None)
    return float("inf") if calls is None else calls.number
