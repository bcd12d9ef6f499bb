"""`%pmp status`: one live table of this notebook's tasks (state, batch job,
node, elapsed time, result or error), how many are in each state, the
executor's workers (with per-call batch jobs, the jobs it follows), and the
task store's entries. It is a live display like a task's: it updates while any
of the tasks is queued or running and stops at their end.

The store's part is read again only when its keys change (one directory
listing a tick) and shows at most `STORE_ROWS` entries, newest first: an
entry's metadata is read from its signed file, never unpickled.
"""

import datetime
import html

from pmp.notebook import earlier_runs
from pmp.notebook.status_display import FutureStatus, LiveDisplay, _duration, _ticker

STORE_ROWS = 20
_SHORT = 60  # characters of a result or an error shown in a cell of the table
_STATES = ("queued", "running", "done", "failed", "cancelled")
_TASK_COLUMNS = ("task", "state", "job", "node", "elapsed", "detail")
_STORE_COLUMNS = ("key", "function", "state", "host", "finished", "duration")


class NotebookTask:
    """One task submitted from the notebook, as the table lists it."""

    def __init__(self, label, future, call=None):
        self.label = label
        self.future = future
        self.call = call  # (function, args, kwargs), for `%pmp graph`
        self.status = FutureStatus(future, label)  # made at submit: elapsed counts from then

    def row(self):
        future, status = self.future, self.status
        state = status.observe()
        job = getattr(future, "job", None)
        words = state
        waits = getattr(future, "job_status", None)
        if state == "queued" and waits is not None and waits.reason not in ("", "None"):
            words = f"queued: {waits.reason}"  # why it waits, in its job system's word
        place = getattr(future, "place", None)
        node = place[2] if place else ""
        return (
            self.label,
            words,
            "" if job is None else str(job),
            node or "",
            _duration(status._elapsed()),
            self._detail(state, place),
        )

    def _detail(self, state, place):
        future = self.future
        if state == "running" and place and place[1]:
            return f"pid {place[1]} (worker {place[0]})"
        if state == "done":
            shown = _short(self.status._result_repr())
            stored = getattr(future, "from_store", None)
            if stored is not None and getattr(future, "reused", True):
                from pmp.client.store import describe

                shown += f", {describe(stored)}"
            return shown
        if state == "failed":
            error = future.exception()
            return _short(f"{type(error).__name__}: {error}")
        return ""


def _short(text):
    return text if len(text) <= _SHORT else text[:_SHORT] + "…"


class StoreRows:
    """The store's entries for the table, read again when its keys change."""

    def __init__(self, root):
        from pmp.client.store import open_store

        self.root = root
        self._store = open_store(root)
        self._keys = None
        self.rows, self.total = [], 0

    def refresh(self):
        from pmp import _pmp

        keys = frozenset(self._store.stored_keys())
        if keys == self._keys:
            return
        self._keys, self.total = keys, len(keys)
        entries = []
        for key in keys:
            try:
                entry = self._store.read(key)
            except _pmp.InvalidEntry:
                continue  # reported by whoever would unpickle it
            if entry is not None:
                entries.append(entry)
        entries.sort(key=lambda e: e.finished, reverse=True)
        self.rows = [
            (
                e.key,
                e.function,
                e.state,
                e.host,
                datetime.datetime.fromtimestamp(e.finished).strftime("%Y-%m-%d %H:%M:%S"),
                _duration(e.finished - e.started),
            )
            for e in entries[:STORE_ROWS]
        ]


class StatusTable:
    """What the `%pmp status` display shows, as text and HTML."""

    def __init__(self, tasks, executor, store_root):
        self.tasks = list(tasks)
        self.executor = executor
        self.store = None if store_root is None else StoreRows(store_root)
        self.earlier = None if store_root is None else earlier_runs.InStore(store_root, executor)

    def bundle(self):
        states = [task.status.observe() for task in self.tasks]
        rows = [task.row() for task in self.tasks]
        unfinished = any(s not in ("done", "failed", "cancelled") for s in states)
        state = "running" if unfinished else "done"
        # The counts are of the rows above them: the tasks of this notebook,
        # whichever executor (`%pmp config` makes a new one) runs them.
        counts = ", ".join(f"{states.count(s)} {s}" for s in _STATES if s in states) or "none"
        text = [
            _text_table(_TASK_COLUMNS, rows) if rows else "no tasks submitted from this notebook"
        ]
        markup = [_html_table(_TASK_COLUMNS, rows)] if rows else []
        for line in (f"tasks: {counts}", self._runs_on()):
            text.append(line)
            markup.append(f"<div>{html.escape(line)}</div>")
        if self.store is not None:
            self.store.refresh()
            more = self.store.total - len(self.store.rows)
            title = f"task store {self.store.root}: {self.store.total} entries" + (
                f" ({more} older not shown)" if more > 0 else ""
            )
            text.append(title)
            markup.append(f"<div>{html.escape(title)}</div>")
            if self.store.rows:
                text.append(_text_table(_STORE_COLUMNS, self.store.rows, indent="  "))
                markup.append(_html_table(_STORE_COLUMNS, self.store.rows))
            for line in self.earlier.lines(self.tasks):  # after a restart: what became of them
                text.append(line)
                markup.append(f"<div>{html.escape(line)}</div>")
        body = "".join(markup)
        return state, {
            "text/plain": "\n".join(text),
            "text/html": f'<div class="pmp-status-table" data-state="{state}" '
            f'style="font-family: monospace">{body}</div>',
        }

    def _runs_on(self):
        """The executor's workers; with batch jobs (one per call, no
        workers), the jobs it follows."""
        info = self.executor.info
        if "jobs" in info:
            jobs = ", ".join(info["jobs"]) or "none queued or running"
            return f"batch jobs ({info['backend']}, one per call): {jobs}"
        return "workers: " + ("; ".join(map(worker_line, info["workers"])) or "none")


def worker_line(worker):
    """`worker 0 (pid 4242): busy: task 3`."""
    pid = f" (pid {worker['pid']})" if worker["pid"] else ""
    task = f": task {worker['task']}" if worker.get("task") is not None else ""
    return f"worker {worker['id']}{pid}: {worker['state']}{task}"


def _text_table(columns, rows, indent=""):
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *rows, strict=False)]
    lines = [columns, *rows]
    return "\n".join(
        indent + "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _html_table(columns, rows):
    head = "".join(f"<th style='text-align: left'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='padding-right: 1em'>{html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def show(tasks, executor, store_root):
    """Display the live table; returns its display handle."""
    live = LiveDisplay(StatusTable(tasks, executor, store_root))
    if not live.finished:
        _ticker.watch(live)
    return live.handle
