"""The Python half of pmp-worker: the Rust side verifies each message, then
hands its frames here to be unpickled and run.

A worker of N MPI ranks runs every task on every rank: rank 0 (the only one
connected to the scheduler) broadcasts the task, each rank runs it, and rank
0 gathers the outcomes in rank order (see `ranks`).
"""

import cloudpickle

from pmp.client import serialize
from pmp.worker import ranks as mpi_ranks  # the parameter `ranks` is a count
from pmp.worker.outcome import pack
from pmp.worker.task_output import Capture, Collector, flush
from pmp.worker.task_traceback import remember_cell_source


class LocalRuntime:
    """Runs init functions and tasks in this process; returns ``(ok, value)``.
    While a task runs, what it prints goes to ``send(stream_name, data)``
    (see `task_output`); with no ``send`` it stays on the process's streams."""

    def __init__(self, send=None):
        import os

        self.send = send
        self._capture = None if send is None else Capture(send)
        self._functions = {}
        # Values for parameters a call leaves unset: init_function's, and
        # executorlib's worker id: this worker's index (PMP_WORKER_ID) in a
        # block-allocated pool, and 0 for a worker started for one call, as
        # executorlib gives there.
        self._init_values = {}
        worker_id = os.environ.get("PMP_WORKER_ID", "")
        if worker_id.isdigit():
            block = os.environ.get("PMP_BLOCK_ALLOCATION") == "1"
            self._init_values[WORKER_ID_PARAMETER] = int(worker_id) if block else 0
        self._parameters = {}  # slot -> (signature, the names it may be given)

    def init(self, frames):
        try:
            init_function = serialize.loads(frames)
            values = init_function(**self._wanted(init_function, {}))
            if not isinstance(values, dict):
                raise TypeError(f"init_function must return a dict, not {type(values).__name__}")
            self._init_values = {**self._init_values, **values}
            self._parameters.clear()
            return True, None
        except BaseException as exception:  # noqa: BLE001 - the init's failure is its outcome
            return False, exception
        finally:
            flush()

    def run(self, slot, inline_function, call, dependencies):
        try:
            if inline_function is not None:
                self._functions[slot] = cloudpickle.loads(inline_function)
                remember_cell_source(self._functions[slot])
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
        """Add the init values (init_function's, the worker id) for
        parameters the call left unset."""
        known = self._parameters.get(slot)
        if known is None:
            known = self._parameters[slot] = self._injectable(function)
        signature, names = known
        if not names:  # nearly every function: nothing to look at per call
            return kwargs
        try:
            supplied = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return kwargs
        extra = {name: self._init_values[name] for name in names if name not in supplied}
        return {**kwargs, **extra} if extra else kwargs

    def _injectable(self, function):
        """(signature, names of its parameters that init values can fill)."""
        import inspect

        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None, ()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = tuple(
            name
            for name, parameter in signature.parameters.items()
            if parameter.kind in kinds and name in self._init_values
        )
        return signature, names

    def _wanted(self, function, given):
        """The init values `function` (an init_function) asks for by name."""
        _, names = self._injectable(function)
        return {name: self._init_values[name] for name in names if name not in given}


WORKER_ID_PARAMETER = "executorlib_worker_id"


class Runtime:
    """What pmp-worker's rank 0 calls: frames in, ``(ok, frames)`` out.
    ``sink(stream_name, data)`` sends a running task's output to the scheduler."""

    def __init__(self, ranks=1, sink=None):
        self._local = LocalRuntime(sink)
        self._leader = None
        if ranks > 1:
            self._leader = mpi_ranks.Leader(ranks)

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
    mpi_ranks.follow(LocalRuntime(Collector()))
