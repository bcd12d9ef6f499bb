"""A live status display for a Future: one `display_data` with a display_id,
then `update_display_data` at every state change (queued → running where, for
how long → done with the result / failed with the exception / cancelled).

text/html for notebooks, text/plain for everything else (nbconvert, consoles).
One ticker thread per process refreshes running tasks' elapsed time and
notices state changes; it stops when nothing is left to watch.
"""

import html
import threading
import time
import traceback

_TICK = 0.5


def _state(future):
    if future.cancelled():
        return "cancelled"
    if future.done():
        return "failed" if future.exception() is not None else "done"
    if future.running():
        return "running"
    return "queued"


class FutureStatus:
    """What the display shows for one Future, as text and HTML."""

    def __init__(self, future, label):
        self.future = future
        self.label = label
        self.submitted = time.monotonic()
        self.started = None
        self.finished = None

    def observe(self):
        """Note the times of state changes; returns the current state."""
        state = _state(self.future)
        now = time.monotonic()
        if state != "queued" and self.started is None:
            self.started = now
        if state in ("done", "failed", "cancelled") and self.finished is None:
            self.finished = now
        return state

    def _where(self):
        place = getattr(self.future, "place", None)
        if not place:
            return ""
        worker, pid, host = place
        return f" on {host}, pid {pid} (worker {worker})"

    def _elapsed(self):
        if self.started is None:
            return time.monotonic() - self.submitted
        return (self.finished or time.monotonic()) - self.started

    def summary(self, state):
        if state == "queued":
            return f"queued for {self._elapsed():.1f} s"
        if state == "running":
            return f"running{self._where()} for {self._elapsed():.1f} s"
        if state == "done":
            return f"done in {self._elapsed():.2f} s{self._where()}: {self._result_repr()}"
        if state == "cancelled":
            return "cancelled"
        error = self.future.exception()
        return f"failed after {self._elapsed():.2f} s: {type(error).__name__}: {error}"

    def _result_repr(self):
        try:
            text = repr(self.future.result())
        except Exception as error:  # noqa: BLE001 - e.g. the result cannot be unpickled here
            text = f"<result not readable here: {error}>"
        return text if len(text) <= 500 else text[:500] + "…"

    def bundle(self):
        state = self.observe()
        text = f"{self.label}: {self.summary(state)}"
        colour = {"queued": "#777", "running": "#1a6fb5", "done": "#2b8a3e"}.get(state, "#c92a2a")
        body = html.escape(self.summary(state))
        if state == "failed":
            error = self.future.exception()
            lines = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            body += (
                f"<details><summary>traceback</summary><pre>{html.escape(lines)}</pre></details>"
            )
        markup = (
            f'<div class="pmp-status" data-state="{state}" style="font-family: monospace">'
            f'<b>{html.escape(self.label)}</b> <span style="color: {colour}">{state}</span> '
            f"— {body}</div>"
        )
        return state, {"text/plain": text, "text/html": markup}


class _Ticker:
    def __init__(self):
        self._watched = []
        self._lock = threading.Lock()
        self._thread = None

    def watch(self, status, handle):
        with self._lock:
            self._watched.append((status, handle, [None]))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pmp-status", daemon=True)
                self._thread.start()

    def _run(self):
        while True:
            with self._lock:
                watched = list(self._watched)
            if not watched:
                with self._lock:
                    if not self._watched:
                        self._thread = None
                        return
            finished = []
            for entry in watched:
                status, handle, last = entry
                state, data = status.bundle()
                # Running tasks tick; others update only when their state changes.
                if state != last[0] or state in ("queued", "running"):
                    handle.update(data, raw=True)
                    last[0] = state
                if state in ("done", "failed", "cancelled"):
                    finished.append(entry)
            with self._lock:
                for entry in finished:
                    self._watched.remove(entry)
            time.sleep(_TICK)


_ticker = _Ticker()


def show(future, label="task"):
    """Display a live status for `future`; returns the display handle."""
    from IPython.display import display

    status = FutureStatus(future, label)
    _, data = status.bundle()
    handle = display(data, raw=True, display_id=True)
    _ticker.watch(status, handle)
    # Report the end at once rather than at the next tick.
    future.add_done_callback(lambda _: handle.update(status.bundle()[1], raw=True))
    return handle
