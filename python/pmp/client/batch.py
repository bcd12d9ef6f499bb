"""Batch jobs from outside any allocation (a login node, a JupyterHub
outside Slurm or Flux): one job per call, which outlives the client. The job
system (Slurm's sbatch or Flux's flux submit) is the scheduler's
(`_pmp.JobSystem`: a job's options and commands are built in Rust).

The task store carries everything: the client writes the call's input
entry, takes the key's lock and submits a job that runs `pmp-worker` in job
mode; the job reads the input (and its upstream results) from the store,
verifies them, runs the call and writes its outcome there, then releases
the lock. So a job needs nothing from the client that submitted it: a chain
keeps going after the client died (`--dependency=afterok`), and a new client
submitting the same call finds its result, or the job still queued or
running, and attaches to it instead of submitting another.

The scheduler's follower thread (`follow.Following`) follows the jobs: their
entries, what they print, their states; this module turns what it says into
the Futures' states, output and outcomes.
"""

import collections
import contextlib
import hashlib
import math
import os
import sys
import threading
import time
import warnings
from concurrent.futures import CancelledError, InvalidStateError

from pmp import _pmp
from pmp.client import backends, job_states, serialize, store
from pmp.client.arguments import UpstreamFailed, value_of_done
from pmp.client.errors import (
    DependencyCancelledError,
    DependencyRefused,
    JobFailedError,
    exception_of,
)
from pmp.client.follow import Following
from pmp.client.future import OUTPUT_KEPT, Future, monotonic_of
from pmp.client.job_states import JobStatus
from pmp.client.resources import (
    check_arguments,
    check_bool,
    check_int,
    check_plain,
)
from pmp.client.store import EarlierRun

# Exit codes of pmp-worker in job mode (worker/src/job.rs).
_JOB_EXIT = {
    6: "its input is missing or failed its check",
    7: "an upstream result is missing",
    8: "it could not use the task store (a full disk, a read-only store: see its output)",
}
# How long a job that ended without running waits for its upstream Futures
# to resolve, so that it fails as they did (they usually have by then).
_UPSTREAM_WAIT = 10.0

# resource_dict keys that only batch jobs have (each job system honours those it can).
BATCH_KEYS = (
    "num_nodes",
    "exclusive",
    "run_time_max",
    "memory_max",
    "partition",
    "slurm_cmd_args",
    "priority",
    "submission_template",
)


def check_priority(name, value):
    """Flux's urgency: 0 (lowest) to 31 (highest), 16 by default."""
    check_int(name, value, 0)
    if value > 31:
        raise ValueError(f"{name} is Flux's urgency, 0 to 31 (16 by default), got {value}")
    return value


def check_batch_value(key, value):
    name = f"resource_dict key {key!r}"
    if key in ("num_nodes", "run_time_max"):
        return check_int(name, value, 1)
    if key == "priority":
        return check_priority(name, value)
    if key == "exclusive":
        return check_bool(name, value)
    if key == "slurm_cmd_args":
        return check_arguments(name, value)
    if key == "memory_max":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number of GB, got {value!r}")
        # Slurm counts whole MB, and --mem=0 would mean all of a node's memory.
        if not math.isfinite(value) or value < 1 / 1024:
            raise ValueError(
                f"{name} must be a finite number of GB of at least 1/1024 (1 MB, the least "
                f"Slurm can limit a job to), got {value!r}"
            )
    elif key == "submission_template":
        return check_template(name, value)
    elif not isinstance(value, str) or not value:  # partition
        raise ValueError(f"{name} must be a partition's name, got {value!r}")
    else:
        check_plain(name, value)
    return value


