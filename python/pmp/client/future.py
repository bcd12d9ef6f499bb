"""pmp's Future, and the table that turns scheduler events into Future states.

Results stay pickled until someone asks for them: a result that only feeds
other tasks travels worker → scheduler → worker and is never unpickled here.
"""

import _thread
import contextlib
import itertools
import threading
import time
from concurrent.futures import Future as _BaseFuture
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)

from pmp._pmp import (
    Cancelled,
    Elsewhere,
    Finished,
    Lost,
    Output,
    Raised,
    Rejected,
    Running,
    Unstored,
)
from pmp.client import display_hooks, serialize, store
from pmp.client.cell_output import write_to_client
from pmp.client.errors import (
    DependencyCancelledError,
    JobFailedError,
    WorkerDiedError,
    exception_of,
)

_UNDECODED = object()
_CONDITION_LOCK = threading.Lock()
# How much of a task's printed output a Future keeps for its display.
OUTPUT_KEPT = 64 * 1024


class _ResultWaiter:
    """One thread waiting in `Future.result()`: a lock held until the Future
    is done. It takes the place of concurrent.futures' waiters in
    `Future._waiters`, whose methods the base class calls when it is done."""

    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def wait(self, timeout):
        self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0))

    def add_result(self, future):
        with contextlib.suppress(RuntimeError):  # woken already
            self._lock.release()

    add_exception = add_cancelled = add_result


