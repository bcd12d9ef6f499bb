"""What an executor waits for outside its own workers: its batch jobs, and
the keys that other runs hold. The scheduler's follower thread
(`_pmp.JobFollower`, Rust) does the looking: the entries in the store, what
running jobs print, the job system's states for all jobs in one call. It
hands its events here, on its own thread, and this routes each one to the
code waiting for that job or key. No Python thread polls.
"""

import atexit
import itertools
import threading
import traceback
import weakref

from pmp import _pmp

# The events after which nothing more comes for a followed task.
_LAST = (_pmp.JobStored, _pmp.JobEnded, _pmp.KeyReleased)
_open = weakref.WeakSet()


class Following:
    """One follower thread (started at the first follow) and its handlers."""

    def __init__(self, system=None, output_limit=64 * 1024):
        self._system = system  # a _pmp.JobSystem, or None: keys only
        self._output_limit = output_limit
        self._native = None
        self._handlers = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def job(self, task_store, key, job, handler):
        """Follow `key`'s batch job `job` (None: another client submits it,
        and its record will name it): `handler(event)` gets each of its
        events. Returns the id to `forget` it by."""
        with self._lock:
            task = next(self._ids)
            self._handlers[task] = handler
            self._follower().follow_job(task, task_store, key, job)
        return task

    def key(self, task_store, key, on_stored, on_released):
        """Call `on_stored(entry)` once `key` has an entry, or
        `on_released()` if its lock goes away without one (that run died or
        gave up; also when the entry fails its check, which whoever reads it
        for real reports)."""

        def handler(event):
            if isinstance(event, _pmp.JobStored) and event.entry is not None:
                on_stored(event.entry)
            else:
                on_released()

        with self._lock:
            task = next(self._ids)
            self._handlers[task] = handler
            self._follower().follow_key(task, task_store, key)
        return task

    def forget(self, task):
        with self._lock:
            self._handlers.pop(task, None)
            if self._native is not None:
                self._native.forget(task)

    def close(self):
        """Stop following: batch jobs go on without this client."""
        with self._lock:
            native, self._native = self._native, None
            self._handlers.clear()
        if native is not None:
            native.close()

    def _follower(self):
        if self._native is None:
            self._native = _pmp.JobFollower(self._on_events, self._system, self._output_limit)
            _open.add(self)
        return self._native

    def _on_events(self, events):
        for event in events:
            with self._lock:
                if isinstance(event, _LAST):
                    handler = self._handlers.pop(event.task, None)
                else:
                    handler = self._handlers.get(event.task)
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
