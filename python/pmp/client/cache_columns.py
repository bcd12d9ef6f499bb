"""`get_cache_data`: a row per entry of a task store, with pmp's columns
and those executorlib has beyond them: `input_args` and `input_kwargs`
(the call, where the store holds it), `runtime` (seconds the run took) and
`queue_id` (its batch job).

Everything here is read through the store's verified functions: an input
or a job record that fails its signature check is never unpickled; the
input's columns are then left out, and the record reads as no job.
"""

import json
import os
from concurrent.futures import Future

from pmp import _pmp
from pmp.client import serialize, store
from pmp.client.errors import exception_of
from pmp.client.resources import check_directory


def get_cache_data(cache_directory):
    """One dict per stored task, ready for `pandas.DataFrame(...)`: key,
    function, state ("done" or "failed"), result or error, submitted,
    started, finished (datetimes), host, duration (seconds); and under
    executorlib's names, output (the result), filename (the entry's file),
    runtime (seconds, as duration), queue_id (the batch job, or None) and,
    where the store holds the call (a batch job's), input_args and
    input_kwargs (`executorlib_columns`)."""
    task_store = store.open_store(check_directory("cache_directory", cache_directory))
    rows = []
    for key in task_store.stored_keys():
        try:
            entry = task_store.read(key)
        except _pmp.InvalidEntry as error:
            store.report_invalid(task_store, key, error)
            continue
        if entry is None:  # removed meanwhile
            continue
        row = {
            "key": key,
            "function": entry.function,
            "state": entry.state,
            "submitted": store.local_time(entry.submitted),
            "started": store.local_time(entry.started),
            "finished": store.local_time(entry.finished),
            "host": entry.host,
            "duration": entry.finished - entry.started,
        }
        try:
            value = serialize.loads(entry.frames)
        except Exception as error:  # noqa: BLE001 - e.g. its class is not importable here
            value = error
        if entry.state == "done":
            row["result"] = row["output"] = value
        else:
            row["error"] = value
        row["filename"] = os.fspath(task_store.entry_path(key))
        row.update(executorlib_columns(task_store, key, entry))
        rows.append(row)
    return rows


def executorlib_columns(task_store, key, entry):
    """The executorlib columns of the row of `key` (`entry` its verified
    entry, or None for a call whose batch job has not written one yet)."""
    row = {"queue_id": queue_id(task_store, key)}
    if entry is not None:
        row["runtime"] = entry.finished - entry.started
    row.update(call_arguments(task_store, key))
    return row


def queue_id(task_store, key):
    """The batch job recorded for `key` (the store's signed job record), as
    executorlib gives it: an int for Slurm's decimal ids, Flux's f58 id as
    text; None where there is none: the call ran on this executor's own
    workers, or a client saw its job end and dropped the record."""
    job = store.read_job(task_store, key)
    if job is None:
        return None
    return int(job) if job.isdigit() else job


def call_arguments(task_store, key):
    """{"input_args": tuple, "input_kwargs": dict, "resource_dict": dict}
    of the call stored under `key` for a batch job; {} where the store holds no call (a call run by
    an executor's own workers keeps only its outcome) or the stored one
    fails its check. A Future argument is its upstream call's result where
    that is stored, else the Future `get_future_from_cache` gives for it,
    as executorlib gives a placeholder with a `result()`. An argument that
    cannot be unpickled here (its class is not importable) is the error
    in place of both columns, as a result is."""
    try:
        stored = task_store.read_input(key)
    except _pmp.InvalidEntry:
        return {}  # reported by the store's readers that act on it
    if stored is None:
        return {}
    _function, _submitted, call, dependencies, resources = stored
    # JSON the client wrote and the store signed: data, never code.
    columns = {"resource_dict": json.loads(resources)} if resources else {}
    values = [_upstream_value(task_store, dependency) for dependency in dependencies]
    try:
        args, kwargs = serialize.loads_call(call, values)
    except Exception as error:  # noqa: BLE001 - e.g. an argument's class is not importable here
        return {"input_args": error, "input_kwargs": error, **columns}
    return {"input_args": tuple(args), "input_kwargs": dict(kwargs), **columns}


def _upstream_value(task_store, key):
    try:
        entry = task_store.read(key)
    except _pmp.InvalidEntry:
        entry = None
    if entry is not None and entry.state == "done":
        try:
            return serialize.loads(entry.frames)
        except Exception as error:  # noqa: BLE001 - as a row's own result
            return error
    future = Future()
    if entry is not None:
        future.set_exception(exception_of(entry.frames))
        return future
    try:
        return store.get_future_from_cache(task_store.root, key)
    except (FileNotFoundError, ValueError) as error:
        future.set_exception(error)
        return future
