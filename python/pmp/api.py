"""executorlib.api's names in pmp: `from pmp.api import ...` in place of
`from executorlib.api import ...`.

`TestClusterExecutor` and `cloudpickle_register` mean here what they mean
there. The rest of executorlib.api is the machinery of its own workers
(sockets, spawners, its task queue), which pmp's Rust scheduler replaces:
importing one of those names is an ImportError that says what pmp has
instead.
"""

from pmp.client.executorlib_api import TestClusterExecutor

__all__ = ["TestClusterExecutor", "cloudpickle_register"]

# executorlib.api's names that have no counterpart in pmp, and why.
_WORKER_MACHINERY = (
    "pmp starts its workers from its Rust scheduler and talks to them over its own "
    "signed ZeroMQ protocol; executorlib's {name} has nothing to act on here. Choose "
    "where workers run with the executor class (SingleNodeExecutor, SlurmJobExecutor, "
    "FluxJobExecutor, ...) or pmp.Executor(backend=...)"
)
_NOT_IN_PMP = {
    "ExecutorlibSocketError": _WORKER_MACHINERY,
    "SocketInterface": _WORKER_MACHINERY,
    "interface_bootup": _WORKER_MACHINERY,
    "interface_connect": _WORKER_MACHINERY,
    "interface_receive": _WORKER_MACHINERY,
    "interface_send": _WORKER_MACHINERY,
    "interface_shutdown": _WORKER_MACHINERY,
    "MpiExecSpawner": _WORKER_MACHINERY,
    "SubprocessSpawner": _WORKER_MACHINERY,
    "get_command_path": (
        "executorlib's get_command_path finds its worker scripts; pmp's worker is the "
        "program pmp-worker, which the scheduler finds itself"
    ),
    "cancel_items_in_queue": (
        "executorlib's cancel_items_in_queue empties its task queue; pmp has none to reach: "
        "cancel calls with Future.cancel() or executor.shutdown(cancel_futures=True)"
    ),
}


def cloudpickle_register(ind=2):
    """As executorlib's: have cloudpickle pickle the module of the caller `ind`
    frames up (the caller's caller by default, the caller itself where there
    is no such frame) by value, so that workers that cannot import it still
    run its functions."""
    import inspect

    import cloudpickle

    try:
        cloudpickle.register_pickle_by_value(inspect.getmodule(inspect.stack()[ind][0]))
    except IndexError:
        cloudpickle_register(ind=ind - 1)
    except ValueError:  # no module to register (a notebook cell), as executorlib
        pass


def __getattr__(name):
    why = _NOT_IN_PMP.get(name)
    if why is None:
        raise AttributeError(f"module 'pmp.api' has no attribute {name!r}")
    # An ImportError, not an AttributeError: `from pmp.api import name` keeps
    # this message instead of replacing it with "cannot import name".
    raise ImportError(f"pmp.api has no {name}: {why.format(name=name)}")


def __dir__():
    return __all__
