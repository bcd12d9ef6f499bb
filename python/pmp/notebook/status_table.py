"""`%pmp status`: one live table of every task of this notebook, a part per
Executor: the magics' (each one `%pmp config` made, not only the current
one) and those the user made in the notebook (`with pmp.Executor() as exe:
exe.map(...)`), each with its backend and its workers or batch jobs. A task
row: its name (`task_names`), its state as a coloured badge, its batch job,
node, elapsed time, and its result, error or where it runs; then how many
tasks of all shown are in each state, the legend of the states, and the task
store's entries. It is a live display like a task's: it updates while any of
the tasks is queued or running and stops at their end.

The store's part is read again only when its keys change (one directory
listing a tick) and shows at most `STORE_ROWS` entries, newest first: an
entry's metadata is read from its signed file, never unpickled.
"""

import datetime
import html

from pmp.client import registry
from pmp.client.task_names import task_name
from pmp.notebook import earlier_runs, state_style
from pmp.notebook.status_display import FutureStatus, LiveDisplay, _duration, _ticker

STORE_ROWS = 20
TASK_ROWS = 50  # the latest rows of one Executor's part; its counts are of all it keeps
_SHORT = 60  # characters of a result or an error shown in a cell of the table
_TASK_COLUMNS = ("task", "state", "job", "node", "elapsed", "detail")
_STORE_COLUMNS = ("key", "function", "state", "host", "finished", "duration")
_TASK_STATE, _STORE_STATE = 1, 2  # the columns whose cells are badges
_KEY_SHOWN = 16  # characters of a long store key shown in HTML (all of it in text/plain)
# JupyterLab's table style right-aligns cells: each cell says left itself.
_CELL = "text-align: left; vertical-align: top; padding: 0 1em 0 0"


