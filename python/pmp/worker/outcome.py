"""A task's outcome as it leaves the rank that ran it: `(ok, frames)`, the
pickled value or the pickled exception with its remote traceback. The
runtime of one rank and the ranks of an MPI worker (`ranks`) both pack.
"""

from pmp.client import serialize
from pmp.worker.remote import ExceptionWithTraceback, RemoteError
from pmp.worker.task_traceback import format_failure


def pack(ok, value):
    """``(ok, frames)`` for an outcome: the pickled value, or the pickled
    exception with its remote traceback. A value that cannot be pickled
    becomes a TypeError; an exception that cannot, a RemoteError."""
    if ok:
        try:
            return True, serialize.dumps_result(value)
        except Exception as error:  # noqa: BLE001 - reported as the task's failure
            failure = TypeError(
                f"the result, a {type(value).__name__}, could not be pickled: {error}"
            )
            failure.__context__ = error
            return pack(False, failure)
    text = format_failure(value)
    try:
        return False, serialize.dumps_value(ExceptionWithTraceback(value, text))
    except Exception as pickling_error:  # noqa: BLE001 - any pickling failure gets a stand-in
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        stand_in = RemoteError(
            f"{name}: {value} (the exception could not be pickled: {pickling_error})"
        )
        return False, serialize.dumps_value(ExceptionWithTraceback(stand_in, text))
