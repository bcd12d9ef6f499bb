"""The engine of an Executor whose calls pmp's own scheduler places
(`_pmp.Scheduler`, Rust): worker processes on this machine, srun steps in a
Slurm allocation, `flux run` jobs, pilot jobs that connect back. It turns
a call's resources into the scheduler's request (refusing what could never
run), its arguments into frames and dependencies, and keeps its task store
entry: a stored result resolves the Future at once, and a key another
process runs is attached to (`external_tasks`)."""

import functools
import os
import sys
import time
import uuid

from pmp import _pmp
from pmp.client import backends, serialize, slurm_limits, store
from pmp.client.arguments import pickled_call, value_of_done
from pmp.client.cell_output import submitting_cell_writer
from pmp.client.executor_checks import name_of, refusal_message
from pmp.client.external_tasks import ExternalTasks
from pmp.client.future import Future, FutureTable
from pmp.client.resources import merge_resource_dict, request_of

# Native schedulers whose threads may still run, even if their Executor was
# collected: joined at exit so no thread touches Python during finalization.
_unjoined_schedulers = set()


class NativeEngine:
    """Calls as tasks of one `_pmp.Scheduler`. `defaults` are the Executor's
    resources (its `_defaults`), `task_store` its store or None,
    `partitions` Slurm's (`slurm_limits.PartitionLimits`) where pilot jobs
    are submitted, else None; `resubmit()` gives the Executor's submit, or
    None once it is gone."""

    # An Executor's work ends with it: shut down at exit.
    work_outlives_client = False
    job_system = None  # no batch jobs to follow

    def __init__(self, backend, defaults, task_store, given, partitions, resubmit):
        self._backend = backend
        self._defaults = defaults
        self._store = task_store
        self._executor = given["executor"]
        self._block = given["block_allocation"]
        self._disable_dependencies = given["disable_dependencies"]
        self._mpi_checked = False
        max_workers = given["max_workers"]
        # Where this environment keeps its programs (pmp-worker, mpiexec from a wheel).
        self._tool_dirs = backends.program_dirs()
        # Device ids pmp hands out itself (as CUDA_VISIBLE_DEVICES) on the
        # local backend; elsewhere srun and flux pick the devices, and the
        # scheduler counts the allocation's GPUs so a task waits while none
        # is free (pilots ask Slurm for their own).
        local = backend.name == "local"
        self.gpus = backends.detect_gpus() if local else []
        # The scheduler's form of the Executor's resources.
        self._request = request_of(defaults)
        # The scheduler decides max_cores, the pool's size, the GPUs and
        # what it refuses; this only says what the backend knows.
        plan = _pmp.make_plan(
            backend=backend.name,
            pilots=backend.batch,
            max_workers=max_workers,
            max_cores=given["max_cores"],
            block_allocation=self._block,
            worker=self._request,
            allocation_cores=backends.allocation_cores(backend),
            step_cpus=backends.step_cpus(backend),
            cpu_count=os.cpu_count() or 1,
            gpu_devices=self.gpus,
            gpu_count=0 if local or backend.batch else backends.allocation_gpus(backend),
            in_allocation=backends.inside_allocation(backend),
            launcher=given["launcher"],
            nodes=backends.allocation_nodes(backend),
        )
        if isinstance(plan, _pmp.Refusal):
            raise ValueError(self._refusal_message(plan, self._request, None))
        self._plan = plan
        self.pilot_job_name = None
        self._allocation = given["allocation"]
        if self._allocation is not None:
            # Calls run in allocations the scheduler asks for as they wait.
            self.pilot_job_name = _allocation_job_name(backend, self._allocation)
        elif backend.batch:
            # Outside an allocation, block-allocated workers are pilot jobs.
            self.pilot_job_name = _pilot_job_name(
                backend, defaults, max_workers, partitions, plan.launcher
            )
        self.gpu_count = plan.gpu_count
        self.max_cores = plan.max_cores
        self._max_workers = max_workers
        self._bind_host = backends.bind_host(backend, defaults["hostname_localhost"])
        self._check_mpi(self._request, given=None)
        self._workers = plan.workers
        self.table = FutureTable()
        # In a notebook, output of a task no display shows goes to the cell
        # that submitted it; elsewhere to this process's streams.
        self.cell_writer = submitting_cell_writer()
        init_function = given["init_function"]
        config = _pmp.SchedulerConfig(
            plan=plan,
            launcher=backend.launcher,
            worker_program=backends.worker_program(self._tool_dirs),
            python=sys.executable,
            sys_path=backends.client_sys_path(),
            init=serialize.dumps_value(init_function) if init_function else None,
            bind_host=self._bind_host,
            heartbeat_interval=float(os.environ.get("PMP_HEARTBEAT_INTERVAL", "1")),
            heartbeat_timeout=float(os.environ.get("PMP_HEARTBEAT_TIMEOUT", "10")),
            tool_dirs=self._tool_dirs,
            pilot_job_name=self.pilot_job_name,
            allocation=None if self._allocation is None else self._allocation._request,
        )
        self.scheduler = _pmp.Scheduler(config, self.table.on_events)
        self.table.scheduler = self.scheduler
        self._external = ExternalTasks(self.table, self.scheduler, resubmit)
        _unjoined_schedulers.add(self.scheduler)

    # ---- the engine's interface ----

    @property
    def max_workers(self):
        """The pool's size under block allocation, else the max_workers given (or None)."""
        return self._workers if self._block else self._max_workers

    @property
    def resizable(self):
        return self._block

    def resize(self, workers):
        self.scheduler.resize_pool(workers)
        self._workers = self._max_workers = workers

    def unfinished(self):
        return self.table.unfinished()

    def info(self):
        return self.scheduler.info()

    def stop(self):
        """Stop without waiting (the Executor was dropped): the scheduler
        still finishes the work it has."""
        self.scheduler.shutdown(False)

    def shutdown(self, wait, cancel_futures):
        self.scheduler.shutdown(cancel_futures)
        if wait:
            self.scheduler.join()
            _unjoined_schedulers.discard(self.scheduler)
            if self.pilot_job_name:
                # Pilots still queued never connected: they go too.
                backends.cancel_by_name(self._backend, self.pilot_job_name)

    def submit(self, fn, args, kwargs, resource_dict):
        task_store, cache_key, restart_limit = self._store, None, 0
        run_time_max = None
        store_root = self._defaults["cache_directory"]
        request = None  # the executor's, checked when it was made
        if resource_dict:
            resources = merge_resource_dict(self._defaults, resource_dict)
            cache_key, restart_limit = resources["cache_key"], resources["restart_limit"]
            run_time_max = self._check_run_time_max(resources.get("run_time_max"))
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
            request = request_of(resources)
            if request == self._request:
                request = None
            else:
                self._check_fits(request, resource_dict)
        future = Future()
        dependencies, dependency_keys = [], []
        collect = self._dependency_collector(dependencies, dependency_keys)
        pickled = pickled_call(future, fn, args, kwargs, collect, task_store is not None)
        if pickled is None:
            return future
        function, identity, call = pickled
        target = None
        if task_store is not None:
            cores = (request or self._request).cores
            key = cache_key or _content_key(identity, call, dependency_keys, cores)
            if key is not None:
                future._pmp_key = key
                future._pmp_store = task_store
                stored = store.lookup(task_store, key)
                if stored is not None:
                    return self._external.from_store(future, stored)
                if task_store.lock_is_stale(key):
                    # An earlier run died holding the key (its kernel was
                    # restarted): the worker takes the lock over and runs
                    # it again, which the display says.
                    future.earlier_run = store.earlier_run(task_store, key, "ended")
                # The worker takes the key's lock before it runs the call; if
                # another live run holds it, the task comes back as Elsewhere.
                target = (store_root, key, name_of(fn), time.time())
                # A partial, not a closure: one object per call, not nine.
                future._pmp_elsewhere = functools.partial(
                    self._external.attach, future, task_store, key, fn, args, kwargs, resource_dict
                )
        task = self.table.new_id()
        self.table.register(task, future)
        if self.cell_writer is not None:
            future._pmp_write = self.cell_writer()
        try:
            self.scheduler.submit(
                task, function, call, dependencies, request, target, restart_limit, run_time_max
            )
        except BaseException:
            self.table.forget(task)
            future._pmp_table = None
            raise
        return future

    # ---- what could never run ----

    def _check_run_time_max(self, run_time_max):
        """`run_time_max` (seconds) places a call in an allocation with that
        much time left; without allocations nothing would honour it."""
        if run_time_max is None:
            return None
        if self._allocation is None:
            raise ValueError(
                f"resource_dict key 'run_time_max' ({run_time_max} s) is honoured by batch jobs "
                "and by Executor(allocation=Allocation(...)); this Executor runs calls in "
                "workers that no time limit ends, so it would be ignored: leave it out"
            )
        why = self._allocation.refuse_run_time_max(run_time_max)
        if why is not None:
            raise ValueError(why)
        return run_time_max

    def check_call(self, resource_dict):
        """Refuse now what every call with `resource_dict` would be refused."""
        self._check_fits(
            request_of(merge_resource_dict(self._defaults, resource_dict)), resource_dict
        )

    def _check_fits(self, request, given):
        """Refuse, with a ValueError, what a call (`given`: its resource_dict)
        could never run with (the scheduler would keep it queued forever),
        what the backend cannot honour, or, in a block-allocated pool, other
        resources than its workers'. The plan decides; this says it in the
        user's words."""
        refusal = self._plan.refuse(request)
        if refusal is not None:
            raise ValueError(self._refusal_message(refusal, request, given))
        self._check_mpi(request, given)

    def _refusal_message(self, refusal, request, given):
        return refusal_message(
            refusal, request, given, self._backend.name, self.gpus, self._defaults
        )

    def _check_mpi(self, request, given):
        """Workers of several ranks need MPI in this Python environment (the
        local backend starts them with mpiexec): looked for once."""
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

    # ---- arguments ----

    def _dependency_collector(self, dependencies, keys):
        """`on_future` for `serialize.dumps_call`: each Future argument becomes
        a dependency (its task id in `dependencies`, its store key, or None,
        at the same index of `keys`) or, when done and foreign, its value."""

        def on_future(future):
            if self._disable_dependencies:
                raise ValueError(
                    "Future objects are not supported as arguments with disable_dependencies=True"
                )
            if isinstance(future, Future) and future._pmp_table is self.table:
                task = future._pmp_task
            elif future.done():
                return serialize.as_value(value_of_done(future))
            else:
                task = self._external.task_of(future)
            if task not in dependencies:
                dependencies.append(task)
                keys.append(getattr(future, "_pmp_key", None))
            return serialize.as_dependency(dependencies.index(task))

        return on_future


