"""What a call's Future arguments become on their way to a worker, for the
Executor and for batch jobs alike: a done Future that is not the Executor's
own travels as its value; one that failed or was cancelled fails the call."""

from pmp.client.errors import DependencyCancelledError


class UpstreamFailed(Exception):
    """A Future argument had already failed: the new task fails the same way."""

    def __init__(self, exception):
        super().__init__(exception)
        self.exception = exception


def value_of_done(future):
    """A finished foreign Future is replaced by its value; a failed or
    cancelled one fails the new task the same way (`UpstreamFailed`)."""
    if future.cancelled():
        raise UpstreamFailed(
            DependencyCancelledError("a Future this task depends on was cancelled")
        )
    exception = future.exception()
    if exception is not None:
        raise UpstreamFailed(exception)
    return future.result()