class NotebookTask:
    """One task submitted from the notebook, as the table lists it."""

    def __init__(self, label, future, call=None):
        self.label = label
        self.future = future
        self.call = call  # (function, args, kwargs), for `%pmp graph`
        self.status = FutureStatus(future, label)  # made at submit: elapsed counts from then
        # Which Executor's part of the table it is in: the one it was just submitted to.
        self.executor = registry.executor_of(future)

    def row(self):
        """(state, cells): the cells of its row, the state for its badge."""
        future, status = self.future, self.status
        state = status.observe()
        job = getattr(future, "job", None)
        words = state
        waits = getattr(future, "job_status", None)
        if state == "queued" and waits is not None and waits.reason not in ("", "None"):
            words = f"queued: {waits.reason}"  # why it waits, in its job system's word
        place = getattr(future, "place", None)
        return state, (
            self.label,
            words,
            "" if job is None else str(job),
            _node(future, place, waits),
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


def _node(future, place, job_status):
    """Where it runs or ran: its worker's host; a batch job's nodes as its
    job system says them; else, for an ended one, the host its store entry
    names (a batch job that ended before it was seen running)."""
    if place:
        return place[2] or ""
    if job_status is not None and job_status.nodes:
        return job_status.nodes
    stored = getattr(future, "from_store", None)
    return "" if stored is None else stored.host


def _short(text):
    return text if len(text) <= _SHORT else text[:_SHORT] + "…"


class ExecutorPart:
    """One Executor's part of the table: its tasks, and what it runs them on."""

    def __init__(self, executor, tasks, magics, current=True, forgotten=0):
        self.executor = executor
        self.tasks = tasks
        self.magics = magics  # made by `%pmp config` (or the magics' first use)
        self.current = current  # ... and the one the magics use now
        self.forgotten = forgotten  # ended calls the registry no longer keeps

    def describe(self, states):
        """(the line above its rows, the line under them), `states` being its rows'."""
        info = self.executor.info  # asked once a tick: a batch one asks its job system
        return self.title(info, states), self.runs_on(info)

    def title(self, info, states):
        if info is None:  # an executorlib-style one, shut down
            backend = "shut down"
        else:
            backend = f"{info['backend']} backend" + (
                ", block allocation" if info["block_allocation"] else ""
            )
        if self.magics:
            who = "%pmp's executor" if self.current else "%pmp's earlier executor"
            if not self.current:
                backend += ", replaced by %pmp config"
        else:
            who = "an Executor made in the notebook"
        shown = _counts(states)
        more = f" (and {self.forgotten} earlier ended, no longer kept)" if self.forgotten else ""
        return f"{who} ({backend}): {shown}{more}"

    def runs_on(self, info):
        """Its workers, each named by the task it runs; with batch jobs (one
        per call, no workers), the jobs it follows."""
        if info is None:
            return "workers: none (shut down)"
        if "jobs" in info:
            jobs = ", ".join(info["jobs"]) or "none queued or running"
            return f"batch jobs ({info['backend']}, one per call): {jobs}"
        names = {getattr(t.future, "_pmp_task", None): t.label for t in self.tasks}
        workers = "; ".join(worker_line(w, names) for w in info["workers"])
        said = "workers: " + (workers or "none")
        if "allocations" in info:
            allocations = "; ".join(allocation_line(a) for a in info["allocations"])
            said += "; allocations: " + (allocations or "none yet")
        return said


def allocation_line(allocation):
    """`job 12 RUNNING on node1, 4 min left, 2 calls`, `job 13 PENDING (Priority)`."""
    job = allocation["job"] or "(being submitted)"
    state = allocation["state"]
    words = f"job {job} {state}"
    if state == "PENDING" and allocation["reason"] not in ("", "None"):
        words += f" ({allocation['reason']})"
    if allocation["nodes"] and state == "RUNNING":
        words += f" on {','.join(allocation['nodes'])}"
    if allocation["time_left"] is not None:
        words += f", {allocation['time_left'] / 60:.0f} min left, {allocation['calls']} calls"
    return words


def worker_line(worker, names):
    """`worker 0 (pid 4242): busy: slow`, by the name of the task it runs."""
    pid = f" (pid {worker['pid']})" if worker["pid"] else ""
    task = worker.get("task")
    doing = "" if task is None else f": {names.get(task, f'task {task}')}"
    return f"worker {worker['id']}{pid}: {worker['state']}{doing}"


def _counts(states):
    return ", ".join(f"{states.count(s)} {s}" for s in state_style.STATES if s in states) or "none"


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
                e.state,
                (
                    e.key,
                    e.function,
                    e.state,
                    e.host,
                    datetime.datetime.fromtimestamp(e.finished).strftime("%Y-%m-%d %H:%M:%S"),
                    _duration(e.finished - e.started),
                ),
            )
            for e in entries[:STORE_ROWS]
        ]


