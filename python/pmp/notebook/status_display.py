"""Live status displays: one `display_data` with a display_id, then
`update_display_data` at every change. For a Future: queued → running where,
for how long, with what it printed so far → done with the result / failed
with the exception / cancelled. For many Futures (`Executor.map`, or any
group: `show_progress`): one progress display, a bar of their states,
done/total, their failures.

text/html for notebooks (states look as `state_style` draws them, tasks are
named as `task_names` names them; plain HTML, no widgets), text/plain for
everything else (nbconvert, consoles): the same facts, one line a display
and what the task printed. The HTML is redrawn at every change, so a fold
the reader opened stays open only once its display stopped changing.
One ticker thread per process refreshes running tasks' elapsed time and
notices state changes; it stops when nothing is left to watch.
"""

import concurrent.futures
import html
import threading
import time
import traceback

from pmp.client.task_names import task_name
from pmp.notebook import earlier_runs
from pmp.notebook.state_style import MUTED, STATES, badge, bar, colour, frame, legend

_TICK = 0.5
_FINISHED = ("done", "failed", "cancelled")
_OPEN_LINES = 12  # printed output this short stays open once the task ended
_SHORT_RESULT = 100  # a result's repr this short is shown on its line, unfolded
_RESULT_TITLE = 60  # ... and a longer one's beginning, as the title of its fold
_FAILURES_SHOWN = 20  # failures a group's display lists


