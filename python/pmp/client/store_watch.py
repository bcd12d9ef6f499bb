"""Calls whose key another live run holds (its worker took the key's lock
file in the store): their Futures attach to that run and resolve from the
store when its entry appears, so the same call never runs twice at once.

One thread per Executor polls the store for all attached calls, starting
at 50 ms and backing off to 1 s: it costs a stat per call and poll, and no
thread at all while nothing is attached.
"""

import threading

_FIRST_POLL = 0.05
_LONGEST_POLL = 1.0


class StoreWatch:
    def __init__(self):
        self._waiting = []  # (store, key, on_stored(entry), on_released())
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None

    def attach(self, store, key, on_stored, on_released):
        """Call `on_stored(entry)` once `key` has an entry, or `on_released()`
        if its lock goes away without one (that client died or gave up)."""
        with self._lock:
            self._waiting.append((store, key, on_stored, on_released))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pmp-store-watch", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self):
        from pmp import _pmp

        interval = _FIRST_POLL
        while True:
            self._wake.wait(interval)
            woken = self._wake.is_set()
            self._wake.clear()
            interval = _FIRST_POLL if woken else min(interval * 2, _LONGEST_POLL)
            with self._lock:
                waiting, self._waiting = self._waiting, []
            still = []
            for item in waiting:
                store, key, on_stored, on_released = item
                try:
                    entry = store.read(key)
                except _pmp.InvalidEntry:  # reported by whoever reads it for real
                    on_released()
                    continue
                if entry is None and (store.lock_owner(key) is None or store.lock_is_stale(key)):
                    # Gone since the read: written just before the unlock, or never.
                    try:
                        entry = store.read(key)
                    except _pmp.InvalidEntry:
                        entry = None
                    if entry is None:
                        on_released()
                        continue
                if entry is not None:
                    on_stored(entry)
                else:
                    still.append(item)
            with self._lock:
                self._waiting = still + self._waiting
                if not self._waiting:
                    self._thread = None
                    return
