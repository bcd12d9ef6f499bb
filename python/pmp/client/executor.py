"""`pmp.Executor`: the seed's Executor, on pmp's Rust scheduler."""

import atexit
import contextlib
import functools
import os
import sys
import sysconfig
import time
import weakref
from concurrent.futures import Executor as _BaseExecutor
from concurrent.futures import Future as _BaseFuture

from pmp import _pmp
from pmp.client import allocation_fit, backends, display_hooks, registry, serialize, store
from pmp.client.arguments import UpstreamFailed, value_of_done
from pmp.client.cell_output import submitting_cell_writer
from pmp.client.follow import Following
from pmp.client.future import Future, FutureTable
from pmp.client.resources import (
    WORKER_KEYS,
    check_arguments,
    check_bool,
    check_cwd,
    check_directory,
    check_int,
    merge_resource_dict,
    request_of,
)
from pmp.client.task_names import function_name

_live_executors = weakref.WeakSet()
# Native schedulers whose threads may still run, even if their Executor was
# collected: joined at exit so no thread touches Python during finalization.
_unjoined_schedulers = set()


class Executor(_BaseExecutor):
    """A `concurrent.futures.Executor` that runs each call in a worker process.

    block_allocation=False (the default) starts a fresh worker per call within
    max_cores; block_allocation=True keeps a pool of workers (max_workers, or
    max_cores // cores_per_worker) and lets init_function preload data once per
    worker. refresh_rate is accepted for compatibility and unneeded: pmp's
    scheduler is event-driven.
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
    ):
        if max_workers is not None:
            check_int("max_workers", max_workers, 1)
        if max_cores is not None:
            check_int("max_cores", max_cores, 1)
        check_int("cores_per_worker", cores_per_worker, 1)
        check_int("threads_per_core", threads_per_core, 1)
        check_int("gpus_per_worker", gpus_per_worker, 0)
        check_bool("oversubscribe", oversubscribe)
        check_bool("hostname_localhost", hostname_localhost)
        check_bool("block_allocation", block_allocation)
        check_bool("disable_dependencies", disable_dependencies)
        cwd = check_cwd("cwd", cwd)
        if cache_directory is not None:
            cache_directory = check_directory("cache_directory", cache_directory)
        command_line_argument_lst = check_arguments(
            "command_line_argument_lst", command_line_argument_lst
        )
        if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, (int, float)):
            raise ValueError(f"refresh_rate must be a number, got {refresh_rate!r}")
        if init_function is not None:
            if not block_allocation:
                raise ValueError(
                    "init_function needs block_allocation=True: it preloads data into "
                    "long-lived workers, and without block allocation each call gets a fresh one"
                )
            if not callable(init_function):
                raise ValueError(f"init_function must be callable, got {init_function!r}")
        if gpus_per_worker % cores_per_worker:
            raise ValueError(
                f"gpus_per_worker={gpus_per_worker} must be a multiple of "
                f"cores_per_worker={cores_per_worker} (GPUs are given per core)"
            )
        self._backend = backends.choose_backend(backend, executor, self._cluster_jobs)
        if executor is not None and self._backend.name != "flux":
            raise ValueError(
                "executor= takes a flux.job.FluxExecutor, which needs the flux backend; "
                f"this executor uses the {self._backend.name} backend: leave executor=None"
            )
        if oversubscribe and self._backend.name == "flux":
            raise ValueError(_FLUX_OVERSUBSCRIBE.format(what="oversubscribe=True"))
        self._batch = None
        self._pilot_job_name = None
        self._partition_limits = None  # a Slurm job system's, asked for at its first job
        if self._backend.batch and block_allocation and self._backend.name == "flux":
            # `flux run` workers that connect back are pilots already: jobs
            # of the instance that end when the client does.
            self._backend = backends.Backend(
                "flux",
                self._backend.reason.split(": each call")[0]
                + ": block_allocation=True runs the workers as flux run jobs that connect back",
                self._backend.launcher,
            )
        # In a kernel, `%pmp status` lists this Executor's calls too.
        self._notebook_calls = (
            registry.new_calls(self) if submitting_cell_writer() is not None else None
        )
        if self._backend.batch and not block_allocation:
            self._start_batch(locals())
            return
        if self._backend.batch:
            # Outside an allocation, block-allocated workers are pilot jobs.
            if max_workers is None:
                raise ValueError(
                    "block_allocation=True outside any Slurm allocation starts one pilot job "
                    "per worker: say how many with max_workers"
                )
            import uuid

            self._check_partition(
                {
                    "cores": cores_per_worker,
                    "threads_per_core": threads_per_core,
                    "gpus_per_core": gpus_per_worker // cores_per_worker,
                },
                None,
                command_line_argument_lst,
                "each pilot job (one per worker)",
                "--partition in command_line_argument_lst",
            )
            self._pilot_job_name = f"pmp-pilot-{uuid.uuid4().hex[:8]}"
            self._backend.reason = (
                "backend='slurm' was asked for outside any Slurm allocation (SLURM_JOB_ID is "
                f"not set): block_allocation=True starts {max_workers} pilot job(s) with "
                "sbatch, each one pmp-worker that connects back and runs many calls"
            )
        if command_line_argument_lst and self._backend.name == "local":
            raise ValueError(
                "command_line_argument_lst holds extra arguments for srun or flux run; "
                "the local backend has no use for it"
            )
        # Where this environment keeps its programs (pmp-worker, mpiexec from a wheel).
        self._tool_dirs = [sysconfig.get_path("scripts")]
        if self._backend.name == "local":
            # Device ids pmp hands out itself (as CUDA_VISIBLE_DEVICES).
            self._gpus = backends.detect_gpus()
            self._gpu_count = len(self._gpus)
        else:
            # srun and flux pick the devices; the scheduler counts the
            # allocation's GPUs, so a task waits while none is free.
            self._gpus = []
            if self._pilot_job_name:  # each pilot asks Slurm for its own
                self._gpu_count = gpus_per_worker * max_workers
            else:
                self._gpu_count = backends.allocation_gpus(self._backend)
        if max_cores is None:
            if max_workers is not None:
                max_cores = max_workers * cores_per_worker * threads_per_core
            else:
                max_cores = backends.allocation_cores(self._backend) or os.cpu_count() or 1
        # What a call gets unless its resource_dict says otherwise, under the
        # user's key names; the scheduler's own form is self._request.
        self._defaults = {
            "cores": cores_per_worker,
            "threads_per_core": threads_per_core,
            "gpus_per_core": gpus_per_worker // cores_per_worker,
            "oversubscribe": oversubscribe,
            "cwd": cwd,
            "executor": None,
            "hostname_localhost": hostname_localhost,
            "command_line_argument_lst": command_line_argument_lst,
            "cache_key": None,
            "cache_directory": cache_directory,
            "restart_limit": 0,
        }
        self._request = request_of(self._defaults)
        self._store = None if cache_directory is None else store.open_store(cache_directory)
        self._following = Following()
        self._executor = executor
        self._bind_host = backends.bind_host(self._backend, hostname_localhost)
        self._max_cores = max_cores
        self._max_workers = max_workers
        self._block = block_allocation
        self._disable_dependencies = disable_dependencies
        self._mpi_checked = False
        if block_allocation:
            workers = max_workers or max(1, max_cores // (cores_per_worker * threads_per_core))
        else:
            workers = 0
        # srun steps inside a Slurm allocation cannot leave it (allocation_fit).
        self._allocation_cpus = allocation_fit.allocation_cpus(self._backend)
        self._check_fits(self._request, workers=max(workers, 1), given=None)
        self._workers = workers
        self._table = FutureTable()
        # In a notebook, output of a task no display shows goes to the cell
        # that submitted it; elsewhere to this process's streams.
        self._cell_writer = submitting_cell_writer()
        self._foreign = {}
        self._shutdown_called = False
        config = _pmp.SchedulerConfig(
            backend=self._backend.name,
            launcher=self._backend.launcher,
            worker_program=backends.worker_program(self._tool_dirs),
            python=sys.executable,
            sys_path=backends.client_sys_path(),
            block_allocation=block_allocation,
            workers=workers,
            worker_resources=self._request,
            max_cores=max_cores,
            max_workers=max_workers,
            gpu_devices=self._gpus,
            gpu_count=self._gpu_count,
            init=serialize.dumps_value(init_function) if init_function else None,
            bind_host=self._bind_host,
            heartbeat_interval=float(os.environ.get("PMP_HEARTBEAT_INTERVAL", "1")),
            heartbeat_timeout=float(os.environ.get("PMP_HEARTBEAT_TIMEOUT", "10")),
            tool_dirs=self._tool_dirs,
            pilot_job_name=self._pilot_job_name,
        )
        self._scheduler = _pmp.Scheduler(config, self._table.on_events)
        self._table.scheduler = self._scheduler
        _live_executors.add(self)
        _unjoined_schedulers.add(self._scheduler)
        # An Executor dropped without shutdown still finishes its work and stops.
        weakref.finalize(self, self._scheduler.shutdown, False)

    def _start_batch(self, given):
        """Outside any allocation: each call is a batch job (Slurm or Flux),
        which needs a task store (`cache_directory`, by default ./pmp_cache)."""
        if given["oversubscribe"]:
            raise ValueError("oversubscribe=True is for srun steps inside an allocation")
        from pmp.client.batch import BatchJobs, job_system

        cache_directory = given["cache_directory"] or os.path.abspath("pmp_cache")
        self._defaults = {
            "cores": given["cores_per_worker"],
            "threads_per_core": given["threads_per_core"],
            "gpus_per_core": given["gpus_per_worker"] // given["cores_per_worker"],
            "oversubscribe": False,
            "cwd": given["cwd"],
            "executor": None,
            "hostname_localhost": given["hostname_localhost"],
            "command_line_argument_lst": given["command_line_argument_lst"],
            "cache_key": None,
            "cache_directory": cache_directory,
            "restart_limit": 0,
        }
        self._store = store.open_store(cache_directory)
        self._tool_dirs = [sysconfig.get_path("scripts")]
        self._max_cores = given["max_cores"]
        self._max_workers = given["max_workers"]
        self._block = False
        self._disable_dependencies = given["disable_dependencies"]
        self._shutdown_called = False
        self._cell_writer = None
        jobs = job_system(self._backend.name, self._backend.launcher, self._tool_dirs)
        self._batch = BatchJobs(
            jobs, backends.worker_program(self._tool_dirs), self._defaults, self._store
        )

    # ---- concurrent.futures.Executor ----

    def submit(self, fn, /, *args, resource_dict=None, **kwargs):
        future = self._submit(fn, args, kwargs, resource_dict)
        # Named here, where its function is known: every display shows this name.
        future._pmp_name = function_name(fn)
        if self._notebook_calls is not None:
            self._notebook_calls.add(future)
        return future

    def _submit(self, fn, args, kwargs, resource_dict):
        if self._shutdown_called:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        if resource_dict is not None and _takes_resource_dict(fn):
            raise ValueError(
                f"{_name_of(fn)} has a parameter named 'resource_dict', but submit() takes "
                "resource_dict= as the call's resources, so the function would never receive "
                "it: rename the parameter, or pass the value positionally"
            )
        if self._batch is not None:
            return self._submit_batch(fn, args, kwargs, resource_dict)
        task_store, cache_key, restart_limit = self._store, None, 0
        store_root = self._defaults["cache_directory"]
        if resource_dict:
            resources = merge_resource_dict(self._defaults, resource_dict)
            cache_key, restart_limit = resources["cache_key"], resources["restart_limit"]
            if resources["cache_directory"] != self._defaults["cache_directory"]:
                store_root = resources["cache_directory"]
                task_store = store.open_store(store_root)
            elif cache_key is not None and task_store is None:
                raise ValueError(
                    "resource_dict key 'cache_key' names the call's entry in a task store, "
                    "but this Executor has none: set cache_directory on the Executor or in "
                    "the resource_dict"
                )
            self._check_connection(resources, resource_dict)
            if self._block:
                self._check_block_resources(resources)
            request = request_of(resources)
            if request == self._request:
                request = None
            else:
                self._check_fits(request, given=resource_dict)
        else:
            request = None  # the executor's, checked when it was made
        future = Future()
        dependencies, dependency_keys = [], []
        collect = self._dependency_collector(dependencies, dependency_keys)
        identity = None
        try:
            if task_store is None:
                function = serialize.dumps_function(fn)
            else:
                function, identity = serialize.dumps_function_and_identity(fn)
            call = serialize.dumps_call(args, kwargs, collect)
        except UpstreamFailed as failed:
            future.set_exception(failed.exception)
            return future
        except ValueError:
            raise
        except Exception as error:  # noqa: BLE001 - an unpicklable argument fails its Future only
            future.set_exception(error)
            return future
        target = None
        if task_store is not None:
            cores = (request or self._request).cores
            key = cache_key or _content_key(identity, call, dependency_keys, cores)
            if key is not None:
                future._pmp_key = key
                future._pmp_store = task_store
                stored = store.lookup(task_store, key)
                if stored is not None:
                    return self._from_store(future, stored)
                if task_store.lock_is_stale(key):
                    # An earlier run died holding the key (its kernel was
                    # restarted): the worker takes the lock over and runs
                    # it again, which the display says.
                    future.earlier_run = store.earlier_run(task_store, key, "ended")
                # The worker takes the key's lock before it runs the call; if
                # another live run holds it, the task comes back as Elsewhere.
                target = (store_root, key, _name_of(fn), time.time())
                # A partial, not a closure: one object per call, not nine.
                future._pmp_elsewhere = functools.partial(
                    self._attach, future, task_store, key, fn, args, kwargs, resource_dict
                )
        task = self._table.new_id()
        self._table.register(task, future)
        if self._cell_writer is not None:
            future._pmp_write = self._cell_writer()
        try:
            self._scheduler.submit(
                task, function, call, dependencies, request, target, restart_limit
            )
        except BaseException:
            self._table.forget(task)
            future._pmp_table = None
            raise
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
        if self._cell_writer is not None and futures:
            display = display_hooks.progress_display(futures, f"map {function_name(fn)}")
            on_end = None if display is None else display.refresh
        return _results_in_order(futures, deadline, on_end)

    def batched(self, iterable, n):
        """Futures of lists of `n` results each (the last may be shorter), in
        the order the Futures of `iterable` finish, as executorlib's: a
        batch whose call failed fails with that call's exception."""
        from pmp.client.future_tools import batched

        return batched(iterable, n)

    def __len__(self):
        """How many calls submitted here have not finished yet."""
        if self._batch is not None:
            return len(self._batch.unfinished())
        return self._table.unfinished()

    def __bool__(self):
        return True  # an idle executor is still an executor (len() says 0)

    @property
    def max_workers(self):
        """The pool's size under block allocation, else the max_workers given (or None)."""
        return self._workers if self._block else self._max_workers

    @max_workers.setter
    def max_workers(self, value):
        """Grow or shrink the block-allocated pool while it runs, as
        executorlib's: new workers start at once (each runs init_function),
        surplus ones stop, busy ones once their call ends."""
        check_int("max_workers", value, 1)
        if not self._block or self._batch is not None:
            # NotImplementedError, as executorlib raises here.
            raise NotImplementedError(
                "max_workers can be changed only with block_allocation=True (a pool of "
                "workers); without it every call gets a fresh worker within max_cores"
            )
        if self._shutdown_called:
            raise RuntimeError("cannot resize an executor after shutdown")
        self._scheduler.resize_pool(value)
        self._workers = self._max_workers = value

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shutdown_called = True
        if self._batch is not None:
            # Batch jobs outlive the client: wait=False leaves them running.
            if cancel_futures:
                self._batch.cancel_all()
            elif wait:
                self._batch.wait()
            return
        self._scheduler.shutdown(cancel_futures)
        if wait:
            self._scheduler.join()
            _unjoined_schedulers.discard(self._scheduler)
            if self._pilot_job_name:
                # Pilots still queued never connected: they go too.
                backends.scancel_by_name(self._backend.launcher, self._pilot_job_name)

    # ---- pmp ----

    @property
    def info(self):
        """What this executor runs on: backend (and why), limits, workers, tasks."""
        info = {
            "backend": self._backend.name,
            "backend_reason": self._backend.reason,
            "block_allocation": self._block,
            "max_workers": self.max_workers,
            "max_cores": self._max_cores,
            "cores_per_worker": self._defaults["cores"],
            "threads_per_core": self._defaults["threads_per_core"],
            "gpus_per_worker": self._defaults["gpus_per_core"] * self._defaults["cores"],
            "gpus": list(getattr(self, "_gpus", ())),
            "gpu_count": getattr(self, "_gpu_count", 0),
            "disable_dependencies": self._disable_dependencies,
            "cache_directory": self._defaults["cache_directory"],
        }
        if self._backend.batch and self._backend.name == "slurm":
            # No allocation to count: what a batch or pilot job can get.
            info["partitions"] = self._slurm_partitions().described()
        if self._batch is not None:
            unfinished = self._batch.unfinished()
            info["jobs"] = sorted({w.job for w in unfinished if w.job})
            return info
        info.update(self._scheduler.info())
        return info

    def _check_fits(self, request, workers=1, given=None):
        """Refuse, with a ValueError, what could never run here: the scheduler
        would keep it queued forever. The scheduler's own rule decides
        (`_pmp.never_fits`); this only says it in the user's words: `given`
        is the call's resource_dict, or None for the Executor's parameters."""
        reason = _pmp.never_fits(request, self._max_cores, self._gpu_count, workers)
        if reason is not None:
            raise ValueError(self._never_fits_message(reason, request, workers, given))
        if self._allocation_cpus is not None:
            allocation_fit.check(request, workers, self._allocation_cpus, self._gpu_count, given)
        cores = request.cores
        if cores > 1 and not self._mpi_checked and self._backend.name == "local":
            problem = backends.mpi_problem(self._tool_dirs)
            if problem:
                what = (
                    f"cores_per_worker={cores}"
                    if given is None
                    else f"resource_dict key 'cores': cores={cores}"
                )
                raise ValueError(f"{what} runs the function on {cores} MPI ranks, but {problem}")
            self._mpi_checked = True
        if request.command_line_argument_lst and self._backend.name == "local":
            raise ValueError(
                "resource_dict key 'command_line_argument_lst' holds arguments for srun or "
                "flux run; the local backend has no use for it"
            )
        if request.oversubscribe and self._backend.name == "flux":
            raise ValueError(_FLUX_OVERSUBSCRIBE.format(what="resource_dict key 'oversubscribe'"))

    def _never_fits_message(self, reason, request, workers, given):
        cores, threads = request.cores, request.threads_per_core
        if reason.kind == "pool":
            return (
                f"max_workers={workers} block-allocated workers of cores_per_worker={cores} x "
                f"threads_per_core={threads} hold {reason.requested} CPUs at once, more than "
                f"max_cores={reason.available}; lower max_workers, raise max_cores, or set "
                "oversubscribe=True"
            )
        if reason.kind == "cpus":
            if given is None:
                what = f"cores_per_worker={cores} x threads_per_core={threads}"
            else:
                key = (
                    "threads_per_core"
                    if "cores" not in given and "threads_per_core" in given
                    else "cores"
                )
                what = f"resource_dict key {key!r}: {cores} cores x {threads} threads_per_core"
            return (
                f"{what} can never fit in max_cores={reason.available}; lower it, raise "
                "max_cores, or set oversubscribe=True"
            )
        per_core = request.gpus_per_core
        if self._backend.name == "local":
            where = (
                f"detected ({', '.join(self._gpus) or 'none'}; from CUDA_VISIBLE_DEVICES or "
                "nvidia-smi -L)"
            )
        else:
            where = f"in the {self._backend.name} allocation"
        if given is None:
            what = f"gpus_per_worker={per_core * cores}"
            if workers > 1:
                what += f" for each of {workers} workers"
        elif "gpus_per_core" in given:
            what = "resource_dict key 'gpus_per_core'"
            if cores > 1:
                what += f": {per_core} per core x {cores} cores"
        else:
            per_worker = self._defaults["gpus_per_core"] * self._defaults["cores"]
            what = (
                f"resource_dict key 'cores': {cores} cores x the Executor's {per_core} "
                f"GPU(s) per core (gpus_per_worker={per_worker})"
            )
        return f"{what}: {reason.requested} GPU(s) requested but {reason.available} {where}"

    def _submit_batch(self, fn, args, kwargs, resource_dict):
        from pmp.client.batch import BATCH_KEYS, check_batch_value

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
        refused = self._batch.jobs.refuse(resources)
        if refused is not None:
            raise ValueError(refused)
        if self._batch.jobs.name == "slurm":
            self._check_partition(
                resources,
                resources.get("partition"),
                [*resources["command_line_argument_lst"], *resources.get("slurm_cmd_args", ())],
                "this call's job",
                "resource_dict key 'partition'",
            )
        task_store = self._store
        if resources["cache_directory"] != self._defaults["cache_directory"]:
            task_store = store.open_store(resources["cache_directory"])
        future = self._batch.submit(fn, args, kwargs, resources, task_store, resources["cache_key"])
        future._pmp_store = task_store
        return future

    def _check_partition(self, resources, partition, arguments, what, choose):
        """Refuse a Slurm job (`what`) that its partition can never hold: it
        would pend forever. The partitions are asked for once per executor."""
        from pmp.client.slurm_limits import named_partition

        found = self._slurm_partitions().partition(named_partition(arguments) or partition)
        if found is None:
            return  # a partition sinfo does not list: sbatch refuses it itself
        why = found.never_fits(
            resources["cores"],
            resources["threads_per_core"],
            resources["gpus_per_core"],
            resources.get("num_nodes"),
        )
        if why is not None:
            asked = ", ".join(
                f"{key}={resources[key]}"
                for key in ("cores", "threads_per_core", "gpus_per_core", "num_nodes")
                if resources.get(key) is not None
            )
            raise ValueError(
                f"{what} asks for {asked}, which Slurm partition {found.name!r} can never "
                f"hold: {why} ({found}), so it would pend forever. Ask for less, or for a "
                f"partition that holds it ({choose})"
            )

    def _slurm_partitions(self):
        """Slurm's partitions (`slurm_limits`), asked for once per executor."""
        from pmp.client.slurm_limits import PartitionLimits

        if self._partition_limits is None:
            sinfo = os.path.join(os.path.dirname(self._backend.launcher), "sinfo")
            self._partition_limits = PartitionLimits(sinfo)
        return self._partition_limits

    def _check_connection(self, resources, given):
        """`executor` and `hostname_localhost` say how the scheduler reaches
        its workers, which is one choice for the whole Executor: a call may
        repeat it, not change it (it would be ignored)."""
        executor = resources["executor"]
        if executor is not None and executor is not self._executor:
            raise ValueError(
                "resource_dict key 'executor': every call of this Executor is submitted "
                "through the same flux.job.FluxExecutor; pass executor= to the Executor "
                "instead, or make a second Executor for a second Flux instance"
            )
        wanted = resources["hostname_localhost"]
        changed = "hostname_localhost" in given and wanted != self._defaults["hostname_localhost"]
        # Local workers connect over loopback whatever it says.
        if changed and self._backend.name != "local":
            raise ValueError(
                f"resource_dict key 'hostname_localhost'={wanted!r}: this Executor's workers "
                f"all connect to {self._bind_host}, set by the Executor's hostname_localhost="
                f"{self._defaults['hostname_localhost']!r}; set it on the Executor instead"
            )

    def _check_block_resources(self, resources):
        for key in WORKER_KEYS:
            if resources[key] != self._defaults[key]:
                raise ValueError(
                    f"resource_dict key {key!r}: with block_allocation=True every call runs "
                    f"on the same workers, set up with {key}={self._defaults[key]!r}; set "
                    "resources on the Executor, or use block_allocation=False"
                )

    def _from_store(self, future, stored):
        """A call whose result is stored: its Future resolves from the store
        now, and its task is one the client resolves (as a foreign Future's),
        so that dependents get the stored frames without unpickling them here."""
        future.resolve_from_store(stored)  # before any event can: a display shows it at once
        task = self._table.new_id()
        self._table.register(task, future)
        self._scheduler.add_external(task)
        self._scheduler.resolve_external(task, True, stored.frames)
        return future

    def _attach(self, future, task_store, key, fn, args, kwargs, resource_dict, task):
        """`task`'s key is run by another live process (its worker found the
        lock held): the Future resolves from that run's entry, and the task,
        now one the client resolves, with it. Should that run end without an
        entry (its process died), the call is submitted again.
        Called in the events thread."""

        def on_stored(entry):
            if entry.state == "done":
                with contextlib.suppress(Exception):  # InvalidStateError: cancelled meanwhile
                    future.resolve_from_store(entry)
                with contextlib.suppress(RuntimeError):  # the scheduler already stopped
                    self._scheduler.resolve_external(task, True, entry.frames)
            else:  # that run failed: this call fails the same way
                with contextlib.suppress(RuntimeError):
                    self._scheduler.resolve_external(task, False, entry.frames)

        def on_released():
            # That run ended without an entry: this call runs it again.
            future.earlier_run = future.earlier_run._replace(fate="ended", gone=True)
            try:
                again = self.submit(fn, *args, resource_dict=resource_dict, **kwargs)
            except BaseException as error:  # noqa: BLE001 - e.g. shut down meanwhile
                with contextlib.suppress(RuntimeError):
                    self._scheduler.resolve_external(task, False, _exception_frames(error))
                return

            def finished(done):
                future.from_store = done.from_store
                self._resolve_external(task, done)

            again.add_done_callback(finished)

        future.earlier_run = store.earlier_run(task_store, key, "attached")
        self._following.key(task_store, key, on_stored, on_released)
        return future

    def _dependency_collector(self, dependencies, keys):
        """`on_future` for `serialize.dumps_call`: each Future argument becomes
        a dependency (its task id in `dependencies`, its store key, or None,
        at the same index of `keys`) or, when done and foreign, its value."""

        def on_future(future):
            if self._disable_dependencies:
                raise ValueError(
                    "Future objects are not supported as arguments with disable_dependencies=True"
                )
            if isinstance(future, Future) and future._pmp_table is self._table:
                task = future._pmp_task
            elif future.done():
                return serialize.as_value(value_of_done(future))
            else:
                task = self._external_task(future)
            if task not in dependencies:
                dependencies.append(task)
                keys.append(getattr(future, "_pmp_key", None))
            return serialize.as_dependency(dependencies.index(task))

        return on_future

    def _external_task(self, future):
        """A task id for a Future of another executor, resolved when it is."""
        known = self._foreign.get(id(future))
        if known is not None and known[0] is future:
            return known[1]
        task = self._table.new_id()
        self._scheduler.add_external(task)
        self._foreign[id(future)] = (future, task)
        # The value is that of `future` itself, not of whatever object the
        # callback receives: a Future that wraps another (executorlib's
        # split_future and get_item_from_future selectors) passes on its
        # add_done_callback, so the callback gets the wrapped Future.
        future.add_done_callback(lambda _: self._resolve_external(task, future))
        return task

    def _resolve_external(self, task, future):
        self._foreign.pop(id(future), None)
        if future.cancelled():
            ok, frames = False, None
        elif future.exception() is not None:
            ok, frames = False, _exception_frames(future.exception())
        else:
            try:
                ok, frames = True, serialize.dumps_value(future.result())
            except Exception as error:  # noqa: BLE001 - an unpicklable result fails the dependents
                ok, frames = False, _exception_frames(error)
        with contextlib.suppress(RuntimeError):  # the scheduler already stopped
            self._scheduler.resolve_external(task, ok, frames)


