"""Checking the resources an Executor or a single call asks for.

Every mistake is a ValueError at the call that made it, naming the key and
what is allowed — never a hang in a background thread.
"""

import math
import os

from pmp import _pmp

RESOURCE_KEYS = (
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "oversubscribe",
    "cwd",
    "executor",
    "hostname_localhost",
    "command_line_argument_lst",
    "cache_key",
    "cache_directory",
    "restart_limit",
    "num_nodes",
    "exclusive",
    "memory_max",
    "run_time_max",
)

# The keys that shape a worker (the rest say how to reach it).
WORKER_KEYS = (
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "oversubscribe",
    "cwd",
    "command_line_argument_lst",
    "num_nodes",
    "exclusive",
    "memory_max",
)


# The scheduler counts cores, workers, GPUs and restarts in 32 bits; a
# larger number is a mistake, not a machine.
INT_MAX = 2**32 - 1


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > INT_MAX:
        raise ValueError(f"{name} must be <= {INT_MAX}, got {value}")
    return value


def check_count(name, value, key=None):
    """A count the user gives as `name`: an int no less than the
    scheduler's least value for it (`_pmp.MINIMUMS`, under `key`, the
    scheduler's name for it, where it differs)."""
    return check_int(name, value, _pmp.MINIMUMS[key or name])


def check_plain(name, value):
    """`value` (a str) may reach a job script or a command line: it holds no
    control character (the scheduler's rule, `_pmp.control_character`)."""
    found = _pmp.control_character(value)
    if found is not None:
        raise ValueError(
            f"{name} holds the control character {found!r} in {value!r}: a job script or "
            "command line would not read it as one value (a newline starts a line of its "
            "own); remove it"
        )
    return value


def check_memory_max(name, value):
    """`memory_max`: GB of memory (as executorlib counts it) that a batch
    job asks Slurm for, or that the scheduler keeps free on the call's node
    while it runs (a reservation it places by, not a limit it enforces)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of GB, got {value!r}")
    # Slurm counts whole MB, and --mem=0 would mean all of a node's memory.
    if not math.isfinite(value) or value < 1 / 1024:
        raise ValueError(
            f"{name} must be a finite number of GB of at least 1/1024 (1 MB, the least "
            f"Slurm can limit a job to), got {value!r}"
        )
    return value


def check_directory(name, value):
    """A task store's directory as given by the user, made absolute."""
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path, got {type(value).__name__} {value!r}")
    if os.fspath(value) == "":
        raise ValueError(
            f"{name} must be a directory's path, got '' (say '.' for the current directory)"
        )
    # Batch jobs name their log file in it on an #SBATCH line.
    path = check_plain(name, os.path.abspath(os.path.expanduser(os.fspath(value))))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is not a directory")
    return path


def check_key(name, value):
    if not isinstance(value, str) or not _pmp.valid_key(value):
        raise ValueError(
            f"{name} must be a str of up to 200 letters, digits, '.', '_' or '-', in parts "
            f"joined by '/', none starting with '.', got {value!r}"
        )
    return value


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_cwd(name, value):
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path or None, got {type(value).__name__} {value!r}")
    if os.fspath(value) == "":
        raise ValueError(
            f"{name} must be a directory's path or None (the current directory), got ''"
        )
    path = check_plain(name, os.path.abspath(os.fspath(value)))
    # Checked here, in the caller's thread: a worker cannot run in a missing
    # directory, and finding out there would fail the call much later.
    if not os.path.exists(path):
        raise ValueError(f"{name} {path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is not a directory")
    return path


def check_arguments(name, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of strings, got {type(value).__name__} {value!r}")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{name} must hold strings, got {type(item).__name__} {item!r}")
        check_plain(name, item)
    return list(value)


def _count(value, key):
    return check_count(f"resource_dict key {key!r}", value, key)


def _num_nodes(value):
    # None is executorlib's default: the scheduler chooses.
    return None if value is None else _count(value, "num_nodes")


_CHECKS = {
    "cores": lambda v: _count(v, "cores"),
    "threads_per_core": lambda v: _count(v, "threads_per_core"),
    "gpus_per_core": lambda v: _count(v, "gpus_per_core"),
    "oversubscribe": lambda v: check_bool("resource_dict key 'oversubscribe'", v),
    "cwd": lambda v: check_cwd("resource_dict key 'cwd'", v),
    "executor": lambda v: v,
    "hostname_localhost": lambda v: check_bool("resource_dict key 'hostname_localhost'", v),
    "command_line_argument_lst": lambda v: check_arguments(
        "resource_dict key 'command_line_argument_lst'", v
    ),
    "cache_key": lambda v: check_key("resource_dict key 'cache_key'", v),
    "cache_directory": lambda v: check_directory("resource_dict key 'cache_directory'", v),
    "restart_limit": lambda v: _count(v, "restart_limit"),
    "num_nodes": _num_nodes,
    "exclusive": lambda v: check_bool("resource_dict key 'exclusive'", v),
    # Seconds a call may take at most: placed where an allocation has that
    # much time left (None: executorlib's default, no limit).
    "run_time_max": lambda v: (
        None if v is None else check_int("resource_dict key 'run_time_max'", v, 1)
    ),
    # None is executorlib's default: no memory kept.
    "memory_max": lambda v: (
        None if v is None else check_memory_max("resource_dict key 'memory_max'", v)
    ),
}


def request_of(resources):
    """The scheduler's form of checked resources: the keys that shape a
    worker (those a call did not give, num_nodes, exclusive and memory_max,
    are the scheduler's defaults)."""
    return _pmp.ResourceRequest(**{key: resources[key] for key in WORKER_KEYS if key in resources})


def merge_resource_dict(defaults, resource_dict):
    """The executor's defaults overridden by a checked per-call resource_dict."""
    if resource_dict is None:
        return defaults
    if not isinstance(resource_dict, dict):
        raise ValueError(f"resource_dict must be a dict, got {type(resource_dict).__name__}")
    merged = dict(defaults)
    for key, value in resource_dict.items():
        if key not in _CHECKS:
            raise ValueError(f"resource_dict key {key!r} is not one of {', '.join(RESOURCE_KEYS)}")
        merged[key] = _CHECKS[key](value)
    return merged
