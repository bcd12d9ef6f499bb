"""The engine of an Executor outside any allocation (a login node, a
JupyterHub outside Slurm or Flux): each call a batch job of the cluster's
job system (Slurm or Flux), which outlives the client.

The task store carries everything: the call's input goes there, its job
runs `pmp-worker` in job mode, which reads the input (and its upstream
results), runs the call and writes the outcome there. So a job needs
nothing from the client that submitted it: a chain keeps going after the
client died (`--dependency=afterok`), and a new client submitting the same
call finds its result, or its job still queued or running, and attaches
to it instead of submitting another.

The scheduler (`_pmp.BatchCalls`, Rust) decides when each call goes, takes
its key, submits its job and follows it; this checks a call's resources,
pickles it, and makes its Future (`batch_futures` keeps it up to date).
"""

import atexit
import hashlib
import itertools
import json
import os
import sys
import time
import weakref

from pmp import _pmp
from pmp.client import backends, serialize, slurm_limits, store
from pmp.client.arguments import pickled_call, value_of_done
from pmp.client.batch_checks import BATCH_KEYS, check_batch_value, rendered_template
from pmp.client.batch_futures import BatchFutures, fail, upstream_failure
from pmp.client.errors import exception_of
from pmp.client.future import OUTPUT_KEPT, Future
from pmp.client.resources import merge_resource_dict
from pmp.client.store import EarlierRun

_open = weakref.WeakSet()  # engines whose follower may still call into Python


def job_system(backend, launcher, tool_dirs):
    """The job system batch mode submits to: `backend` "slurm" (`launcher`
    is sbatch) or "flux" (the flux command)."""
    return _pmp.JobSystem(backend, launcher, tool_dirs)


class _Upstream:
    """A Future argument of a call: its store, key, this executor's task for
    it (None for another executor's), and its job where that is known."""

    __slots__ = ("future", "job", "key", "store", "task")

    def __init__(self, future, task_store, key, task, job):
        self.future = future
        self.store = task_store
        self.key = key
        self.task = task
        self.job = job


