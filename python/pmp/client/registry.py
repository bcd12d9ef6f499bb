"""The Executors made in a notebook and the calls submitted to them, for the
notebook's overview of its tasks (`%pmp status`), which also lists the
calls of Executors the user made (`with pmp.Executor() as exe: exe.map(...)`),
not only the magics' ones.

Kept only where a notebook shows them (the Executor records its calls when
it runs in a kernel), and small: an Executor is held weakly, so that the
user's `del exe` still ends it; of its calls, the unfinished ones (which its
scheduler holds anyway until their end) and the latest `KEPT_ENDED` ended
ones, so that a long-lived Executor does not keep every result alive.
"""

import collections
import itertools
import threading
import weakref

KEPT_ENDED = 50

_lock = threading.Lock()
_calls = weakref.WeakKeyDictionary()  # Executor -> Calls
_numbers = itertools.count(1)


class Calls:
    """One Executor's calls, in submit order: the unfinished ones and the
    latest ended ones; `forgotten` counts the ended ones let go."""

    def __init__(self, number):
        self.number = number  # the Executor's number, in the order they were made
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._unfinished = {}  # Future -> its place in submit order
        self._ended = collections.deque()  # (place, Future), oldest first
        self.forgotten = 0

    def add(self, future):
        with self._lock:
            self._unfinished[future] = next(self._order)
        # Runs at once for a Future that is done already (from the store, failed at submit).
        future.add_done_callback(self._ended_one)

    def _ended_one(self, future):
        with self._lock:
            place = self._unfinished.pop(future, None)
            if place is None:
                return
            self._ended.append((place, future))
            if len(self._ended) > KEPT_ENDED:
                self._ended.popleft()
                self.forgotten += 1

    def holds(self, future):
        with self._lock:
            return future in self._unfinished or any(f is future for _, f in self._ended)

    def futures(self):
        """The calls kept, in submit order."""
        with self._lock:
            kept = [*self._ended, *((place, f) for f, place in self._unfinished.items())]
        return [future for _, future in sorted(kept, key=lambda item: item[0])]


def calls_of(executor):
    """Where `executor` records its calls (`Calls.add`)."""
    with _lock:
        calls = _calls.get(executor)
        if calls is None:
            calls = _calls[executor] = Calls(next(_numbers))
        return calls


def executors():
    """[(Executor, Calls)] of the live Executors that recorded calls, in the
    order they were made."""
    with _lock:
        found = list(_calls.items())
    return sorted(found, key=lambda item: item[1].number)


def executor_of(future):
    """The live Executor that `future` was submitted to, while its calls
    keep it (a call just submitted is kept); None if none does."""
    for executor, calls in executors():
        if calls.holds(future):
            return executor
    return None
