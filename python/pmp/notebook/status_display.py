"""Live status displays: one `display_data` with a display_id, then
`update_display_data` at every change. For a Future: queued → running where,
for how long, with what it printed so far → done with the result / failed
with the exception / cancelled. For many Futures (`Executor.map`): one
progress display, done/total.

text/html for notebooks, text/plain for everything else (nbconvert, consoles).
One ticker thread per process refreshes running tasks' elapsed time and
notices state changes; it stops when nothing is left to watch.
"""

import html
import threading
import time
import traceback

from pmp.notebook import earlier_runs

_TICK = 0.5
_FINISHED = ("done", "failed", "cancelled")
_COLOURS = {"queued": "#777", "running": "#1a6fb5", "done": "#2b8a3e"}


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
            if status.reason in JOB_REASONS:
                words += f" ({JOB_REASONS[status.reason]})"
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


def state_of(future):
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

    def _where(self):
        place = getattr(self.future, "place", None)
        if not place:
            return ""
        worker, pid, host = place
        if pid is None:  # a batch job: `worker` names it
            return f" on {host} ({worker})"
        return f" on {host}, pid {pid} (worker {worker})"

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

    def summary(self, state):
        job = getattr(self.future, "job", None)
        if job is not None and state in ("queued", "running"):
            return f"{state} for {_duration(self._elapsed())}: {job_words(self.future)}"
        if state == "queued":
            return f"queued for {_duration(self._elapsed())}"
        if state == "running":
            return f"running{self._where()} for {_duration(self._elapsed())}"
        if state == "done":
            stored = getattr(self.future, "from_store", None)
            if stored is not None and getattr(self.future, "reused", True):
                from pmp.client.store import describe

                took = _duration(stored.finished - stored.started)
                return f"done in {took}, {describe(stored)}: {self._result_repr()}"
            return f"done in {_duration(self._elapsed())}{self._where()}: {self._result_repr()}"
        if state == "cancelled":
            return "cancelled"
        error = self.future.exception()
        took = _duration(self._elapsed())
        # A batch job that ended before it was seen running has no place: its job says where.
        job = getattr(self.future, "job", None)
        where = self._where() or (f" in job {job}" if job is not None else "")
        return f"failed after {took}{where}: {type(error).__name__}: {error}"

    def _result_repr(self):
        try:
            text = repr(self.future.result())
        except Exception as error:  # noqa: BLE001 - e.g. the result cannot be unpickled here
            text = f"<result not readable here: {error}>"
        return text if len(text) <= 500 else text[:500] + "…"

    def _output(self):
        """What the task printed: (plain text, HTML); stderr shown in red."""
        chunks = _as_shown(getattr(self.future, "output_chunks", list)())
        if not chunks:
            return "", ""
        text = "".join(part for _, part in chunks)
        markup = "".join(
            f'<span style="color: #c92a2a">{html.escape(part)}</span>'
            if name == "stderr"
            else html.escape(part)
            for name, part in chunks
        )
        style = "margin: 2px 0 0 1em; max-height: 20em; overflow: auto"
        return text, f'<pre class="pmp-output" style="{style}">{markup}</pre>'

    def bundle(self):
        state = self.observe()
        summary = self.summary(state)
        printed, printed_html = self._output()
        # A call that met an earlier run of its key (a kernel restart) says what became of it.
        met = earlier_runs.note(self.future)
        text = f"{self.label}: {summary}" + (f"\n{met}" if met else "")
        text += f"\n{printed.rstrip()}" if printed else ""
        # The summary starts with the state, which the HTML colours.
        body = html.escape(summary[len(state) :])
        body += f'<div class="pmp-earlier-run">{html.escape(met)}</div>' if met else ""
        if state == "failed":
            error = self.future.exception()
            lines = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            body += (
                f"<details><summary>traceback</summary><pre>{html.escape(lines)}</pre></details>"
            )
        markup = (
            f'<div class="pmp-status" data-state="{state}" style="font-family: monospace">'
            f"<b>{html.escape(self.label)}</b> "
            f'<span style="color: {_COLOURS.get(state, "#c92a2a")}">{state}</span>'
            f"{body}{printed_html}</div>"
        )
        return state, {"text/plain": text, "text/html": markup}


class ProgressStatus:
    """One display for many Futures: how many are done out of how many."""

    def __init__(self, futures, label):
        self.futures = futures
        self.label = label
        self.started = time.monotonic()
        self.finished = None

    def bundle(self):
        counts = dict.fromkeys(("queued", "running", "done", "failed", "cancelled"), 0)
        for future in self.futures:
            counts[state_of(future)] += 1
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
        markup = (
            f'<div class="pmp-progress" data-state="{state}" data-done="{counts["done"]}" '
            f'data-total="{total}" style="font-family: monospace">'
            f"<b>{html.escape(self.label)}</b> "
            f'<progress value="{ended}" max="{total}" style="vertical-align: middle"></progress> '
            f'<span style="color: {_COLOURS.get(state, "#c92a2a")}">'
            f"{html.escape(summary)}</span></div>"
        )
        return state, {"text/plain": f"{self.label}: {summary}", "text/html": markup}


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


def show(future, label="task"):
    """Display a live status for `future`; returns the display handle."""
    live = LiveDisplay(FutureStatus(future, label))
    # What the task prints appears here (at the next tick) instead of in a cell.
    if hasattr(future, "show_output_in_display"):
        future.show_output_in_display(live)
    _ticker.watch(live)
    # Report the end at once rather than at the next tick.
    future.add_done_callback(lambda _: live.refresh())
    return live.handle


def show_progress(futures, label):
    """Display one live progress line for `futures`; returns a function that
    refreshes it now."""
    live = LiveDisplay(ProgressStatus(list(futures), label))
    _ticker.watch(live)
    # Executor.map calls this when its iteration ends, so the end shows
    # before the cell that collects the results is over; otherwise the
    # ticker reports it.
    return live.refresh
