"""pmp: run Python functions on HPC resources from notebooks and scripts.

`pmp.Executor` is a `concurrent.futures.Executor` whose scheduler is written
in Rust; see README.md for the parameters and the backends.
"""

from pmp.client import display_hooks as _display_hooks

# Names load on first use: a worker imports pmp.worker.runtime and must not pay for
# the client side (concurrent.futures, logging, subprocess) at every start.
_EXPORTS = {
    "Allocation": "pmp.client.allocation",
    "DependencyCancelledError": "pmp.client.errors",
    "Executor": "pmp.client.executor",
    "Future": "pmp.client.future",
    "RemoteTraceback": "pmp.worker.remote",
    "WorkerDiedError": "pmp.client.errors",
    "JobFailedError": "pmp.client.errors",
    "clear_cache": "pmp.client.store",
    "SingleNodeExecutor": "pmp.client.executorlib_api",
    "SlurmJobExecutor": "pmp.client.executorlib_api",
    "SlurmClusterExecutor": "pmp.client.executorlib_api",
    "FluxJobExecutor": "pmp.client.executorlib_api",
    "FluxClusterExecutor": "pmp.client.executorlib_api",
    "get_cache_data": "pmp.client.cache_columns",
    "get_cache_data_queue": "pmp.client.cache_jobs",
    "get_item_from_future": "pmp.client.future_tools",
    "get_future_from_cache": "pmp.client.store",
    "terminate_tasks_in_cache": "pmp.client.cache_jobs",
    "terminate_task_in_cache": "pmp.client.cache_jobs",
    "split_future": "pmp.client.future_tools",
}

__all__ = [
    "Allocation",
    "DependencyCancelledError",
    "Executor",
    "FluxClusterExecutor",
    "FluxJobExecutor",
    "Future",
    "JobFailedError",
    "RemoteTraceback",
    "SingleNodeExecutor",
    "SlurmClusterExecutor",
    "SlurmJobExecutor",
    "WorkerDiedError",
    "clear_cache",
    "get_cache_data",
    "get_cache_data_queue",
    "get_future_from_cache",
    "get_item_from_future",
    "split_future",
    "terminate_task_in_cache",
    "terminate_tasks_in_cache",
]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pmp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


def _show_future(future):
    # Imported on first display: `python script.py` never loads IPython.
    from pmp.client.task_names import task_name
    from pmp.notebook import status_display

    status_display.show(future, task_name(future))


def _progress_display(futures, label):
    # Imported on first display, as above.
    from pmp.notebook import status_display

    return status_display.progress_display(futures, label)


# The notebook sits above the client: it hands the client its displays here, at
# the package's top, so that a Future shows itself in any IPython kernel
# (pmp-kernel or ipykernel, `%load_ext pmp` or not) and no client module
# imports `pmp.notebook`.
_display_hooks.register(_show_future, _progress_display)


def load_ipython_extension(shell):
    """`%load_ext pmp`: the %pmp and %%pmp magics."""
    from pmp.notebook import completion
    from pmp.notebook.magics import PmpMagics

    shell.register_magics(PmpMagics(shell))
    completion.register(shell)
