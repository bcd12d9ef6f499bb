"""The variables `threads_per_core` sets in a worker (the ones numpy's
BLAS libraries, OpenMP and numexpr read), and a task that reads them back.
A module of its own: workers import `read` by reference."""

import os

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def read():
    """{variable: its value in this process, or None}."""
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}