def _allocation_job_name(backend, allocation):
    """The name that tags this Executor's allocation jobs; says so in
    `backend.reason`."""
    if backend.name == "flux":
        where = (
            "backend='flux' was asked for with an allocation: each call runs in an "
            f"allocation of {allocation.nodes} node(s), a flux batch job of the Flux instance "
            "the flux command reaches, that pmp submits as calls wait"
        )
    else:
        where = (
            "backend='slurm' was asked for outside any Slurm allocation (SLURM_JOB_ID is not "
            f"set): with {allocation!r} each call runs in an allocation of "
            f"{allocation.nodes} node(s) that pmp submits with sbatch as calls wait"
        )
    backend.reason = (
        f"{where}, up to {allocation.max_allocations} at once, and gives back after "
        f"{allocation.idle_timeout:g} s without work"
    )
    return f"pmp-alloc-{uuid.uuid4().hex[:8]}"


def _pilot_job_name(backend, defaults, max_workers, partitions, launcher):
    """The name that tags this Executor's pilot jobs, checked against
    Slurm's partitions; says so in `backend.reason`."""
    slurm_limits.check_job(
        partitions,
        defaults,
        None,
        defaults["command_line_argument_lst"],
        "each pilot job's worker",
        "--partition in command_line_argument_lst",
    )
    if launcher == "step":
        jobs = f"{max_workers} pilot job(s), one per worker"
    else:
        jobs = (
            f"as few pilot jobs as the partition's nodes hold {max_workers} worker(s) in, "
            "one node agent each, which starts its node's workers"
        )
    backend.reason = (
        "backend='slurm' was asked for outside any Slurm allocation (SLURM_JOB_ID is "
        f"not set): block_allocation=True starts {jobs} with sbatch; they connect back "
        "and run many calls"
    )
    return f"pmp-pilot-{uuid.uuid4().hex[:8]}"


def _content_key(identity, call, dependency_keys, cores):
    """The store key of a call: a hash of its function (wherever it was
    defined), its arguments, the keys of the Futures among them and its
    number of MPI ranks (which makes the result a list); None when one of
    those Futures has no key (a Future of another kind), so the call is not
    stored."""
    if None in dependency_keys:
        return None
    return _pmp.task_key(identity, call, dependency_keys, cores)


def join_all():
    """At exit: every scheduler's threads end before Python finalizes."""
    for scheduler in list(_unjoined_schedulers):
        scheduler.shutdown(False)
        scheduler.join()
