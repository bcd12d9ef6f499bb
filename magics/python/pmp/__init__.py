"""pmp: run Python functions on HPC resources from notebooks and scripts.

`pmp.Executor` is a `concurrent.futures.Executor` whose scheduler is written
in Rust; see README.md for the parameters and the backends.
"""

from pmp.errors import DependencyCancelledError, RemoteTraceback, WorkerDiedError
from pmp.executor import Executor
from pmp.future import Future

__all__ = [
    "DependencyCancelledError",
    "Executor",
    "Future",
    "RemoteTraceback",
    "WorkerDiedError",
]
