"""Exceptions a pmp Future can raise besides the function's own."""

from concurrent.futures import CancelledError

from pmp.client import serialize
from pmp.worker.remote import RemoteError, RemoteTraceback

__all__ = [
    "DependencyCancelledError",
    "JobFailedError",
    "RemoteError",
    "RemoteTraceback",
    "WorkerDiedError",
]


class WorkerDiedError(RuntimeError):
    """The worker process running the task died (segfault, ``os._exit``, OOM
    kill, a lost node). Only that task fails; it is not re-run."""

    def __init__(self, message, exit_code=None, signal=None, stderr_tail=""):
        full = message
        if stderr_tail:
            full += "\nlast lines of the worker's stderr:\n" + stderr_tail
        super().__init__(full)
        self.exit_code = exit_code
        self.signal = signal
        self.stderr_tail = stderr_tail

    def __reduce__(self):
        return (_rebuild_worker_died, (self.args[0], self.exit_code, self.signal))


def _rebuild_worker_died(message, exit_code, signal):
    error = WorkerDiedError("", exit_code, signal)
    error.args = (message,)
    return error


class JobFailedError(RuntimeError):
    """A batch job ended without a result (time limit, out of memory, node
    failure, cancelled): ``state`` is Slurm's word for it, ``log_tail`` the
    end of the job's output file."""

    def __init__(self, message, job=None, state=None, log_tail=""):
        full = message
        if log_tail:
            full += "\nlast lines of the job's output:\n" + log_tail
        super().__init__(full)
        self.job = job
        self.state = state
        self.log_tail = log_tail


class DependencyCancelledError(CancelledError):
    """A Future this task depended on was cancelled, so the task never ran."""


def exception_of(frames):
    """The exception a task raised, from its pickle frames; a RemoteError
    saying why when they do not unpickle here or hold no exception."""
    try:
        exception = serialize.loads(frames)
    except Exception as error:  # noqa: BLE001 - e.g. its class is not importable here
        return RemoteError(f"the task raised an exception that cannot be unpickled here: {error}")
    if not isinstance(exception, BaseException):
        return RemoteError(f"the task raised a non-exception: {exception!r}")
    return exception