def _duration(seconds):
    """Short and readable: 0.3 ms, 12 ms, 3.4 s, 2 min 5 s."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s"


# Why a batch job waits, for the reasons users meet (Slurm's words, then
# Flux's states); any other reason is shown as the job system says it.
JOB_REASONS = {
    "Priority": "jobs of higher priority go first",
    "Resources": "waiting for free nodes",
    "Dependency": "waiting for the jobs it depends on to end",
    "DependencyNeverSatisfied": "a job it depends on failed, so it will never start",
    "BeginTime": "its start time (--begin) has not come yet",
    "JobHeldUser": "held by its user: `scontrol release JOB` lets it start",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved",
    "PartitionTimeLimit": "its time limit is above its partition's: it will never start",
    "QOSMaxJobsPerUserLimit": "you run as many jobs as your QOS allows",
    "DEPEND": "waiting for the jobs it depends on to end",
    "PRIORITY": "its priority is being set",
    "SCHED": "waiting for free resources",
}


def allocation_words(future):
    """What a queued call of an Executor with elastic allocations waits for:
    `waiting for an allocation: job 123 PENDING (Priority)`; None for an
    Executor without allocations."""
    table = getattr(future, "_pmp_table", None)
    scheduler = getattr(table, "scheduler", None)
    if scheduler is None:
        return None
    allocations = scheduler.info().get("allocations")
    if allocations is None:
        return None
    coming = [a for a in allocations if a["state"] in ("SUBMITTING", "PENDING")]
    if coming:
        parts = []
        for a in coming:
            if a["job"] is None:
                parts.append("being submitted")
                continue
            reason = a["reason"] if a["reason"] not in ("", "None") else ""
            known = JOB_REASONS.get(reason.split(",", 1)[0].strip())
            why = f" ({reason}{f': {known}' if known else ''})" if reason else ""
            parts.append(f"job {a['job']} PENDING{why}")
        return "waiting for an allocation: " + ", ".join(parts)
    running = [a for a in allocations if a["state"] == "RUNNING"]
    if running:
        jobs = ", ".join(f"job {a['job']}" for a in running)
        return f"waiting for room in the allocations ({jobs})"
    return "waiting for an allocation"


def job_words(future):
    """A batch job's state in words: `job 83 waiting in Slurm's queue:
    Priority (jobs of higher priority go first)`, `job 83 on node[1-2]`."""
    status, job = getattr(future, "job_status", None), future.job
    if status is None:  # attached to, not asked about yet
        return f"job {job}"
    if status.state == "PENDING":
        words = f"job {job} waiting in {status.system}'s queue"
        if status.reason and status.reason != "None":
            words += f": {status.reason}"
            # Slurm may add its details after the reason's word:
            # `ReqNodeNotAvail, Reserved for maintenance`.
            known = JOB_REASONS.get(status.reason.split(",", 1)[0].strip())
            if known:
                words += f" ({known})"
        return words
    if status.state == "RUNNING":
        return f"job {job} on {status.nodes}" if status.nodes else f"job {job}"
    return f"job {job} {status.state}"


def _as_shown(chunks):
    """Consecutive chunks of one stream joined, each line showing what a
    terminal would after carriage returns (progress bars redraw with \\r)."""
    merged = []
    for name, part in chunks:
        if merged and merged[-1][0] == name:
            merged[-1][1].append(part)
        else:
            merged.append((name, [part]))
    shown = []
    for name, parts in merged:
        lines = "".join(parts).split("\n")
        shown.append((name, "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)))
    return shown


def log_line(future):
    """The line above what a batch job printed that names its log in the
    task store, where all of it is (the display keeps the last 64 KiB);
    "" for other Futures."""
    path = getattr(future, "log_path", None)
    if path is None:
        return ""
    if getattr(future, "output_truncated", False):
        return f"output: {path} (the last 64 KiB below; earlier lines are in that file)"
    return f"output: {path}"


def state_of(future):
    if future.cancelled():
        return "cancelled"
    if future.done():
        return "failed" if future.exception() is not None else "done"
    if future.running():
        return "running"
    return "queued"


class FutureStatus:
    """What the display shows for one Future, as text and HTML: its name, its
    state as a badge, a clock, where it runs (or the batch job it waits
    for, and why), then the result, the exception's traceback and what it
    printed, folded where they are long."""

    def __init__(self, future, label):
        self.future = future
        self.label = label
        self.submitted = time.monotonic()
        self.seen_start = None
        self.seen_end = None

    def observe(self):
        """Note when state changes were seen; returns the current state."""
        state = state_of(self.future)
        now = time.monotonic()
        if state != "queued" and self.seen_start is None:
            self.seen_start = now
        if state in _FINISHED and self.seen_end is None:
            self.seen_end = now
        return state

    def _place(self):
        """Where it runs or ran, as parts: (host, pid, worker), or (node, job)."""
        place = getattr(self.future, "place", None)
        if not place:
            return ()
        worker, pid, host = place
        if pid is None:  # a batch job: `worker` names it
            return (host, worker)
        return (host, f"pid {pid}", f"worker {worker}")

    def _where(self):
        parts = self._place()
        if not parts:
            return ""
        if len(parts) == 2:
            return f" on {parts[0]} ({parts[1]})"
        return f" on {parts[0]}, {parts[1]} ({parts[2]})"

    def _elapsed(self):
        """One clock: a pmp Future's own start and end, read at every call
        (a batch job's come from Slurm or the store, also after they were
        first seen); other Futures are timed as seen."""
        future = self.future
        started = getattr(future, "started_at", None)
        finished = getattr(future, "finished_at", None)
        if self.seen_end is not None:
            # A task that failed before it ran (its dependency failed) starts as it ends.
            finished = finished or self.seen_end
            started = started or finished
        started = started or self.seen_start
        if started is None:
            return time.monotonic() - self.submitted
        return max((finished or time.monotonic()) - started, 0.0)

    def _stored(self):
        """The store entry it was served from (not computed for this call), or None."""
        stored = getattr(self.future, "from_store", None)
        if stored is not None and getattr(self.future, "reused", True):
            return stored
        return None

    def summary(self, state):
        """The text/plain line after the name: the state first, then how
        long, where, and the result or the exception."""
        job = getattr(self.future, "job", None)
        if job is not None and state in ("queued", "running"):
            return f"{state} for {_duration(self._elapsed())}: {job_words(self.future)}"
        if state == "queued":
            waits = allocation_words(self.future)
            return f"queued for {_duration(self._elapsed())}" + (f": {waits}" if waits else "")
        if state == "running":
            return f"running{self._where()} for {_duration(self._elapsed())}"
        if state == "done":
            stored = self._stored()
            if stored is not None:
                from pmp.client.store import describe

                took = _duration(stored.finished - stored.started)
                return f"done in {took}, {describe(stored)}: {self._result_repr()}"
            return f"done in {_duration(self._elapsed())}{self._where()}: {self._result_repr()}"
        if state == "cancelled":
            return "cancelled"
        error = self.future.exception()
        took = _duration(self._elapsed())
        return f"failed after {took}{self._failed_where()}: {type(error).__name__}: {error}"

    def _failed_where(self):
        # A batch job that ended before it was seen running has no place: its job says where.
        job = getattr(self.future, "job", None)
        return self._where() or (f" in job {job}" if job is not None else "")

    def _result_repr(self):
        try:
            text = repr(self.future.result())
        except Exception as error:  # noqa: BLE001 - e.g. the result cannot be unpickled here
            text = f"<result not readable here: {error}>"
        return text if len(text) <= 500 else text[:500] + "…"

    def _output(self, state):
        """What the task printed: (plain text, HTML); stderr shown in red.
        While it runs, open and only its last lines: the display is redrawn
        at every tick, which would close a fold the reader opened and scroll
        back to the top. Once it ended, all of it, folded unless short."""
        chunks = _as_shown(getattr(self.future, "output_chunks", list)())
        if not chunks:
            return "", ""
        text = "".join(part for _, part in chunks)
        lines = len(text.rstrip("\n").split("\n"))
        live = state in ("queued", "running")
        title = f"output, {_count(lines, 'line')}"
        if live and lines > _OPEN_LINES:
            chunks = _last_lines(chunks, _OPEN_LINES)
            title += f", the last {_OPEN_LINES} shown"
        markup = "".join(
            f'<span style="color: {colour("failed")}">{html.escape(part)}</span>'
            if name == "stderr"
            else html.escape(part)
            for name, part in chunks
        )
        opened = " open" if live or lines <= _OPEN_LINES else ""
        style = "margin: 0 0 0 1em; max-height: 20em; overflow: auto"
        note = log_line(self.future)
        return (f"{note}\n" if note else "") + text, (
            (f'<div class="pmp-log" style="{MUTED}">{html.escape(note)}</div>' if note else "")
            + f'<details{opened}><summary style="{MUTED}">{title}</summary>'
            f'<pre class="pmp-output" style="{style}">{markup}</pre></details>'
        )

    def _clock(self, state):
        """The clock beside the badge: how long it has waited, runs, ran."""
        if state == "cancelled":
            return ""
        stored = self._stored() if state == "done" else None
        seconds = stored.finished - stored.started if stored is not None else self._elapsed()
        meaning = {
            "queued": "waiting since it was submitted",
            "running": "running since a worker took it",
        }.get(state, "how long it ran")
        return (
            f' <span class="pmp-clock" title="{meaning}" style="font-variant-numeric: '
            f'tabular-nums">{_duration(seconds)}</span>'
        )

    def _details(self, state):
        """The lines under the heading, in HTML: where a stored result comes
        from, the result, the exception."""
        future = self.future
        rows = []
        if state == "done":
            stored = self._stored()
            if stored is not None:
                from pmp.client.store import describe

                rows.append(f'<div style="{MUTED}">{html.escape(describe(stored))}</div>')
            rows.append(_result_html(self._result_repr()))
        if state == "failed":
            error = future.exception()
            lines = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            rows.append(
                f"<details><summary>{html.escape(f'{type(error).__name__}: {error}')}</summary>"
                f'<pre class="pmp-traceback">{html.escape(lines)}</pre></details>'
            )
        return "".join(rows)

    def _where_html(self, state):
        """Where it runs or ran, in HTML; for a batch job not ended yet, its
        job and where it runs or why it still waits."""
        if getattr(self.future, "job", None) is not None and state in ("queued", "running"):
            return f' <span class="pmp-job">{html.escape(job_words(self.future))}</span>'
        if state == "failed":
            where = self._failed_where()
        elif state == "running" or (state == "done" and self._stored() is None):
            where = self._where()
        else:  # not run yet, or a stored result: its own line says where it was computed
            where = ""
        if not where:
            return ""
        return f' <span class="pmp-where" style="{MUTED}">{html.escape(where.strip())}</span>'

    def _heading(self, state):
        """Name, badge, clock and where, in HTML: one line."""
        return (
            f"<div><b>{html.escape(self.label)}</b> {badge(state)}{self._clock(state)}"
            f"{self._where_html(state)}</div>"
        )

    def bundle(self):
        state = self.observe()
        summary = self.summary(state)
        printed, printed_html = self._output(state)
        # A call that met an earlier run of its key (a kernel restart) says what became of it.
        met = earlier_runs.note(self.future)
        text = f"{self.label}: {summary}" + (f"\n{met}" if met else "")
        text += f"\n{printed.rstrip()}" if printed else ""
        met_html = (
            f'<div class="pmp-earlier-run" style="{MUTED}">{html.escape(met)}</div>' if met else ""
        )
        markup = (
            f'<div class="pmp-status" data-state="{state}" style="{frame(state)}">'
            f"{self._heading(state)}{met_html}{self._details(state)}{printed_html}</div>"
        )
        return state, {"text/plain": text, "text/html": markup}


def _last_lines(chunks, count):
    """The part of `chunks` ([(stream, text)]) that is their last `count` lines."""
    lines = [[]]  # each line: its [(stream, text)] pieces
    for name, part in chunks:
        pieces = part.split("\n")
        for i, piece in enumerate(pieces):
            ends = i < len(pieces) - 1
            if piece or ends:
                lines[-1].append((name, piece + "\n" if ends else piece))
            if ends:
                lines.append([])
    if not lines[-1]:
        lines.pop()
    return [piece for line in lines[-count:] for piece in line]


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _result_html(shown):
    """The result: one short line as it is; longer ones folded, their
    beginning in the fold's title."""
    label = f'<span style="{MUTED}">result:</span> '
    if len(shown) <= _SHORT_RESULT and "\n" not in shown:
        return f'<div class="pmp-result">{label}{html.escape(shown)}</div>'
    start = shown.split("\n", 1)[0][:_RESULT_TITLE] + "…"
    return (
        f'<details class="pmp-result"><summary>{label}{html.escape(start)}</summary>'
        f'<pre style="margin: 0 0 0 1em; max-height: 20em; overflow: auto">'
        f"{html.escape(shown)}</pre></details>"
    )


# A group's state in words, for its badge and the badge's tooltip.
_GROUP_WORDS = {
    "running": ("running", "some of its tasks are still queued or running"),
    "done": ("all done", "every task ended with a result"),
    "failed": ("ended with failures", "every task ended; some failed or were cancelled"),
}


class ProgressStatus:
    """One display for many Futures (a map, or any group): how many are
    done out of how many, as a bar coloured by state and counts that are
    also the legend; the failures fold open, each with its error."""

    def __init__(self, futures, label):
        self.futures = futures
        self.label = label
        self.started = time.monotonic()
        self.finished = None

    def bundle(self):
        states = [state_of(future) for future in self.futures]
        counts = {state: states.count(state) for state in STATES}
        total = len(self.futures)
        ended = counts["done"] + counts["failed"] + counts["cancelled"]
        if ended == total and self.finished is None:
            self.finished = time.monotonic()
        elapsed = (self.finished or time.monotonic()) - self.started
        if ended < total:
            state = "running"
        else:
            state = "done" if counts["failed"] + counts["cancelled"] == 0 else "failed"
        problems = ", ".join(f"{counts[k]} {k}" for k in ("failed", "cancelled") if counts[k])
        summary = (
            f"{counts['done']}/{total} done"
            + (f", {problems}" if problems else "")
            + (f", {counts['running']} running" if ended < total else "")
            + f" — {_duration(elapsed)}"
        )
        words, meaning = _GROUP_WORDS[state]
        if state == "failed" and not counts["failed"]:
            words = "ended, some cancelled"
        markup = (
            f'<div class="pmp-progress" data-state="{state}" data-done="{counts["done"]}" '
            f'data-total="{total}" style="{frame(state)}">'
            f"<div><b>{html.escape(self.label)}</b> {badge(state, words, meaning)} {bar(counts)} "
            f"{counts['done']}/{total} done "
            f'<span class="pmp-clock" style="{MUTED}; font-variant-numeric: tabular-nums">'
            f"{_duration(elapsed)}</span></div>"
            f"{legend(counts)}{self._failures(states)}</div>"
        )
        return state, {"text/plain": f"{self.label}: {summary}", "text/html": markup}

    def _failures(self, states):
        """The failed tasks, folded: each one's name and error."""
        failed = [f for f, s in zip(self.futures, states) if s == "failed"]
        if not failed:
            return ""
        lines = []
        for future in failed[:_FAILURES_SHOWN]:
            error = future.exception()
            lines.append(f"{task_name(future)}: {type(error).__name__}: {error}")
        if len(failed) > _FAILURES_SHOWN:
            lines.append(f"… and {len(failed) - _FAILURES_SHOWN} more")
        return (
            f"<details><summary>{_count(len(failed), 'failure')}</summary>"
            f'<pre class="pmp-failures" style="margin: 0 0 0 1em">'
            f"{html.escape(chr(10).join(lines))}</pre></details>"
        )


class LiveDisplay:
    """One display and what it shows. Refreshes come from the ticker, the
    Future's done callback and whoever reads the outcome; they take turns, and
    once the final state is out nothing older follows it."""

    def __init__(self, status):
        from IPython.display import display

        self.status = status
        self._lock = threading.RLock()
        self._refreshing = False  # bundle() reads the result, which refreshes again
        self._shown, self.data = status.bundle()
        self.handle = display(self.data, raw=True, display_id=True)
        _cells.watch()

    @property
    def finished(self):
        return self._shown in _FINISHED

    def refresh(self):
        """Publish the current state if it changed, or if time is ticking.
        Whoever learns the outcome (reads a result, ends a map) calls this
        too: the final state is out before they go on, within their cell."""
        with self._lock:
            if self.finished or self._refreshing:
                return
            self._refreshing = True
            try:
                state, data = self.status.bundle()
            finally:
                self._refreshing = False
            if state != self._shown or state in ("queued", "running"):
                self._shown, self.data = state, data
                _cells.publish(self)


class _Cells:
    """nbconvert keeps only the messages of the cell it is running, so a final
    state published between cells (a task ending while the notebook waits for
    nothing) would be lost: it is published again when the next cell starts.
    Live frontends apply it either way."""

    def __init__(self):
        self._lock = threading.Lock()
        self._shell = None
        self._running = True  # the first display is made by a running cell
        self._missed = []  # displays whose final state went out between cells

    def watch(self):
        from IPython import get_ipython

        shell = get_ipython()
        with self._lock:
            if shell is None or shell is self._shell:
                return
            self._shell, self._running = shell, True
        shell.events.register("pre_run_cell", self._cell_starts)
        shell.events.register("post_run_cell", self._cell_ends)

    def publish(self, live):
        with self._lock:
            live.handle.update(live.data, raw=True)
            if live.finished and not self._running:
                self._missed.append(live)

    def _cell_starts(self, _info=None):
        with self._lock:
            self._running = True
            missed, self._missed = self._missed, []
            for live in missed:
                live.handle.update(live.data, raw=True)

    def _cell_ends(self, _result=None):
        with self._lock:
            self._running = False


_cells = _Cells()


class _Ticker:
    def __init__(self):
        self._watched = []
        self._lock = threading.Lock()
        self._thread = None

    def watch(self, live):
        with self._lock:
            self._watched.append(live)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pmp-status", daemon=True)
                self._thread.start()

    def _run(self):
        while True:
            time.sleep(_TICK)
            with self._lock:
                watched = list(self._watched)
                if not watched:
                    self._thread = None
                    return
            for live in watched:
                live.refresh()
            with self._lock:
                self._watched = [live for live in self._watched if not live.finished]


_ticker = _Ticker()


def show(future, label=None):
    """Display a live status for `future`, titled `label` (default: the
    task's name); returns the display handle."""
    live = LiveDisplay(FutureStatus(future, label or task_name(future)))
    # What the task prints appears here (at the next tick) instead of in a cell.
    if hasattr(future, "show_output_in_display"):
        future.show_output_in_display(live)
    _ticker.watch(live)
    # Report the end at once rather than at the next tick.
    future.add_done_callback(lambda _: live.refresh())
    return live.handle


def show_progress(futures, label=None):
    """Display one live progress display for a group of Futures: a bar of
    their states, how many are done, their failures. `label` names the
    group (default: after its tasks' names, `square ×10`)."""
    if isinstance(futures, concurrent.futures.Future):
        raise TypeError(
            "show_progress(futures) follows a group of Futures, and got one Future: "
            "pass a list ([future]), or show the Future alone as a cell's last expression"
        )
    futures = list(futures)
    if not futures:
        raise ValueError(
            "show_progress(futures) got no Futures: pass a list of the Futures to follow, "
            "e.g. [executor.submit(f, x) for x in values]"
        )
    for future in futures:
        if not isinstance(future, concurrent.futures.Future):
            raise TypeError(
                f"show_progress(futures) follows Futures; one item is {type(future).__name__} "
                f"{future!r}: pass the Futures that submit() returned"
            )
    progress_display(futures, label or _group_label(futures))


def progress_display(futures, label):
    """The live progress display of `futures`; returns it, so that whoever
    learns that they all ended (Executor.map) can refresh it at once."""
    live = LiveDisplay(ProgressStatus(list(futures), label))
    # Otherwise the ticker reports every change, the end included.
    _ticker.watch(live)
    return live


def _group_label(futures):
    names = {task_name(future) for future in futures}
    if len(names) == 1:
        return f"{names.pop()} ×{len(futures)}"
    return _count(len(futures), "task")