class Future(_BaseFuture):
    """A `concurrent.futures.Future`; `wait`, `as_completed` and
    `asyncio.wrap_future` work on it.

    What the task prints arrives while it runs: it goes to the Future's
    status display when one shows it, otherwise to the notebook cell that
    submitted it, or in a script to this process's sys.stdout/sys.stderr;
    `output` keeps the last 64 KiB of it. A batch job's output is its log
    in the task store (`log_path`), read as it grows: it shows in the
    Future's status display and in `output`, not in the cell or streams."""

    # Slots, not an instance dict: 100,000 finished calls whose Futures the
    # user holds cost about 200 bytes each, not a kilobyte. What most
    # Futures never use stays a class default (set, it lands in __dict__).
    __slots__ = (
        "_done_callbacks",
        "_exception",
        "_pmp_condition",
        "_pmp_elsewhere",
        "_pmp_frames",
        "_pmp_key",
        "_pmp_name",
        "_pmp_store",
        "_pmp_table",
        "_pmp_task",
        "_pmp_write",
        "_result",
        "_state",
        "_waiters",
        "finished_at",
        "place",
        "started_at",
    )
    _pmp_display = None  # the status display (a LiveDisplay) showing this Future
    _pmp_output = ()  # [(stream name, text)], the kept tail
    output_truncated = False  # True once earlier output was dropped from the kept tail
    log_path = None  # its batch job's log in the task store, which has all it printed
    from_store = None  # the `pmp._pmp.StoredEntry` it resolved from, if any
    reused = False  # ... stored before this call was submitted, not computed for it
    earlier_run = None  # a `store.EarlierRun` of its key that it ran again or attached to
    _pmp_cancel = None  # scancel its batch job
    job = None  # the batch job that computes it (backend="slurm" outside an allocation)
    job_state = None  # that job's state in words: "PENDING (Priority)", "RUNNING on node2"
    job_status = None  # ... as the job system said it: (state, reason, nodes)

    def __init__(self):
        # As Future.__init__, but the Condition (about 1 KB with its lock,
        # deque and bound methods) is made only when someone waits: see
        # `_condition`.
        self._state = PENDING
        self._result = None
        self._exception = None
        # Lists once used: whatever appends to them holds the Condition
        # (wait(), as_completed(), add_done_callback()) or, while there is
        # none, `_CONDITION_LOCK` (result()).
        self._waiters = ()
        self._done_callbacks = ()
        self._pmp_condition = None
        self._pmp_table = None
        self._pmp_task = None
        self._pmp_frames = None
        self._pmp_write = None  # write(name, text) to the submitting cell
        self._pmp_key = None  # its entry's name in the task store
        self._pmp_name = None  # its name in every display: see pmp.client.task_names
        self._pmp_store = None  # ... and that store (a `pmp._pmp.Store`)
        self._pmp_elsewhere = None  # attach(task) when another live run holds its key
        self.place = None  # (worker id, pid, host) once it runs
        self.started_at = None  # time.monotonic() when a worker took the task
        self.finished_at = None  # ... and when its outcome arrived

    @property
    def _condition(self):
        condition = self._pmp_condition
        if condition is None:
            with _CONDITION_LOCK:
                condition = self._pmp_condition
                if condition is None:
                    self._waiters = list(self._waiters)
                    self._done_callbacks = list(self._done_callbacks)
                    condition = self._pmp_condition = threading.Condition()
        return condition

    # The base class's state changes and queries, without making the
    # Condition when it does not exist yet. Without it nobody waits and no
    # callback is registered (both need it first), so the state alone
    # changes, under `_CONDITION_LOCK` so that a Condition being made
    # meanwhile sees the change (and its waiter then the new state).

    def set_running_or_notify_cancel(self):
        with _CONDITION_LOCK:
            if self._pmp_condition is None and self._state == PENDING:
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def set_result(self, result):
        if not self._pmp_finish("_result", result):
            super().set_result(result)

    def set_exception(self, exception):
        if not self._pmp_finish("_exception", exception):
            super().set_exception(exception)

    def _pmp_finish(self, field, value):
        """Finish with `value` in `field` while there is no Condition, waking
        the threads in result() (nobody else can wait without one); False
        when the base class must do it."""
        with _CONDITION_LOCK:
            if self._pmp_condition is not None or self._state not in (PENDING, RUNNING):
                return False
            setattr(self, field, value)
            self._state = FINISHED
            waiters = tuple(self._waiters)  # a waiter may leave meanwhile
        for waiter in waiters:
            waiter.add_result(self)
        return True

    def done(self):
        # One read of a field the GIL keeps whole; once done, it stays so.
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

    def running(self):
        return self._state == RUNNING

    def cancelled(self):
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def _pmp_finished_value(self):
        """The result of a finished Future without taking its Condition:
        the state is set after the result or exception, and never changes
        again."""
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # noqa: PLW0642 - as the base class: no cycle through the traceback
        return self._result

    def result(self, timeout=None):
        if self._state != FINISHED and self._pmp_wait(timeout):
            timeout = 0  # waited for it already
        if self._state == FINISHED:
            value = self._pmp_finished_value()
        else:
            value = super().result(timeout)
        self._pmp_show_outcome()
        if value is _UNDECODED:
            # Decoded outside any lock (it may be large); of two threads
            # that decode at once, the first to finish wins.
            frames = self._pmp_frames
            decoded = serialize.loads(frames) if frames is not None else _UNDECODED
            with _CONDITION_LOCK:
                if self._result is _UNDECODED:
                    self._result = decoded
                    self._pmp_frames = None
                value = self._result
        return value

    def exception(self, timeout=None):
        if self._state != FINISHED and self._pmp_wait(timeout):
            timeout = 0
        if self._state == FINISHED:
            error = self._exception
        else:
            error = super().exception(timeout)
        self._pmp_show_outcome()
        return error

    def _pmp_wait(self, timeout):
        """Wait until done (or `timeout`) without making a Condition: a loop
        over 100,000 Futures calling `result()` would otherwise leave one
        (a kilobyte) on each Future it reached before it was done. Where a
        Condition exists, the base class waits on it instead: False when
        this did not wait."""
        waiter = _ResultWaiter()
        with _CONDITION_LOCK:
            if self._pmp_condition is not None or self.done():
                return False
            if type(self._waiters) is tuple:
                self._waiters = []
            self._waiters.append(waiter)
        try:
            waiter.wait(timeout)
        finally:
            with _CONDITION_LOCK:
                condition = self._pmp_condition
                if condition is None:
                    self._waiters.remove(waiter)
                    if not self._waiters:
                        self._waiters = ()
            if condition is not None:
                with condition:
                    self._waiters.remove(waiter)
        return True

    def resolve_from_store(self, stored, reused=True):
        """Done with the stored result (`pmp._pmp.StoredEntry`), unpickled on
        first use. `reused`: it was stored before this call was submitted
        (not computed for it, as a batch job's result is). Its times are
        the run's own, as the store recorded them."""
        self.from_store = stored
        self.reused = reused
        self.took_times_of(stored)
        self._pmp_frames = stored.frames
        self.set_result(_UNDECODED)

    def took_times_of(self, stored):
        """Started and finished when the stored run did: one clock for the
        display, the store and `%pmp status`."""
        self.started_at = monotonic_of(stored.started)
        self.finished_at = monotonic_of(stored.finished)

    def _pmp_show_outcome(self):
        """Whoever learns the outcome sees it in the display first: done
        callbacks run only after waiters wake, so a notebook cell could read
        the result and end before the display said done."""
        display = self._pmp_display
        if display is not None:
            display.refresh()

    def cancel(self):
        hook = self._pmp_cancel
        if hook is not None and not self.done():
            # A batch job: scancel it, queued or running (a running one then
            # fails its Future, as concurrent.futures cannot cancel it).
            hook()
        with self._condition:
            if self._state != PENDING:
                return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)
        table = self._pmp_table
        if table is not None and not table.cancel(self._pmp_task):
            return False
        if not super().cancel():
            return False
        # The base class wakes only those waiting on the Condition.
        with self._condition:
            waiters = [w for w in self._waiters if type(w) is _ResultWaiter]
        for waiter in waiters:
            waiter.add_cancelled(self)
        return True

    @property
    def output(self):
        """What the task printed so far, stdout and stderr as they arrived."""
        return "".join(text for _, text in self._pmp_output)

    def output_chunks(self):
        """``[(stream name, text)]``: what the task printed, by stream. A
        batch job's log holds stdout and stderr as one: it is "stdout"."""
        return list(self._pmp_output)

    def show_output_in_display(self, display):
        """A status display shows what the task prints (it re-reads
        `output_chunks` at every refresh); it no longer goes to the cell or
        the client's streams. The display also shows the outcome before
        `result()` or `exception()` returns it."""
        self._pmp_display = display

    def _pmp_add_output(self, name, text, echo=True):
        """Keep `text` (of stream `name`) for `output` and the display; with
        `echo` and no display, also write it to the cell or the client's
        stream (a batch job's output is not echoed: it has its log)."""
        chunks = self._pmp_output
        if not chunks:
            chunks = self._pmp_output = []
            self._pmp_output_size = 0
        chunks.append((name, text))
        self._pmp_output_size += len(text)
        while self._pmp_output_size > OUTPUT_KEPT and len(chunks) > 1:
            self._pmp_output_size -= len(chunks.pop(0)[1])
            self.output_truncated = True
        if echo and self._pmp_display is None:
            (self._pmp_write or write_to_client)(name, text)

    def _ipython_display_(self):
        """A Future as a cell's last expression shows its live status display."""
        display_hooks.show_future(self)

    def __del__(self):
        table = self._pmp_table
        if table is not None:
            table.release(self._pmp_task)


