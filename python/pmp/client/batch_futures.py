"""The Futures of an executor's batch calls, and what their jobs say to
them. The scheduler (`_pmp.BatchCalls`, Rust) decides when each call goes
and how it ended; its follower thread hands the events here, and this sets
each Future's job state, output and outcome, in the user's words."""

import contextlib
import threading
import time
import traceback
from concurrent.futures import CancelledError, InvalidStateError

from pmp import _pmp
from pmp.client import job_states
from pmp.client.errors import DependencyCancelledError, JobFailedError, exception_of
from pmp.client.future import monotonic_of
from pmp.client.job_states import JobStatus

# Exit codes of pmp-worker in job mode (worker/src/job.rs).
_JOB_EXIT = {
    6: "its input is missing or failed its check",
    7: "an upstream result is missing",
    8: "it could not use the task store (a full disk, a read-only store: see its output)",
}


class _Call:
    """A batch call's Future, and the Futures of this executor's calls it
    depends on (by task), which a failure may name."""

    __slots__ = ("future", "upstream")

    def __init__(self, future, upstream):
        self.future = future
        self.upstream = upstream


class BatchFutures:
    """The open Futures of an executor's batch calls, by task."""

    def __init__(self, system):
        self.system = system  # the job system's name as displays say it: "Slurm", "Flux"
        self._calls = {}
        self._lock = threading.Lock()

    def add(self, task, future, upstream):
        with self._lock:
            self._calls[task] = _Call(future, upstream)

    def forget(self, task):
        """Follow `task`'s call no more here; returns it (None if not followed)."""
        with self._lock:
            return self._calls.pop(task, None)

    def open(self):
        """{task: Future} of the calls not concluded yet."""
        with self._lock:
            return {task: c.future for task, c in self._calls.items() if not c.future.done()}

    def set_state(self, future, state, reason="", nodes=""):
        future.job_status = JobStatus(self.system, state, reason, nodes)
        future.job_state = job_states.describe(state, reason, nodes)

    def job_over(self, future, state):
        """The Future's job state once its job has nothing more to do for it
        (`state` in Slurm's words): never the last state a poll saw."""
        if not future.done() and future.job is not None:
            status = future.job_status
            self.set_state(future, state, "", status.nodes if status else "")

    def on_events(self, events):
        """A batch of the scheduler's events, on its follower thread."""
        for event in events:
            with self._lock:
                concluded = not isinstance(event, (_pmp.JobKnown, _pmp.JobState, _pmp.JobOutput))
                call = (self._calls.pop if concluded else self._calls.get)(event.task, None)
            if call is None:
                continue  # cancelled meanwhile
            try:
                self.conclude(call, event) if concluded else self._learn(call.future, event)
            except Exception:  # noqa: BLE001 - one Future's trouble must not stop the others'
                traceback.print_exc()

    def _learn(self, future, event):
        if isinstance(event, _pmp.JobKnown):
            future.job = event.job
            if future.job_status is None:
                self.set_state(future, "PENDING")
        elif isinstance(event, _pmp.JobState):
            if not future.done():  # an entry said how it ended, which stays its state
                self.set_state(future, event.state, event.reason, event.nodes)
                if event.state == "RUNNING":
                    self._started(future, event.nodes, event.started)
        elif event.text or event.skipped:  # JobOutput
            if event.skipped:
                future.output_truncated = True
            if event.text:
                future._pmp_add_output("stdout", event.text, echo=False)

    def _started(self, future, nodes, started):
        """The job's own start, also when this client attached to it late."""
        if started is not None:
            future.started_at = monotonic_of(started)
        elif future.started_at is None:
            future.started_at = time.monotonic()
        if not future.running():
            future.place = (f"job {future.job}", None, nodes)
            with contextlib.suppress(RuntimeError):
                future.set_running_or_notify_cancel()

    def conclude(self, call, event):
        """How the call ended (`event` one of the scheduler's conclusions)."""
        future = call.future
        if isinstance(event, _pmp.JobStored):
            self._stored(future, event)
        elif isinstance(event, _pmp.JobEnded):
            self._ended(future, event)
        elif isinstance(event, _pmp.CallAsUpstream):
            if event.entry is not None:  # stored up its chain by another client
                fail(future, exception_of(event.entry.frames))
            else:
                upstream = call.upstream[event.upstream]
                upstream.add_done_callback(lambda done: fail(future, _as_dependents_error(done)))
        else:  # CallNotSubmitted
            fail(future, RuntimeError(event.message))

    def _stored(self, future, stored):
        """Its entry is there: the Future takes its outcome."""
        if stored.error is not None:
            error = f"the result of job {future.job} failed its check: {stored.error}"
            fail(future, JobFailedError(error))
        elif stored.entry.state == "done":
            self.job_over(future, "COMPLETED")
            with contextlib.suppress(InvalidStateError):
                future.resolve_from_store(stored.entry, reused=False)
        else:
            self.job_over(future, "FAILED")
            future.took_times_of(stored.entry)
            fail(future, exception_of(stored.entry.frames))

    def _ended(self, future, ended):
        """The job ended without an entry, not because of its upstream
        (`ended.state`; None: the job system lost it): say why."""
        state = ended.state
        self.job_over(future, state or "LOST")
        if ended.ended_at is not None:
            # One clock: its end as the job system has it, not when this noticed.
            future.finished_at = monotonic_of(ended.ended_at)
        if state == "CANCELLED" and ended.upstream:
            fail(future, DependencyCancelledError(f"job {ended.job} was cancelled: {state}"))
            return
        fail(future, self._job_failed(ended.job, state, ended.exit_code, ended.log_tail))

    def _job_failed(self, job, state, exit_code=None, log_tail=""):
        """The error of a job that ended without a result (`state` None:
        the job system lost it)."""
        if state is None:
            words = (
                f"it was lost by {self.system}: its queue no longer knows the "
                "job and its accounting has no record of it"
            )
            ending = ""
        else:
            words = job_states.ENDED_WORDS.get(state, f"it ended {state}")
            if exit_code in _JOB_EXIT:
                words = _JOB_EXIT[exit_code]
            ending = f" ({state})"
        return JobFailedError(
            f"batch job {job} ended without a result: {words}{ending}",
            job=job,
            state=state,
            log_tail=log_tail,
        )

    def cancelled_by_shutdown(self, future):
        """`future`'s job is cancelled by shutdown(cancel_futures=True): a
        pending Future is cancelled; a running one fails (concurrent.futures
        cannot cancel it)."""
        self.job_over(future, "CANCELLED")
        future._pmp_cancel = None  # its job is cancelled with the others
        if future.cancel():
            future.set_running_or_notify_cancel()
        else:
            fail(future, CancelledError(f"job {future.job} was cancelled by shutdown"))


def fail(future, error):
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


def _as_dependents_error(upstream_future):
    """What a dependent of a done Future fails with: the same exception,
    or DependencyCancelledError for a cancelled one."""
    if upstream_future.cancelled():
        return DependencyCancelledError("a Future this task depends on was cancelled")
    error = upstream_future.exception()
    if isinstance(error, CancelledError) and not isinstance(error, DependencyCancelledError):
        return DependencyCancelledError(f"a Future this task depends on was cancelled: {error}")
    if error is None:  # it succeeded after all (cancelled too late): nothing to run on now
        return DependencyCancelledError("a call this task depends on was cancelled")
    return error


def upstream_failure(futures):
    """The error of the first of `futures` that is done and did not
    succeed, as its dependent raises it; None if there is none (yet)."""
    for future in futures:
        if future.done() and (future.cancelled() or future.exception() is not None):
            return _as_dependents_error(future)
    return None
