"""The Python half of pmp-worker: the Rust side verifies each message, then
hands its frames here to be unpickled and run.

A worker of N MPI ranks runs every task on every rank: rank 0 (the only one
connected to the scheduler) broadcasts the task, each rank runs it, and rank
0 gathers the outcomes in rank order (see `ranks`).
"""

import contextlib
import sys

import cloudpickle

from pmp.client import serialize
from pmp.worker.remote import ExceptionWithTraceback, RemoteError
from pmp.worker.task_output import Capture, Collector


def pack(ok, value):
    """``(ok, frames)`` for an outcome: the pickled value, or the pickled
    exception with its remote traceback. A value that cannot be pickled
    becomes a TypeError; an exception that cannot, a RemoteError."""
    if ok:
        try:
            return True, serialize.dumps_value(value)
        except Exception as error:  # noqa: BLE001 - reported as the task's failure
            failure = TypeError(
                f"the result, a {type(value).__name__}, could not be pickled: {error}"
            )
            failure.__context__ = error
            return pack(False, failure)
    import traceback

    text = "".join(traceback.format_exception(type(value), value, value.__traceback__))
    try:
        return False, serialize.dumps_value(ExceptionWithTraceback(value, text))
    except Exception as pickling_error:  # noqa: BLE001 - any pickling failure gets a stand-in
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        stand_in = RemoteError(
            f"{name}: {value} (the exception could not be pickled: {pickling_error})"
        )
        return False, serialize.dumps_value(ExceptionWithTraceback(stand_in, text))


class LocalRuntime:
    """Runs init functions and tasks in this process; returns ``(ok, value)``.
    While a task runs, what it prints goes to ``send(stream_name, data)``
    (see `task_output`); with no ``send`` it stays on the process's streams."""

    def __init__(self, send=None):
        self.send = send
        self._capture = None if send is None else Capture(send)
        self._functions = {}
        self._init_values = None
        self._parameters = {}

    def init(self, frames):
        try:
            values = serialize.loads(frames)()
            if not isinstance(values, dict):
                raise TypeError(f"init_function must return a dict, not {type(values).__name__}")
            self._init_values = values
            return True, None
        except BaseException as exception:  # noqa: BLE001 - the init's failure is its outcome
            return False, exception
        finally:
            flush()

    def run(self, slot, inline_function, call, dependencies):
        try:
            if inline_function is not None:
                self._functions[slot] = cloudpickle.loads(inline_function)
                self._parameters.pop(slot, None)
            function = self._functions[slot]
            values = [serialize.loads(frames) for frames in dependencies]
            args, kwargs = serialize.loads_call(call, values)
            if self._init_values:
                kwargs = self._inject(slot, function, args, kwargs)
            if self._capture is None:
                return True, function(*args, **kwargs)
            with self._capture:
                return True, function(*args, **kwargs)
        except BaseException as exception:  # noqa: BLE001 - the task's failure is its outcome
            return False, exception
        finally:
            flush()

    def _inject(self, slot, function, args, kwargs):
        """Add init_function's values for parameters the call left unset."""
        import inspect

        if slot not in self._parameters:
            try:
                signature = inspect.signature(function)
            except (TypeError, ValueError):
                signature = None
            self._parameters[slot] = signature
        signature = self._parameters[slot]
        if signature is None:
            return kwargs
        try:
            supplied = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return kwargs
        injectable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        extra = {
            name: self._init_values[name]
            for name, parameter in signature.parameters.items()
            if parameter.kind in injectable and name in self._init_values and name not in supplied
        }
        return {**kwargs, **extra} if extra else kwargs


class Runtime:
    """What pmp-worker's rank 0 calls: frames in, ``(ok, frames)`` out.
    ``sink(stream_name, data)`` sends a running task's output to the scheduler."""

    def __init__(self, ranks=1, sink=None):
        self._local = LocalRuntime(sink)
        self._leader = None
        if ranks > 1:
            from pmp.worker.ranks import Leader

            self._leader = Leader(ranks)

    def init(self, frames):
        if self._leader is not None:
            return self._leader.init(self._local, frames)
        ok, value = self._local.init(frames)
        return (True, []) if ok else pack(False, value)

    def run(self, slot, inline_function, call, dependencies):
        if self._leader is not None:
            return self._leader.run(self._local, slot, inline_function, call, dependencies)
        return pack(*self._local.run(slot, inline_function, call, dependencies))

    def close(self):
        flush()
        if self._leader is not None:
            self._leader.stop()


def follow():
    """Ranks above 0: run what rank 0 broadcasts until it says stop."""
    from pmp.worker.ranks import follow as follow_leader

    follow_leader(LocalRuntime(Collector()))


def flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
