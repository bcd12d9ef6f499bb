"""`pmp.Executor`: executorlib's Executor, on pmp's Rust scheduler. The
Executor is a face: it checks the user's arguments, keeps the Executor's
resources (`_defaults`) and hands each call to one engine chosen when it
is made: `native_engine.NativeEngine` (pmp's scheduler places the calls:
local processes, srun steps, flux run jobs, pilot jobs) or
`batch_engine.BatchEngine` (each call a batch job of the cluster).

An engine's interface: `submit(fn, args, kwargs, resource_dict)` -> Future,
`shutdown(wait, cancel_futures)`, `stop()` (its Executor was dropped),
`unfinished()` (a count), `info()` (its own keys of `Executor.info`),
`resize(n)` where `resizable`; and the attributes `max_workers`,
`max_cores`, `gpus`, `gpu_count`, `cell_writer` (None: no notebook
output), `job_system` (the batch jobs' `_pmp.JobSystem`, or None) and
`work_outlives_client` (nothing to stop at exit)."""

import atexit
import contextlib
import os
import time
import weakref
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import Future as _BaseFuture

from pmp import _pmp
from pmp.client import backends, display_hooks, native_engine, registry, slurm_limits, store
from pmp.client.batch_engine import BatchEngine
from pmp.client.cell_output import submitting_cell_writer
from pmp.client.executor_checks import (
    check_allocation,
    check_backend_arguments,
    check_callable,
    check_executor_arguments,
    check_launcher,
)
from pmp.client.future_tools import batched
from pmp.client.native_engine import NativeEngine
from pmp.client.resources import check_count
from pmp.client.task_names import function_name

# Executors whose work ends with them: shut down at exit.
_live_executors = weakref.WeakSet()