class FutureTable:
    """Futures by task id, kept until the scheduler reports their end. Holds no
    reference to the Executor, so an unused Executor can be collected."""

    def __init__(self):
        self._futures = {}
        self._places = {}
        self._unstored = set()  # tasks whose worker could not store their outcome
        self.scheduler = None
        # next() on a count is atomic under the GIL: ids are unique across threads.
        self.new_id = itertools.count(1).__next__

    def _place_of(self, event):
        """`(worker id, pid, host)`, one tuple for all the tasks a worker runs:
        100,000 held Futures do not hold 100,000 copies."""
        place = (event.worker, event.pid, event.host)
        return self._places.setdefault(place, place)

    def register(self, task, future):
        future._pmp_table = self
        future._pmp_task = task
        self._futures[task] = future

    def forget(self, task):
        self._futures.pop(task, None)

    def unfinished(self):
        """Tasks whose end the scheduler has not reported (a Future resolved
        from the store, or cancelled, is done already)."""
        return sum(1 for future in list(self._futures.values()) if not future.done())

    def cancel(self, task):
        return self.scheduler.cancel(task)

    def release(self, task):
        # During interpreter shutdown the module globals may be gone already.
        with contextlib.suppress(Exception):
            self.scheduler.release(task)

    def on_events(self, events):
        """A batch of the scheduler's events (`pmp._pmp.Running`, ...), in order."""
        futures = self._futures
        unstored_tasks = self._unstored
        for event in events:
            kind = type(event)
            if kind is Output:
                future = futures.get(event.task)
                if future is not None:
                    with contextlib.suppress(Exception):  # a closed stream must not stop events
                        future._pmp_add_output(event.stream, event.text)
                continue
            if kind is Elsewhere:
                future = futures.get(event.task)
                if future is not None and future._pmp_elsewhere is not None:
                    future._pmp_elsewhere(event.task)
                continue
            if kind is Unstored:
                future = futures.get(event.task)
                if future is not None and future._pmp_key is not None:
                    unstored_tasks.add(event.task)
                    store.warn_unstored(future._pmp_store, future._pmp_key, event.why)
                continue
            if kind is Running:
                future = futures.get(event.task)
                if future is not None and future._state == PENDING:
                    future.place = self._place_of(event)
                    future.started_at = time.monotonic()
                    future.set_running_or_notify_cancel()
                continue
            future = futures.pop(event.task, None)
            if future is None or future.done():
                if future is not None and future._state == CANCELLED:
                    future.set_running_or_notify_cancel()
                continue
            future.finished_at = time.monotonic()
            unstored = unstored_tasks and event.task in unstored_tasks
            if unstored:
                unstored_tasks.discard(event.task)
            if kind is Finished:
                future._pmp_frames = event.frames
                if future._pmp_key is not None and not unstored:  # its worker stored it
                    store.index_of(future._pmp_store).add(future._pmp_key)
                future.set_result(_UNDECODED)
            elif kind is Raised:
                future.set_exception(exception_of(event.frames))
            elif kind is Rejected:
                error = ValueError if event.error_type == "ValueError" else RuntimeError
                future.set_exception(error(event.message))
            elif kind is Lost and event.job is not None:
                # Its allocation's job ended under it (scancel, a node failure).
                future.set_exception(JobFailedError(event.message, event.job, event.state))
            elif kind is Lost:
                future.set_exception(
                    WorkerDiedError(event.message, event.exit_code, event.signal, event.stderr_tail)
                )
            elif kind is Cancelled:
                if event.upstream is None:
                    _BaseFuture.cancel(future)
                    future.set_running_or_notify_cancel()
                else:
                    future.set_exception(
                        DependencyCancelledError("a Future this task depends on was cancelled")
                    )


def monotonic_of(wall):
    """`time.time()` value `wall` on the `time.monotonic()` clock the
    Futures' `started_at` and `finished_at` use."""
    return time.monotonic() - (time.time() - wall)
