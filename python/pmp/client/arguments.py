"""What a call's Future arguments become on their way to a worker, for the
Executor and for batch jobs alike: a done Future that is not the Executor's
own travels as its value; one that failed or was cancelled fails the call."""

from pmp.client import serialize
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


def pickled_call(future, fn, args, kwargs, on_future, identity):
    """`(function, identity, call)` frames of a submission (`identity`: the
    function's, for a task store's key; else None), or None when the call
    fails `future` now: a Future argument had failed, or an argument does
    not pickle (its Future fails, not submit). ValueError (a misuse, such
    as a Future an Executor cannot depend on) is raised."""
    try:
        if identity:
            function, identity = serialize.dumps_function_and_identity(fn)
        else:
            function, identity = serialize.dumps_function(fn), None
        return function, identity, serialize.dumps_call(args, kwargs, on_future)
    except UpstreamFailed as failed:  # it fails as its argument did
        future.set_exception(failed.exception)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - an unpicklable argument fails its Future only
        future.set_exception(error)
    return None