class StatusTable:
    """What the `%pmp status` display shows, as text and HTML."""

    def __init__(self, tasks, executor, store_root):
        self.tasks = list(tasks)
        self.executor = executor  # the magics' current one
        self.store = None if store_root is None else StoreRows(store_root)
        self.earlier = None if store_root is None else earlier_runs.InStore(store_root, executor)
        self._seen = {}  # Future -> NotebookTask, for the user's Executors' calls

    def parts(self):
        """Every Executor's part, in the order they were made: the magics'
        (`%pmp config` makes a new one) and those the user made."""
        magics, order = {}, []
        for task in self.tasks:
            key = task.executor or self.executor
            if key not in magics:
                magics[key] = []
                order.append(key)
            magics[key].append(task)
        parts = [ExecutorPart(e, magics[e], magics=True, current=e is self.executor) for e in order]
        for executor, calls in registry.executors():
            if executor in magics or executor is self.executor:
                continue  # the magics' own list names its tasks by --name
            parts.append(
                ExecutorPart(
                    executor,
                    [self._task_of(f) for f in calls.futures()],
                    magics=False,
                    forgotten=calls.forgotten,
                )
            )
        # A part is anything with `tasks` (each with `row()`) and `describe(states)`.
        return sorted(parts, key=lambda part: registry.number_of(part.executor))

    def _task_of(self, future):
        task = self._seen.get(future)
        if task is None:
            task = self._seen[future] = NotebookTask(task_name(future), future)
        return task

    def bundle(self):
        text, markup, states = [], [], []
        table = []  # HTML rows, of every part
        for part in self.parts():
            rows = [task.row() for task in part.tasks]
            part_states = [state for state, _ in rows]
            states += part_states
            title, runs_on = part.describe(part_states)
            hidden = len(rows) - TASK_ROWS
            if hidden > 0:
                rows = rows[hidden:]
                title += f"; the latest {TASK_ROWS} shown"
            text.append(title)
            if rows:
                text.append(_text_table(_TASK_COLUMNS, [cells for _, cells in rows]))
            text.append(runs_on)
            table.append(_html_caption(title))
            table += [_html_row(cells, state, _TASK_STATE) for state, cells in rows]
            table.append(_html_caption(runs_on, title=False))
        if not text:
            text.append("no tasks submitted from this notebook")
        unfinished = any(s not in ("done", "failed", "cancelled") for s in states)
        state = "running" if unfinished else "done"
        # The counts are of every row above them, whichever executor runs them.
        counts = f"tasks: {_counts(states)}"
        text.append(counts)
        if table:
            head = "".join(f"<th style='{_CELL}'>{html.escape(c)}</th>" for c in _TASK_COLUMNS)
            markup.append(f"<table><tr>{head}</tr>{''.join(table)}</table>")
        # In HTML the legend says the counts: every state, its colour and meaning.
        markup.append(state_style.legend({s: states.count(s) for s in state_style.STATES}))
        if self.store is not None:
            self.store.refresh()
            more = self.store.total - len(self.store.rows)
            entries = "entry" if self.store.total == 1 else "entries"
            title = f"task store {self.store.root}: {self.store.total} {entries}" + (
                f" ({more} older not shown)" if more > 0 else ""
            )
            text.append(title)
            markup.append(f"<div>{html.escape(title)}</div>")
            if self.store.rows:
                cells = [cells for _, cells in self.store.rows]
                text.append(_text_table(_STORE_COLUMNS, cells, indent="  "))
                markup.append(_html_table(_STORE_COLUMNS, self.store.rows))
            for line in self.earlier.lines(self.tasks):  # after a restart: what became of them
                text.append(line)
                markup.append(f"<div>{html.escape(line)}</div>")
        body = "".join(markup)
        return state, {
            "text/plain": "\n".join(text),
            "text/html": f'<div class="pmp-status-table" data-state="{state}" '
            f'style="{state_style.frame(state)}">{body}</div>',
        }


def _text_table(columns, rows, indent=""):
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *rows, strict=False)]
    lines = [columns, *rows]
    return "\n".join(
        indent + "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _html_caption(words, title=True):
    """A line of the table across all its columns: an executor's title (bold,
    apart from the part above) or its workers."""
    look = "font-weight: bold; padding-top: 0.8em" if title else state_style.MUTED
    return (
        f"<tr><td colspan='{len(_TASK_COLUMNS)}' style='{_CELL}; {look}'>"
        f"{html.escape(words)}</td></tr>"
    )


def _html_row(cells, state, badge_column, style=_CELL, shorten=()):
    """A row whose state cell is the state's badge (with why it waits, if
    known); cells of the columns in `shorten` show their start, whole in
    their tooltip."""
    shown = []
    for index, cell in enumerate(cells):
        if index == badge_column:
            reason = cell[len(state) :].lstrip(": ")
            content = state_style.badge(state) + (f" {html.escape(reason)}" if reason else "")
        elif index in shorten and len(str(cell)) > _KEY_SHOWN:
            whole = html.escape(str(cell))
            content = f"<span title='{whole}'>{html.escape(str(cell)[:_KEY_SHOWN])}…</span>"
        else:
            content = html.escape(str(cell))
        shown.append(f"<td style='{style}'>{content}</td>")
    return f"<tr>{''.join(shown)}</tr>"


def _html_table(columns, rows):
    """The store's rows: a hashed key (64 hex digits) shows its start, as
    git shows a commit; no cell wraps (a date in three lines reads badly)."""
    style = f"{_CELL}; white-space: nowrap"
    head = "".join(f"<th style='{style}'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        _html_row(cells, state, _STORE_STATE, style, shorten=(0,)) for state, cells in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def show(tasks, executor, store_root):
    """Display the live table; returns its display handle."""
    live = LiveDisplay(StatusTable(tasks, executor, store_root))
    if not live.finished:
        _ticker.watch(live)
    return live.handle
