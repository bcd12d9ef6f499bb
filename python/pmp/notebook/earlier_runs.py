"""What became of earlier runs of a task's store key, in words (issue 22).

A kernel restart ends the runs of the local backend with it (their workers
die, their locks stay behind, stale), while batch jobs go on in the job
system. Displays the dead kernel put out cannot change; so the re-run cell's
display says what it met (`note`: it ran the call again, or attached to the
job an earlier kernel submitted), and `%pmp status` lists what the store
still knows of calls this kernel did not submit (`InStore`).

The facts are the client's (`Future.earlier_run`, the store's locks and
job records, the job system's states); this module only words them.
"""

import os
import socket
import time

from pmp.client import job_states

# How often `%pmp status` reads the store's locks and job records again,
# and asks the job system for the states of those jobs.
_REREAD = 5.0
# At most this many of those calls are listed, batch jobs first.
_SHOWN = 20


def note(future):
    """One line on the run of its key that `future` met, or None."""
    run = getattr(future, "earlier_run", None)
    if run is None:
        return None
    if run.fate == "ended":
        ran = "ran" if future.done() else "runs"
        return f"the earlier run ended with its kernel ({_process(run)}): this one {ran} it again"
    job = getattr(future, "job", None) or run.job
    if run.system is None:  # a live run of another process holds the key
        if future.done():
            return f"came from the run of another process ({_process(run)})"
        return f"followed: another process ({_process(run)}) is running it"
    submitted = _submitted(run)
    if run.fate == "failed":
        return (
            f"job {job} in {run.system}, {submitted}, failed while no kernel followed it: "
            "run the cell again to run it again"
        )
    if future.done():
        return f"job {job} in {run.system}, {submitted}, ran it"
    if future.running():
        return f"still running in {run.system} as job {job}, {submitted}"
    if getattr(future, "job_status", None) is None:  # not asked about yet
        return f"still in {run.system} as job {job}, {submitted}"
    return f"still queued in {run.system} as job {job}, {submitted}"


def _process(run):
    """`pid 4242 on login1`, or what the lock said."""
    holder = _holder(run.owner)
    if holder is None:
        return "its process is gone" if run.gone else "its process"
    host, pid = holder
    return f"pid {pid} on {host}" + (", gone" if run.gone else "")


def _submitted(run):
    """Who submitted a batch job this kernel attached to."""
    holder = _holder(run.owner)
    if run.gone or holder is None:
        return "submitted before the restart"
    if holder == (socket.gethostname(), os.getpid()):
        return "submitted earlier by this kernel"
    return f"submitted by another process (pid {holder[1]} on {holder[0]})"


def _holder(owner):
    from pmp.client.store import lock_holder

    return lock_holder(owner)


class InStore:
    """`%pmp status`'s lines on calls of the store that this kernel did not
    submit, found by their locks: batch jobs of earlier kernels (or other
    clients) still queued or running, with their state from the job system,
    and runs whose lock a dead process left (ended with its kernel). Read
    again every few seconds."""

    def __init__(self, store_root, executor):
        from pmp.client.store import open_store

        self._store = open_store(store_root)
        # The job system of an Executor that submits batch jobs, for their states.
        self._jobs = None if executor is None else executor._engine.job_system
        self._read_at = None
        self._lines = []

    def lines(self, tasks):
        """The lines (a title and one per call), or [] if there is none."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= _REREAD:
            self._read_at = now
            known = {getattr(task.future, "_pmp_key", None) for task in tasks}
            calls = self._calls(known)
            title = f"calls this kernel did not submit, from the task store: {len(calls)}"
            if len(calls) > _SHOWN:
                title += f" ({len(calls) - _SHOWN} not shown)"
            self._lines = [title, *(f"  {line}" for line in calls[:_SHOWN])] if calls else []
        return self._lines

    def _calls(self, known):
        """A line per locked key this kernel did not submit: a batch job
        holds its key's lock until it ends, and a run that died left its."""
        from pmp import _pmp

        store = self._store
        jobs, lines = {}, []
        for key in store.lock_keys():
            if key in known:
                continue
            try:
                job = store.read_job(key)
            except (_pmp.InvalidEntry, OSError):
                continue  # reported by whoever attaches to it
            if job is not None:
                jobs[key] = job
            elif store.lock_is_stale(key):
                lines.append(
                    f"{key}: ended with its kernel ({_process(_lock_of(store, key))}), without "
                    "a result: run its cell again to run it again"
                )
        return self._batch_jobs(jobs) + lines

    def _batch_jobs(self, jobs):
        """A line per batch job still queued or running, with its state."""
        if not jobs:
            return []
        if self._jobs is None:
            states, system = None, "the job system"
            unknown = "not asked: only a batch executor (--backend slurm) asks its job system"
        else:
            states = self._jobs.states(sorted(set(jobs.values())))
            system = self._jobs.name.capitalize()
            unknown = f"{system} did not answer"
        lines = []
        for key, job in jobs.items():
            submitted = _submitted(_lock_of(self._store, key))
            if states is None:
                lines.append(f"{key}: job {job}, {submitted} (its state: {unknown})")
                continue
            state, reason, nodes, _ = states.get(job, (None, "", "", None))
            if state is None or state in job_states.ENDED:
                continue  # over: what became of it shows when its cell runs again
            where = "running" if state == "RUNNING" else "queued"
            lines.append(
                f"{key}: still {where} in {system} as job {job} "
                f"({job_states.describe(state, reason, nodes)}), {submitted}"
            )
        return lines


def _lock_of(store, key):
    from pmp.client.store import earlier_run

    return earlier_run(store, key, "ended")