def check_template(name, value):
    """A site's job script template: jinja2, as executorlib's (through
    pysqa), checked for its syntax now rather than at its job."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a job script template (a str), got {value!r}")
    try:
        import jinja2  # lazy on purpose: only a call with a template needs it
    except ImportError:
        raise ValueError(
            f"{name} is a jinja2 template, as executorlib's are (rendered by pysqa): "
            "install jinja2 (pip install jinja2) to use it"
        ) from None
    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(
            f"{name} is not a valid jinja2 template: {error} (line {error.lineno})"
        ) from None
    return value


def rendered_template(template, name, resources, cwd, dependencies):
    """`template` with pmp's values under pysqa's names (so that a site's
    executorlib template works unchanged; `cores` is ranks x threads, as
    pysqa counts them), and the scheduler's mark where pmp's command goes."""
    import jinja2  # lazy on purpose; check_template found it

    values = {
        "job_name": name,
        "working_directory": cwd,
        "cores": resources["cores"] * resources["threads_per_core"],
        "threads_per_core": resources["threads_per_core"],
        "gpus_per_core": resources["gpus_per_core"],
        "num_nodes": resources.get("num_nodes"),
        "exclusive": resources.get("exclusive"),
        "memory_max": resources.get("memory_max"),
        "run_time_max": resources.get("run_time_max"),
        "partition": resources.get("partition"),
        "dependency": list(dependencies),
        "dependency_list": list(dependencies),
        "command": _pmp.COMMAND_MARK,
    }
    return jinja2.Template(template).render(**values)


def job_system(backend, launcher, tool_dirs):
    """The job system batch mode submits to: `backend` "slurm" (`launcher`
    is sbatch) or "flux" (the flux command)."""
    return _pmp.JobSystem(backend, launcher, tool_dirs)


# A Future argument of a call: its store and key, its job (None once done
# or while another client submits it) and the Future itself.
_Upstream = collections.namedtuple("_Upstream", "store key job future")


class _Watched:
    """A Future waiting for `key`'s entry, and the job that will write it."""

    __slots__ = ("future", "job", "key", "store", "task", "upstream")

    def __init__(self, future, task_store, key, job, upstream):
        self.future = future
        self.store = task_store
        self.key = key
        self.job = job  # its id, or None while another client submits it
        self.upstream = upstream  # [_Upstream] of its Future arguments
        self.task = None  # its id with the follower


