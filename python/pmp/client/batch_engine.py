"""The engine of an Executor outside any allocation: each call a batch job
of the cluster's job system (Slurm or Flux, `batch.BatchJobs`), which
outlives the client and reads its input from the task store. This checks
a call's resources for a batch job (its batch-only keys, its partition)
and hands it to `BatchJobs`."""

from pmp.client import backends, slurm_limits, store
from pmp.client.batch import BATCH_KEYS, BatchJobs, check_batch_value, job_system
from pmp.client.resources import merge_resource_dict


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
        tool_dirs = backends.program_dirs()
        self.job_system = job_system(backend.name, backend.launcher, tool_dirs)
        self.jobs = BatchJobs(
            self.job_system, backends.worker_program(tool_dirs), defaults, task_store
        )

    @property
    def pmi_mode(self):
        """srun's --mpi for the ranks inside each job; None: pmp's choice."""
        return self.jobs.pmi_mode

    @pmi_mode.setter
    def pmi_mode(self, value):
        self.jobs.pmi_mode = value

    def submit(self, fn, args, kwargs, resource_dict):
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
        task_store = self._store
        if resources["cache_directory"] != self._defaults["cache_directory"]:
            task_store = store.open_store(resources["cache_directory"])
        future = self.jobs.submit(fn, args, kwargs, resources, task_store, resources["cache_key"])
        future._pmp_store = task_store
        return future

    def unfinished(self):
        return len(self.jobs.unfinished())

    def info(self):
        unfinished = self.jobs.unfinished()
        return {"jobs": sorted({w.job for w in unfinished if w.job})}

    def resize(self, workers):
        raise NotImplementedError("batch jobs have no pool to resize")

    def stop(self):
        """The Executor was dropped: its jobs go on without it."""

    def shutdown(self, wait, cancel_futures):
        # Batch jobs outlive the client: wait=False leaves them running.
        if cancel_futures:
            self.jobs.cancel_all()
        elif wait:
            self.jobs.wait()
