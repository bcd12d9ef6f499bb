"""A task's exception as it travels from worker to client, its traceback attached.

Kept free of heavy imports: every worker loads it at start.
"""


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a task's exception: the traceback as the
    worker saw it (as `concurrent.futures.process` does)."""

    def __init__(self, traceback_text):
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self):
        return f'\n"""\n{self.traceback_text}"""'


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