class BatchJobs:
    """Submits calls as batch jobs and resolves their Futures from what the
    follower learns."""

    def __init__(self, jobs, worker_program, defaults, default_store):
        self.jobs = jobs  # a _pmp.JobSystem
        self.pmi_mode = None  # srun's --mpi for the ranks inside a job; None: pmp's choice
        self._worker = worker_program
        self._defaults = defaults
        self.store = default_store
        self._watched = {}  # follower id -> _Watched
        self._lock = threading.Lock()
        self._following = Following(jobs, OUTPUT_KEPT)

    # ---- submit ----

    def submit(self, fn, args, kwargs, resources, task_store, cache_key):
        future = Future()
        upstream = []  # an _Upstream for each Future argument
        try:
            function, identity = serialize.dumps_function_and_identity(fn)
            call = serialize.dumps_call(args, kwargs, self._collector(upstream))
        except UpstreamFailed as failed:  # a done argument had failed: this call fails as it did
            future.set_exception(failed.exception)
            return future
        except ValueError:
            raise
        except Exception as error:  # noqa: BLE001 - an unpicklable argument fails its Future only
            future.set_exception(error)
            return future
        keys = [u.key for u in upstream]
        key = cache_key or _pmp.task_key(identity, call, keys, resources["cores"])
        future._pmp_key = key
        future.job = None
        stored = store.lookup(task_store, key, exact=True)
        if stored is not None:
            # Read only: a read-only store serves its results.
            future.resolve_from_store(stored)
            return future
        if self._unseen_failure(future, task_store, key):
            return future
        failure = _upstream_failure(upstream)
        if failure is not None:
            # As inside an allocation: the dependent of a failed call fails
            # as it did, with no job (the job system would refuse or cancel one).
            _fail(future, failure)
            return future
        name = _job_name(fn, task_store, key)
        left = task_store.lock_owner(key)
        if not store.claim(task_store, key, batch=True):
            # Queued or running for another client (or an earlier kernel).
            job = read_job(task_store, key)
            future.earlier_run = store.earlier_run(task_store, key, "attached", job, self._system)
            return self._attach(future, task_store, key, job, upstream)
        stored = store.lookup(task_store, key, exact=True)  # finished meanwhile
        if stored is not None:
            task_store.unlock(key)
            future.resolve_from_store(stored)
            return future
        try:
            if left is not None and left.startswith("batch "):
                # Taken over from a client that died submitting: its job may
                # be queued with no record naming it. Attach to it, never
                # submit a second one.
                job = self.jobs.find(name)
                if job is not None:
                    _write_job(task_store, key, job)
                    future.earlier_run = EarlierRun("attached", left, True, job, self._system)
                    return self._attach(future, task_store, key, job, upstream)
            task_store.write_input(key, _function_name(fn), time.time(), function, call, keys)
            job = self._submit_job(
                name, resources, task_store, key, [u.job for u in upstream if u.job]
            )
        except DependencyRefused as refused:
            # An upstream job failed or was cancelled after the look above:
            # the dependent fails as that upstream Future does, not here.
            task_store.remove(key)
            task_store.unlock(key)
            _fail_as_upstream(future, upstream, refused)
            return future
        except BaseException:
            task_store.unlock(key)
            raise
        _write_job(task_store, key, job)
        self._set_state(future, "PENDING", "", "")
        return self._attach(future, task_store, key, job, upstream)

    def _unseen_failure(self, future, task_store, key):
        """Fail `future` as the job of `key` failed, if no client followed
        that job to its end (the kernel that submitted it was restarted): its
        record is still there (the follower removes it when it sees the
        end). Once: the record goes now, so the next submission runs the
        call again."""
        try:
            entry = task_store.read(key)
        except _pmp.InvalidEntry:
            return False  # runs again; reported by store.lookup
        if entry is None or entry.state != "failed":
            return False
        job = read_job(task_store, key)
        if job is None:
            return False
        future.job = job
        future.earlier_run = EarlierRun("failed", None, True, job, self._system)
        self._set_state(future, "FAILED", "", "")
        future.took_times_of(entry)
        with contextlib.suppress(Exception):  # a read-only store keeps it (and runs nothing)
            task_store.remove_job(key)
        _fail(future, exception_of(entry.frames))
        return True

    def _attach(self, future, task_store, key, job, upstream):
        """Follow `job` (None: not known yet) until `key`'s entry resolves `future`."""
        future.job = job
        future.log_path = os.fspath(task_store.log_path(key))
        w = _Watched(future, task_store, key, job, list(upstream))
        future._pmp_cancel = lambda: self._cancel([w])
        with self._lock:
            w.task = self._following.job(task_store, key, job, lambda e: self._on_event(w, e))
            self._watched[w.task] = w
        return future

    def _collector(self, upstream):
        def on_future(future):
            key = getattr(future, "_pmp_key", None)
            if key is None:
                if future.done():
                    return serialize.as_value(value_of_done(future))
                raise ValueError(
                    "a batch job can depend only on calls with a task store entry (Futures of "
                    "an Executor with a cache_directory, or of this one); this Future is "
                    "neither, and it is not done yet"
                )
            job = getattr(future, "job", None)
            if job is None and not future.done():
                raise ValueError(
                    "a batch job can depend on a Future of another Executor only once it is "
                    "done (its result is then in that Executor's task store): wait for it first"
                )
            entry = _Upstream(future._pmp_store, key, job, future)
            if entry not in upstream:
                upstream.append(entry)
            return serialize.as_dependency(upstream.index(entry))

        return on_future

    def _submit_job(self, name, resources, task_store, key, dependencies):
        cwd = resources["cwd"] or os.getcwd()
        template = resources.get("submission_template")
        if template is not None:
            template = rendered_template(template, name, resources, cwd, dependencies)
        # In the store's own logs/, made and checked with it: no one else can
        # put a link there for the job system to follow.
        return self.jobs.submit(
            name,
            resources,
            cwd,
            os.fspath(task_store.log_path(key)),
            os.fspath(task_store.root),
            key,
            sys.executable,
            backends.client_sys_path(),
            self._worker,
            dependencies,
            self.pmi_mode,
            template,
        )

    # ---- what the follower learns ----

    def _on_event(self, w, event):
        """One event of `w`'s job, on the follower's thread."""
        future = w.future
        if isinstance(event, _pmp.JobKnown):
            w.job = future.job = event.job
        elif isinstance(event, _pmp.JobState):
            if not future.done():  # an entry said how it ended, which stays its state
                self._set_state(future, event.state, event.reason, event.nodes)
                if event.state == "RUNNING":
                    self._started(w, event.nodes, event.started)
        elif isinstance(event, _pmp.JobOutput):
            if event.skipped:
                future.output_truncated = True
            if event.text:
                future._pmp_add_output("stdout", event.text, echo=False)
        elif isinstance(event, _pmp.JobStored):
            self._forget(w)
            self._stored(w, event)
        elif isinstance(event, _pmp.JobEnded):
            self._forget(w)
            self._ended(w, event)

    def _stored(self, w, stored):
        """Its entry is there: the Future takes its outcome."""
        future = w.future
        if stored.error is not None:
            failed = JobFailedError(f"the result of job {w.job} failed its check: {stored.error}")
            _fail(future, failed)
        elif stored.entry.state == "done":
            self._job_over(w, "COMPLETED")
            with contextlib.suppress(InvalidStateError):
                future.resolve_from_store(stored.entry, reused=False)
        else:
            self._job_over(w, "FAILED")
            future.took_times_of(stored.entry)
            _fail(future, exception_of(stored.entry.frames))

    def _started(self, w, nodes, started):
        """The job's own start, also when this client attached to it late."""
        future = w.future
        if started is not None:
            future.started_at = monotonic_of(started)
        elif future.started_at is None:
            future.started_at = time.monotonic()
        if not future.running():
            future.place = (f"job {w.job}", None, nodes)
            with contextlib.suppress(RuntimeError):
                future.set_running_or_notify_cancel()

    @property
    def _system(self):
        """The job system's name as the displays say it: "Slurm", "Flux"."""
        return self.jobs.name.capitalize()

    def _set_state(self, future, state, reason, nodes):
        future.job_status = JobStatus(self._system, state, reason, nodes)
        future.job_state = job_states.describe(state, reason, nodes)

    def _job_over(self, w, state):
        """The Future's job state once its job has nothing more to do for it
        (`state` in Slurm's words): never the last state a poll saw."""
        if not w.future.done() and w.job is not None:
            status = w.future.job_status
            self._set_state(w.future, state, "", status.nodes if status else "")

    def _ended(self, w, ended):
        """The job ended without an entry (`ended.state`; None: the job system
        lost it), its key unlocked by the follower: fail its Future as its
        upstream Futures failed, or saying why. Upstream Futures that are
        still open get a moment to resolve (their entries are usually there
        by now): it fails as they do."""
        state = ended.state
        self._job_over(w, state or "LOST")
        if ended.ended_at is not None:
            # One clock: its end as the job system has it, not when this noticed.
            w.future.finished_at = monotonic_of(ended.ended_at)
        open_upstream = [u.future for u in w.upstream if not u.future.done()]
        if not open_upstream or _upstream_failure(w.upstream) is not None:
            self._conclude(w, ended)
            return
        concluded = threading.Lock()

        def once():
            if concluded.acquire(blocking=False):
                timer.cancel()
                self._conclude(w, ended)

        def on_upstream_done(_):
            if _upstream_failure(w.upstream) is not None or all(f.done() for f in open_upstream):
                once()

        # Bounded: an upstream Future of a client that went away never resolves.
        timer = threading.Timer(_UPSTREAM_WAIT, once)
        timer.daemon = True
        timer.start()
        for upstream_future in open_upstream:
            upstream_future.add_done_callback(on_upstream_done)

    def _conclude(self, w, ended):
        state = ended.state
        failure = _upstream_failure(w.upstream)
        if failure is None:
            # Upstream Futures of another client (attached to here): the
            # store names the failure at the head of the chain.
            failure = _stored_upstream_failure(w.upstream)
        if failure is not None:
            _fail(w.future, failure)
            return
        if state == "CANCELLED" and w.upstream:
            _fail(w.future, DependencyCancelledError(f"job {w.job} was cancelled: {state}"))
            return
        if state is None:
            words = (
                f"it was lost by {self._system}: its queue no longer knows the "
                "job and its accounting has no record of it"
            )
            ending = ""
        else:
            words = job_states.ENDED_WORDS.get(state, f"it ended {state}")
            if ended.exit_code in _JOB_EXIT:
                words = _JOB_EXIT[ended.exit_code]
            ending = f" ({state})"
        _fail(
            w.future,
            JobFailedError(
                f"batch job {w.job} ended without a result: {words}{ending}",
                job=w.job,
                state=state,
                log_tail=ended.log_tail,
            ),
        )

    def _forget(self, w):
        with self._lock:
            self._watched.pop(w.task, None)

    # ---- shutdown ----

    def _cancel(self, watched):
        """Cancel these jobs; their keys are free again (the jobs write nothing).
        The follower still sees each one end, which fails an open Future."""
        jobs = sorted({w.job for w in watched if w.job})
        if jobs:
            self.jobs.cancel(jobs)
        for w in watched:
            self._job_over(w, "CANCELLED")
            with contextlib.suppress(Exception):
                w.store.unlock(w.key)

    def unfinished(self):
        with self._lock:
            return [w for w in self._watched.values() if not w.future.done()]

    def wait(self):
        for w in self.unfinished():
            with contextlib.suppress(Exception):
                w.future.exception()

    def close(self):
        """Stop following: the jobs go on without this client."""
        self._following.close()

    def cancel_all(self):
        """Cancel every unfinished job this executor follows, running ones too.
        The Futures are cancelled first, then the jobs: the follower never
        sees a job this cancelled (or a dependent the job system ended for
        it) end while its Future is still open, to fail it as "FAILED"."""
        watched = self.unfinished()
        for w in watched:
            future = w.future
            self._job_over(w, "CANCELLED")
            if future.cancel():
                future.set_running_or_notify_cancel()
            else:  # running: concurrent.futures cannot cancel it, so it fails
                _fail(future, CancelledError(f"job {w.job} was cancelled by shutdown"))
        self._cancel(watched)
        for w in watched:  # their Futures are done: nothing more to learn
            self._following.forget(w.task)
            self._forget(w)