_FLUX_OVERSUBSCRIBE = (
    "{what}: the flux backend cannot oversubscribe (Flux gives each rank a core "
    "of its own); ask for no more cores than the Flux instance has, or use the "
    "local or slurm backend"
)


def _takes_resource_dict(fn):
    """Whether `fn` names a parameter `resource_dict`, which submit() would take."""
    import inspect

    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    parameter = parameters.get("resource_dict")
    return parameter is not None and parameter.kind not in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    )


def _content_key(identity, call, dependency_keys, cores):
    """The store key of a call: a hash of its function (wherever it was
    defined), its arguments, the keys of the Futures among them and its
    number of MPI ranks (which makes the result a list); None when one of
    those Futures has no key (a Future of another kind), so the call is not
    stored."""
    if None in dependency_keys:
        return None
    return _pmp.task_key(identity, call, dependency_keys, cores)


def _name_of(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)


def _exception_frames(exception):
    try:
        return serialize.dumps_value(exception)
    except Exception:  # noqa: BLE001 - an unpicklable exception travels as its repr
        return serialize.dumps_value(RuntimeError(repr(exception)))


@atexit.register
def _shutdown_live_executors():
    for executor in list(_live_executors):
        with contextlib.suppress(RuntimeError):
            executor.shutdown(wait=True)
    for scheduler in list(_unjoined_schedulers):
        scheduler.shutdown(False)
        scheduler.join()


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