class BatchEngine:
    """Calls as batch jobs. `defaults` are the Executor's resources (its
    `_defaults`, with a cache_directory: batch jobs need a task store),
    `task_store` that store, `partitions` Slurm's
    (`slurm_limits.PartitionLimits`), or None under Flux."""

    # Batch jobs go on after the client ends: nothing to stop at exit.
    work_outlives_client = True
    resizable = False  # no pool of workers
    gpus = ()  # each job asks its job system for its own
    gpu_count = 0

    def __init__(self, backend, defaults, task_store, given, partitions):
        if given["oversubscribe"]:
            raise ValueError("oversubscribe=True is for srun steps inside an allocation")
        self._defaults = defaults
        self._store = task_store
        self._partitions = partitions
        self.max_cores = given["max_cores"]
        self.max_workers = given["max_workers"]
        # A batch job's output is read from its log, not written to a cell.
        self.cell_writer = None
        self.pmi_mode = None  # srun's --mpi for the ranks inside each job; None: pmp's choice
        tool_dirs = backends.program_dirs()
        self.job_system = job_system(backend.name, backend.launcher, tool_dirs)
        self._worker = backends.worker_program(tool_dirs)
        self._futures = BatchFutures(self.job_system.name.capitalize())
        self._calls = _pmp.BatchCalls(self._futures.on_events, self.job_system, OUTPUT_KEPT)
        self._tasks = itertools.count(1)
        _open.add(self)

    def submit(self, fn, args, kwargs, resource_dict):
        resources = self._resources(resource_dict)
        task_store = self._store
        if resources["cache_directory"] != self._defaults["cache_directory"]:
            task_store = store.open_store(resources["cache_directory"])
        future = self._submit(fn, args, kwargs, resources, task_store)
        future._pmp_store = task_store
        return future

    def check_call(self, resource_dict):
        """Refuse now what every call with `resource_dict` would be refused."""
        self._resources(resource_dict)

    def _resources(self, resource_dict):
        """The call's resources, checked for a batch job."""
        resource_dict = dict(resource_dict or {})
        batch_options = {
            key: check_batch_value(key, resource_dict.pop(key))
            for key in BATCH_KEYS
            if key in resource_dict
        }
        resources = merge_resource_dict(self._defaults, resource_dict)
        if resources["oversubscribe"]:
            raise ValueError(
                "resource_dict key 'oversubscribe' is for srun steps inside an allocation"
            )
        if resources["restart_limit"]:
            raise ValueError(
                "resource_dict key 'restart_limit' restarts this executor's own workers; a "
                "batch job that dies is not submitted again (its Future fails naming why)"
            )
        resources.update(batch_options)
        refused = self.job_system.refuse(resources)
        if refused is not None:
            raise ValueError(refused)
        if self._partitions is not None:
            slurm_limits.check_job(
                self._partitions,
                resources,
                resources.get("partition"),
                [*resources["command_line_argument_lst"], *resources.get("slurm_cmd_args", ())],
                "this call's job",
                "resource_dict key 'partition'",
            )
        return resources

    def _submit(self, fn, args, kwargs, resources, task_store):
        future = Future()
        future.job = None
        upstream = []  # an _Upstream for each Future argument
        pickled = pickled_call(future, fn, args, kwargs, self._collector(upstream), True)
        if pickled is None:
            return future
        function, identity, call = pickled
        keys = [u.key for u in upstream]
        key = resources["cache_key"] or _pmp.task_key(identity, call, keys, resources["cores"])
        future._pmp_key = key
        stored = store.lookup(task_store, key, exact=True)
        if stored is not None:
            # Read only: a read-only store serves its results.
            future.resolve_from_store(stored)
            return future
        failure = upstream_failure(u.future for u in upstream)
        if failure is not None:
            # As inside an allocation: the dependent of a failed call fails
            # as it did, with no job (the job system would refuse or cancel one).
            fail(future, failure)
            return future
        task = next(self._tasks)
        future._pmp_batch_task = (self._calls, task)
        self._futures.add(task, future, {u.task: u.future for u in upstream if u.task})
        name = _job_name(fn, task_store, key)
        cwd = resources["cwd"] or os.getcwd()
        template = resources.get("submission_template")
        if template is not None:
            jobs = [u.job for u in upstream if u.job]
            template = rendered_template(template, name, resources, cwd, jobs)
        try:
            how, what = self._calls.submit(
                task,
                task_store,
                key,
                _function_name(fn),
                time.time(),
                function,
                call,
                [(u.store, u.key, u.task, u.job) for u in upstream],
                name,
                resources,
                cwd,
                sys.executable,
                backends.client_sys_path(),
                self._worker,
                self.pmi_mode,
                template,
                json.dumps(_resource_column(resources)),
            )
        except BaseException:
            self._futures.forget(task)
            raise
        self._taken(task, future, task_store, key, how, what)
        return future

    def _taken(self, task, future, task_store, key, how, what):
        """What became of the call at submit (`_pmp.BatchCalls.submit`)."""
        system = self._futures.system
        if how not in ("submitted", "waiting", "attached", "found"):
            call = self._futures.forget(task)  # concluded already
        if how == "stored":  # finished meanwhile
            future.resolve_from_store(what)
            return
        if how == "failed_unseen":  # its job failed while no client followed it
            future.job, entry = what
            future.earlier_run = EarlierRun("failed", None, True, future.job, system)
            self._futures.set_state(future, "FAILED")
            future.took_times_of(entry)
            fail(future, exception_of(entry.frames))
            return
        if how == "concluded":
            self._futures.conclude(call, what)
            return
        if how == "submitted":
            future.job = what
            if future.job_status is None:  # its follower may have said more already
                self._futures.set_state(future, "PENDING")
        elif how == "attached":
            owner, gone, future.job = what
            future.earlier_run = EarlierRun("attached", owner, gone, future.job, system)
        elif how == "found":
            owner, future.job = what
            future.earlier_run = EarlierRun("attached", owner, True, future.job, system)
        future.log_path = os.fspath(task_store.log_path(key))
        future._pmp_cancel = lambda: self._cancel(task, future)

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
            calls, task = getattr(future, "_pmp_batch_task", (None, None))
            if calls is not self._calls:
                task = None  # another executor's: followed there
            job = getattr(future, "job", None)
            if task is None and job is None and not future.done():
                raise ValueError(
                    "a batch job can depend on a Future of another Executor only once it is "
                    "done (its result is then in that Executor's task store): wait for it first"
                )
            for index, u in enumerate(upstream):
                if u.future is future:
                    return serialize.as_dependency(index)
            upstream.append(_Upstream(future, future._pmp_store, key, task, job))
            return serialize.as_dependency(len(upstream) - 1)

        return on_future

    def _cancel(self, task, future):
        """`future.cancel()`: its job is cancelled and its key free again.
        Future.cancel then cancels a pending Future; a running one fails
        once its job ended, as the job system says."""
        self._calls.cancel([task])
        self._futures.job_over(future, "CANCELLED")

    def unfinished(self):
        return len(self._futures.open())

    def info(self):
        return {"jobs": self._calls.open_jobs()}

    def resize(self, workers):
        raise NotImplementedError("batch jobs have no pool to resize")

    def stop(self):
        """The Executor was dropped: its jobs go on without it."""

    def shutdown(self, wait, cancel_futures):
        # Batch jobs outlive the client: wait=False leaves them running.
        if cancel_futures:
            # The Futures first, then the jobs: no job this cancels (or a
            # dependent the job system ends for it) fails an open Future as
            # "FAILED".
            open_futures = self._futures.open()
            for task, future in open_futures.items():
                self._futures.forget(task)
                self._futures.cancelled_by_shutdown(future)
            self._calls.cancel(list(open_futures))
        elif wait:
            for future in self._futures.open().values():
                future.exception()


# What get_cache_data's `resource_dict` shows of a call's resources:
# executorlib's keys, where the call has a value.
_RESOURCE_COLUMN = (
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "cwd",
    "num_nodes",
    "exclusive",
    "run_time_max",
    "memory_max",
    "partition",
    "priority",
    "slurm_cmd_args",
    "command_line_argument_lst",
    "submission_template",
)


def _resource_column(resources):
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key in _RESOURCE_COLUMN
        if (value := resources.get(key)) not in (None, (), [])
    }


def _function_name(fn):
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:64] or "pmp"


def _job_name(fn, task_store, key):
    """The function's name, so that the queue reads well, then a tag of the
    store and key, so that a client can find the job of a key that a killed
    client submitted but did not record (`find`)."""
    tag = hashlib.sha256(f"{os.fspath(task_store.root)}\0{key}".encode()).hexdigest()[:12]
    return f"{_function_name(fn)}.{tag}"


@atexit.register
def _close_all():
    # Before the interpreter goes, so that no follower thread calls into it;
    # the jobs go on without this client.
    for engine in list(_open):
        engine._calls.close()