def _fail(future, error):
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


def _as_dependents_error(upstream_future):
    """What a dependent of a done Future fails with: the same exception, or
    DependencyCancelledError for a cancelled one; None if it succeeded."""
    if upstream_future.cancelled():
        return DependencyCancelledError("a Future this task depends on was cancelled")
    error = upstream_future.exception()
    if isinstance(error, CancelledError) and not isinstance(error, DependencyCancelledError):
        return DependencyCancelledError(f"a Future this task depends on was cancelled: {error}")
    return error


def _upstream_failure(upstream):
    """The error of the first upstream Future that is done and did not
    succeed, as its dependent raises it; None if there is none (yet)."""
    for u in upstream:
        if u.future.done():
            error = _as_dependents_error(u.future)
            if error is not None:
                return error
    return None


def _stored_upstream_failure(upstream):
    """The failure stored at the head of the chain the upstream keys belong
    to (the store walks their inputs), or None."""
    by_store = {}
    for u in upstream:
        by_store.setdefault(u.store, []).append(u.key)
    for task_store, keys in by_store.items():
        with contextlib.suppress(_pmp.InvalidEntry, OSError):
            found = task_store.failed_upstream(keys)
            if found is not None:
                return exception_of(found[1].frames)
    return None


def _fail_as_upstream(future, upstream, refused):
    """Fail `future` as the first of its upstream Futures to fail does;
    with `refused` if they all succeed."""
    pending = [u.future for u in upstream]
    lock = threading.Lock()

    def on_done(_):
        with lock:
            if future.done():
                return
            error = _upstream_failure(upstream)
            if error is not None:
                _fail(future, error)
            elif all(f.done() for f in pending):
                _fail(future, RuntimeError(str(refused)))

    for upstream_future in pending:
        upstream_future.add_done_callback(on_done)


def _function_name(fn):
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:64] or "pmp"


def _job_name(fn, task_store, key):
    """The function's name, so that the queue reads well, then a tag of the
    store and key, so that a client can find the job of a key that a killed
    client submitted but did not record (`find`)."""
    tag = hashlib.sha256(f"{os.fspath(task_store.root)}\0{key}".encode()).hexdigest()[:12]
    return f"{_function_name(fn)}.{tag}"


def _write_job(task_store, key, job):
    """Record which job runs `key`, for clients that attach to it: signed
    by the store, and only ever a job id (the store refuses anything else,
    so no record reaches a command line as an option)."""
    task_store.write_job(key, job)


def read_job(task_store, key):
    """The job recorded for `key`, verified; None if there is none, or if
    its record fails the check (reported once, like an invalid entry)."""
    try:
        return task_store.read_job(key)
    except _pmp.InvalidEntry as error:
        warnings.warn(
            f"ignoring the job record of {key!r} in {task_store.root}: {error}",
            store.StoreWarning,
            stacklevel=3,
        )
    except OSError:  # e.g. PermissionError: not the user's own file
        pass
    return None
