"""What an executor waits for outside its own workers: the keys that other
runs hold (a cache hit on a call that still runs elsewhere). The
scheduler's follower thread (`_pmp.KeyFollower`, Rust) does the looking: it
hands its events here, on its own thread, and this routes each one to the
code waiting for that key. No Python thread polls. (Batch calls have their
own follower, inside `_pmp.BatchCalls`.)
"""

import atexit
import itertools
import threading
import traceback
import weakref

from pmp import _pmp

_open = weakref.WeakSet()


class Following:
    """One follower thread (started at the first follow) and its handlers."""

    def __init__(self):
        self._native = None
        self._handlers = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def key(self, task_store, key, on_stored, on_released):
        """Call `on_stored(entry)` once `key` has an entry, or
        `on_released()` if its lock goes away without one (that run died or
        gave up; also when the entry fails its check, which whoever reads it
        for real reports). Returns the id to `forget` it by."""

        def handler(event):
            if isinstance(event, _pmp.JobStored) and event.entry is not None:
                on_stored(event.entry)
            else:
                on_released()

        with self._lock:
            task = next(self._ids)
            self._handlers[task] = handler
            self._follower().follow(task, task_store, key)
        return task

    def forget(self, task):
        with self._lock:
            self._handlers.pop(task, None)
            if self._native is not None:
                self._native.forget(task)

    def close(self):
        with self._lock:
            native, self._native = self._native, None
            self._handlers.clear()
        if native is not None:
            native.close()

    def _follower(self):
        if self._native is None:
            self._native = _pmp.KeyFollower(self._on_events)
            _open.add(self)
        return self._native

    def _on_events(self, events):
        for event in events:
            with self._lock:
                # Each event is a key's last: stored, or released.
                handler = self._handlers.pop(event.task, None)
            if handler is None:
                continue  # forgotten meanwhile
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - one Future's trouble must not stop the others'
                traceback.print_exc()


@atexit.register
def _close_all():
    # Before the interpreter goes, so that no follower thread calls into it.
    for following in list(_open):
        following.close()
