"""The Executor's arguments checked, and what could never run worded for
the user: each bad value is a ValueError that names its parameter, says
what is allowed and what to do. The rules themselves are the scheduler's
where it has them (`_pmp.never_fits`); this module only words them."""

import inspect

from pmp.client.resources import (
    WORKER_KEYS,
    check_arguments,
    check_bool,
    check_cwd,
    check_directory,
    check_int,
)

FLUX_OVERSUBSCRIBE = (
    "{what}: the flux backend cannot oversubscribe (Flux gives each rank a core "
    "of its own); ask for no more cores than the Flux instance has, or use the "
    "local or slurm backend"
)


def check_executor_arguments(given):
    """The Executor's parameters (`given`, by name) checked on their own,
    before any backend is chosen; returns `given` with cwd, cache_directory
    and command_line_argument_lst in their checked form."""
    if given["max_workers"] is not None:
        check_int("max_workers", given["max_workers"], 1)
    if given["max_cores"] is not None:
        check_int("max_cores", given["max_cores"], 1)
    check_int("cores_per_worker", given["cores_per_worker"], 1)
    check_int("threads_per_core", given["threads_per_core"], 1)
    check_int("gpus_per_worker", given["gpus_per_worker"], 0)
    for name in ("oversubscribe", "hostname_localhost", "block_allocation", "disable_dependencies"):
        check_bool(name, given[name])
    given = dict(given)
    given["cwd"] = check_cwd("cwd", given["cwd"])
    if given["cache_directory"] is not None:
        given["cache_directory"] = check_directory("cache_directory", given["cache_directory"])
    given["command_line_argument_lst"] = check_arguments(
        "command_line_argument_lst", given["command_line_argument_lst"]
    )
    refresh_rate = given["refresh_rate"]
    if isinstance(refresh_rate, bool) or not isinstance(refresh_rate, (int, float)):
        raise ValueError(f"refresh_rate must be a number, got {refresh_rate!r}")
    init_function = given["init_function"]
    if init_function is not None:
        if not given["block_allocation"]:
            raise ValueError(
                "init_function needs block_allocation=True: it preloads data into "
                "long-lived workers, and without block allocation each call gets a fresh one"
            )
        if not callable(init_function):
            raise ValueError(f"init_function must be callable, got {init_function!r}")
    if given["gpus_per_worker"] % given["cores_per_worker"]:
        raise ValueError(
            f"gpus_per_worker={given['gpus_per_worker']} must be a multiple of "
            f"cores_per_worker={given['cores_per_worker']} (GPUs are given per core)"
        )
    return given


def check_backend_arguments(backend, executor, oversubscribe):
    """What the chosen `backend` cannot do with the Executor's `executor`
    and `oversubscribe`."""
    if executor is not None and backend.name != "flux":
        raise ValueError(
            "executor= takes a flux.job.FluxExecutor, which needs the flux backend; "
            f"this executor uses the {backend.name} backend: leave executor=None"
        )
    if oversubscribe and backend.name == "flux":
        raise ValueError(FLUX_OVERSUBSCRIBE.format(what="oversubscribe=True"))


def check_callable(fn, resource_dict):
    """`fn` can be submitted with `resource_dict`."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    if resource_dict is not None and _takes_resource_dict(fn):
        raise ValueError(
            f"{name_of(fn)} has a parameter named 'resource_dict', but submit() takes "
            "resource_dict= as the call's resources, so the function would never receive "
            "it: rename the parameter, or pass the value positionally"
        )


def check_block_resources(resources, defaults):
    """Under block allocation every call runs on the same workers: a call
    cannot ask for other worker resources than the Executor's `defaults`."""
    for key in WORKER_KEYS:
        if resources[key] != defaults[key]:
            raise ValueError(
                f"resource_dict key {key!r}: with block_allocation=True every call runs "
                f"on the same workers, set up with {key}={defaults[key]!r}; set "
                "resources on the Executor, or use block_allocation=False"
            )


def never_fits_message(reason, request, workers, given, backend_name, gpus, defaults):
    """The scheduler's `reason` (`_pmp.never_fits`) why `request` can never
    run, in the user's words: `given` is the call's resource_dict, or None
    for the Executor's parameters; `gpus` the devices the local backend
    detected; `defaults` the Executor's resources."""
    cores, threads = request.cores, request.threads_per_core
    if reason.kind == "pool":
        return (
            f"max_workers={workers} block-allocated workers of cores_per_worker={cores} x "
            f"threads_per_core={threads} hold {reason.requested} CPUs at once, more than "
            f"max_cores={reason.available}; lower max_workers, raise max_cores, or set "
            "oversubscribe=True"
        )
    if reason.kind == "cpus":
        if given is None:
            what = f"cores_per_worker={cores} x threads_per_core={threads}"
        else:
            key = (
                "threads_per_core"
                if "cores" not in given and "threads_per_core" in given
                else "cores"
            )
            what = f"resource_dict key {key!r}: {cores} cores x {threads} threads_per_core"
        return (
            f"{what} can never fit in max_cores={reason.available}; lower it, raise "
            "max_cores, or set oversubscribe=True"
        )
    per_core = request.gpus_per_core
    if backend_name == "local":
        where = (
            f"detected ({', '.join(gpus) or 'none'}; from CUDA_VISIBLE_DEVICES or nvidia-smi -L)"
        )
    else:
        where = f"in the {backend_name} allocation"
    if given is None:
        what = f"gpus_per_worker={per_core * cores}"
        if workers > 1:
            what += f" for each of {workers} workers"
    elif "gpus_per_core" in given:
        what = "resource_dict key 'gpus_per_core'"
        if cores > 1:
            what += f": {per_core} per core x {cores} cores"
    else:
        per_worker = defaults["gpus_per_core"] * defaults["cores"]
        what = (
            f"resource_dict key 'cores': {cores} cores x the Executor's {per_core} "
            f"GPU(s) per core (gpus_per_worker={per_worker})"
        )
    return f"{what}: {reason.requested} GPU(s) requested but {reason.available} {where}"


def name_of(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)


def _takes_resource_dict(fn):
    """Whether `fn` names a parameter `resource_dict`, which submit() would take."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    parameter = parameters.get("resource_dict")
    return parameter is not None and parameter.kind not in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    )
