"""executorlib's functions for the batch jobs of a task store:
`get_cache_data_queue` (the store's rows with their jobs' states),
`terminate_task_in_cache` (cancel the job of one key) and
`terminate_tasks_in_cache` (cancel them all). The job of a key is the
store's signed job record; its state and its cancelling are batch mode's
job systems' (`batch_engine.job_system`).
"""

import contextlib
import datetime
import shutil

from pmp import _pmp
from pmp.client import store
from pmp.client.batch_engine import job_system
from pmp.client.cache_columns import call_arguments, get_cache_data, queue_id
from pmp.client.job_states import ENDED
from pmp.client.resources import check_directory, check_key
from pmp.client.store import read_job

_BACKENDS = ("slurm", "flux")


def get_cache_data_queue(cache_directory, queue_type=None, config_directory=None):
    """`get_cache_data`'s rows with a "status" each, as executorlib's:
    "finished" where the entry is there (its `state` says whether the call
    succeeded), the job's state in lower case ("pending", "running", ...)
    while the job system knows it as not ended, "aborted" where it ended
    without an entry, "running" where no job is recorded (being submitted).
    Calls whose job has not written its entry yet are rows too (key,
    function, submitted, queue_id, input_args, input_kwargs). `queue_type`
    is "slurm" (squeue, the default) or "flux" (flux jobs)."""
    path = check_directory("cache_directory", cache_directory)
    jobs = _job_system("get_cache_data_queue", "queue_type", queue_type, config_directory)
    task_store = store.open_store(path)
    rows = get_cache_data(path)
    listed = {row["key"] for row in rows}
    for key in task_store.job_keys():
        if key not in listed:
            row = _pending_row(task_store, key)
            if row is not None:
                rows.append(row)
    waiting = sorted({str(row["queue_id"]) for row in rows if _waiting(row)})
    states = jobs.states(waiting) if waiting else {}
    if states is None:  # says nothing about the jobs: none is called aborted
        raise RuntimeError(
            f"get_cache_data_queue: the {jobs.name} job system did not answer about the jobs "
            f"{', '.join(waiting)} (its controller down or restarting?); try again"
        )
    for row in rows:
        row["status"] = _status(row, states)
    return rows


def terminate_task_in_cache(cache_directory, cache_key, pysqa_config_directory=None, backend=None):
    """Cancel the batch job of the call stored under `cache_key`, as
    executorlib's: `backend` "slurm" (scancel, the default) or "flux" (flux
    cancel). Returns the job id cancelled, or None where there was none to
    cancel (no job recorded, or its entry is there: it ended). Its key is
    free again; a client following the job fails its Future as cancelled."""
    path = check_directory("cache_directory", cache_directory)
    check_key("cache_key", cache_key)
    jobs = _job_system(
        "terminate_task_in_cache",
        "backend",
        backend,
        pysqa_config_directory,
        "pysqa_config_directory",
    )
    task_store = store.open_store(path)
    if task_store.contains(cache_key):
        return None  # ended with an outcome: nothing to cancel
    job = queue_id(task_store, cache_key)
    if job is None:
        return None
    jobs.cancel([str(job)])
    with contextlib.suppress(Exception):  # a read-only store keeps its lock
        task_store.unlock(cache_key)
    return job


def terminate_tasks_in_cache(cache_directory, pysqa_config_directory=None, backend=None):
    """Cancel every batch job recorded in the store (its signed `jobs/` records), as
    executorlib's: `backend` "slurm" (scancel, the default) or "flux" (flux
    cancel). Returns the job ids cancelled; their keys are free again."""
    task_store = store.open_store(check_directory("cache_directory", cache_directory))
    jobs = _job_system(
        "terminate_tasks_in_cache",
        "backend",
        backend,
        pysqa_config_directory,
        "pysqa_config_directory",
    )
    recorded = {}
    for key in task_store.job_keys():
        if task_store.contains(key):
            continue  # ended with a result: nothing to cancel
        job = read_job(task_store, key)
        if job:
            recorded[key] = job
    if recorded:
        jobs.cancel(sorted(set(recorded.values())))
    for key in recorded:
        with contextlib.suppress(Exception):
            task_store.unlock(key)
    return sorted(set(recorded.values()))


def _job_system(function, argument, backend, config_directory, config_name="config_directory"):
    if config_directory is not None:
        raise ValueError(
            f"{function}({config_name}={config_directory!r}): pmp's job systems are built "
            "in, not pysqa's; leave it None"
        )
    backend = "slurm" if backend is None else backend
    if backend not in _BACKENDS:
        raise ValueError(
            f"{function}({argument}={backend!r}): give one of {', '.join(map(repr, _BACKENDS))}"
        )
    program = shutil.which("sbatch" if backend == "slurm" else "flux")
    if program is None:
        raise ValueError(
            f"{function}({argument}={backend!r}): no {backend} commands on PATH; run it where "
            "the job system's commands are"
        )
    return job_system(backend, program, [])


def _pending_row(task_store, key):
    """The row of a call whose job is recorded but has written no entry."""
    try:
        stored = task_store.read_input(key)
    except _pmp.InvalidEntry:
        return None  # not the store's own: nothing of it is shown
    row = {"key": key, "queue_id": queue_id(task_store, key)}
    if stored is not None:
        function, submitted, _call, _dependencies, _resources = stored
        row["function"] = function
        row["submitted"] = datetime.datetime.fromtimestamp(submitted).astimezone()
        row.update(call_arguments(task_store, key))
    return row


def _waiting(row):
    return "state" not in row and row["queue_id"] is not None


def _status(row, states):
    if "state" in row:
        return "finished"
    if row["queue_id"] is None:
        return "running"
    known = states.get(str(row["queue_id"]))
    if known is None or known[0] in ENDED:
        return "aborted"
    return known[0].lower()
