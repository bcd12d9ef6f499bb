"""Exceptions a pmp Future can raise besides the function's own."""

from concurrent.futures import CancelledError


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a task's exception: the traceback as the
    worker saw it (as `concurrent.futures.process` does)."""

    def __init__(self, traceback_text):
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self):
        return f'\n"""\n{self.traceback_text}"""'


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


class RemoteError(RuntimeError):
    """Stands in for a task's exception that could not be pickled."""


def _rebuild_exception(exception, traceback_text):
    exception.__cause__ = RemoteTraceback(traceback_text)
    return exception


class ExceptionWithTraceback:
    """Pickles as the exception itself, with the remote traceback attached
    when it is unpickled in the client."""

    def __init__(self, exception, traceback_text):
        self.exception = exception
        self.traceback_text = traceback_text

    def __reduce__(self):
        return _rebuild_exception, (self.exception, self.traceback_text)
