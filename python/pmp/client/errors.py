"""Exceptions a pmp Future can raise besides the function's own."""

from concurrent.futures import CancelledError

from pmp.worker.remote import RemoteError, RemoteTraceback

__all__ = ["DependencyCancelledError", "RemoteError", "RemoteTraceback", "WorkerDiedError"]


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


class DependencyCancelledError(CancelledError):
    """A Future this task depended on was cancelled, so the task never ran."""