class Executor(_BaseExecutor):
    """A `concurrent.futures.Executor` that runs each call in a worker process.

    block_allocation=False (the default) starts a fresh worker per call within
    max_cores; block_allocation=True keeps a pool of workers (max_workers, or
    max_cores // cores_per_worker) and lets init_function preload data once per
    worker. refresh_rate is accepted for compatibility and unneeded: pmp's
    scheduler is event-driven. allocation (a `pmp.Allocation`, backend
    "slurm" outside any allocation, or "flux") runs calls in Slurm or Flux
    allocations acquired as calls wait and given back when idle: a fresh
    worker each, or with block_allocation=True a pool of max_workers on their
    nodes. launcher chooses how workers start inside a Slurm allocation or
    Flux instance: "agent" (the default there: one node
    agent per node, started once, forks each call's worker on its node) or
    "step" (one srun step or flux job per worker). memory_max (GB) is kept
    free for each worker on its node while it runs (a reservation the
    scheduler places by, not a limit it enforces), and asked of Slurm
    (`--mem`) by batch jobs and srun steps.

    pmp's own fronts (executorlib_api, pmp.notebook) read `_backend`,
    `_defaults`, `_block`, `_shutdown_called` and `_engine` (its
    `job_system`; a batch engine's `pmi_mode`).
    """

    # Calls as batch jobs of the cluster's job system: True even inside an
    # allocation (executorlib's SlurmClusterExecutor, FluxClusterExecutor),
    # False never (SlurmJobExecutor), None only outside any allocation.
    _cluster_jobs = None

    def __init__(
        self,
        max_workers=None,
        max_cores=None,
        cores_per_worker=1,
        threads_per_core=1,
        gpus_per_worker=0,
        oversubscribe=False,
        cwd=None,
        executor=None,
        hostname_localhost=False,
        backend="auto",
        block_allocation=False,
        init_function=None,
        command_line_argument_lst=(),
        disable_dependencies=False,
        refresh_rate=0.01,
        cache_directory=None,
        launcher=None,
        memory_max=None,
        allocation=None,
    ):
        given = check_executor_arguments(locals())
        cluster = self._cluster_jobs
        if allocation is not None and backend == "flux":
            # An allocation is a flux batch job, an instance of its own, of
            # the instance the flux command reaches, inside one or not.
            cluster = True
        self._backend = backends.choose_backend(backend, executor, cluster)
        check_backend_arguments(
            self._backend,
            executor,
            _pmp.ResourceRequest(
                oversubscribe=oversubscribe,
                command_line_argument_lst=given["command_line_argument_lst"],
            ),
        )
        check_allocation(self._backend, allocation, launcher)
        self._block = block_allocation
        self._disable_dependencies = disable_dependencies
        self._shutdown_called = False
        if block_allocation:
            self._backend = backends.pool_backend(self._backend)
        self._launcher = check_launcher(
            self._backend, launcher, pilots=block_allocation and self._backend.batch
        )
        # Outside any allocation, without a pool: each call is a batch job,
        # which needs a task store (by default ./pmp_cache).
        batch_jobs = self._backend.batch and not block_allocation and allocation is None
        cache_directory = given["cache_directory"]
        if batch_jobs and cache_directory is None:
            cache_directory = os.path.abspath("pmp_cache")
        # In a kernel, `%pmp status` lists this Executor's calls too.
        self._notebook_calls = (
            registry.new_calls(self) if submitting_cell_writer() is not None else None
        )
        # What a call gets unless its resource_dict says otherwise, under the
        # user's key names.
        self._defaults = {
            "cores": cores_per_worker,
            "threads_per_core": threads_per_core,
            "gpus_per_core": gpus_per_worker // cores_per_worker,
            "oversubscribe": oversubscribe,
            "cwd": given["cwd"],
            "executor": None,
            "hostname_localhost": hostname_localhost,
            "command_line_argument_lst": given["command_line_argument_lst"],
            "cache_key": None,
            "cache_directory": cache_directory,
            "restart_limit": 0,
            "memory_max": memory_max,
        }
        task_store = None if cache_directory is None else store.open_store(cache_directory)
        # What a batch or pilot job can get: sinfo is asked at the first question.
        self._partitions = (
            slurm_limits.PartitionLimits(self._backend.launcher)
            if self._backend.batch and self._backend.name == "slurm"
            else None
        )
        if batch_jobs:
            self._engine = BatchEngine(
                self._backend, self._defaults, task_store, given, self._partitions
            )
        else:
            self._engine = NativeEngine(
                self._backend,
                self._defaults,
                task_store,
                given,
                self._partitions,
                weakref.WeakMethod(self.submit),
            )
        if not self._engine.work_outlives_client:
            _live_executors.add(self)
        # An Executor dropped without shutdown still finishes its work and stops.
        weakref.finalize(self, self._engine.stop)

    # ---- concurrent.futures.Executor ----

    def submit(self, fn, /, *args, resource_dict=None, **kwargs):
        if self._shutdown_called:
            raise RuntimeError("cannot schedule new futures after shutdown")
        check_callable(fn, resource_dict)
        future = self._engine.submit(fn, args, kwargs, resource_dict)
        # Named here, where its function is known: every display shows this name.
        future._pmp_name = function_name(fn)
        if self._notebook_calls is not None:
            self._notebook_calls.add(future)
        return future

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """As `concurrent.futures.Executor.map` (results in order; leaving the
        iteration early cancels what has not started); in a notebook it also
        shows one live progress display, done/total, for all the calls."""
        del chunksize  # every call is its own task: the scheduler batches messages
        deadline = None if timeout is None else time.monotonic() + timeout
        # An iterable that is itself a Future (of a list) is its result, as in executorlib.
        iterables = [it.result(timeout) if isinstance(it, _BaseFuture) else it for it in iterables]
        futures = [self.submit(fn, *args) for args in zip(*iterables)]
        on_end = None
        if self._engine.cell_writer is not None and futures:
            display = display_hooks.progress_display(futures, f"map {function_name(fn)}")
            on_end = None if display is None else display.refresh
        return _results_in_order(futures, deadline, on_end)

    def batched(self, iterable, n):
        """Futures of lists of `n` results each (the last may be shorter), in
        the order the Futures of `iterable` finish, as executorlib's: a
        batch whose call failed fails with that call's exception."""
        return batched(iterable, n)

    def __len__(self):
        """How many calls submitted here have not finished yet."""
        return self._engine.unfinished()

    def __bool__(self):
        return True  # an idle executor is still an executor (len() says 0)

    @property
    def max_workers(self):
        """The pool's size under block allocation, else the max_workers given (or None)."""
        return self._engine.max_workers

    @max_workers.setter
    def max_workers(self, value):
        """Grow or shrink the block-allocated pool while it runs, as
        executorlib's: new workers start at once (each runs init_function),
        surplus ones stop, busy ones once their call ends."""
        check_count("max_workers", value)
        if not self._engine.resizable:
            # NotImplementedError, as executorlib raises here.
            raise NotImplementedError(
                "max_workers can be changed only with block_allocation=True (a pool of "
                "workers); without it every call gets a fresh worker within max_cores"
            )
        if self._shutdown_called:
            raise RuntimeError("cannot resize an executor after shutdown")
        self._engine.resize(value)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shutdown_called = True
        self._engine.shutdown(wait, cancel_futures)

    # ---- pmp ----

    @property
    def info(self):
        """What this executor runs on: backend (and why), limits, workers, tasks."""
        info = {
            "backend": self._backend.name,
            "backend_reason": self._backend.reason,
            "block_allocation": self._block,
            "max_workers": self.max_workers,
            "max_cores": self._engine.max_cores,
            "cores_per_worker": self._defaults["cores"],
            "threads_per_core": self._defaults["threads_per_core"],
            "gpus_per_worker": self._defaults["gpus_per_core"] * self._defaults["cores"],
            "gpus": list(self._engine.gpus),
            "gpu_count": self._engine.gpu_count,
            "disable_dependencies": self._disable_dependencies,
            "cache_directory": self._defaults["cache_directory"],
        }
        if self._backend.name in ("slurm", "flux"):
            info["launcher"] = self._launcher
        if self._partitions is not None:
            # No allocation to count: what a batch or pilot job can get.
            info["partitions"] = self._partitions.described()
        info.update(self._engine.info())
        return info


@atexit.register
def _shutdown_live_executors():
    for executor in list(_live_executors):
        with contextlib.suppress(RuntimeError):
            executor.shutdown(wait=True)
    native_engine.join_all()


def _results_in_order(futures, deadline, on_end=None):
    """The results of `futures` in order; closing the iterator early (or an
    error) cancels the calls not yet started. `on_end()` runs when the
    iteration ends, in the consumer's thread (a progress display then shows
    the end while the cell that iterates still runs)."""
    futures = futures[::-1]
    try:
        while futures:
            timeout = None if deadline is None else deadline - time.monotonic()
            yield futures.pop().result(timeout)
    finally:
        for future in futures:
            future.cancel()
        if on_end is not None:
            on_end()
