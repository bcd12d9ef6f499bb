"""The Executor's arguments checked, and what could never run worded for
the user: each bad value is a ValueError that names its parameter, says
what is allowed and what to do. The rules themselves are the scheduler's
where it has them (its plan: `_pmp.make_plan`, `_pmp.unsupported`,
`_pmp.MINIMUMS`); this module only words its typed refusals."""

import inspect

from pmp import _pmp
from pmp.client import backends
from pmp.client.resources import (
    check_arguments,
    check_bool,
    check_count,
    check_cwd,
    check_directory,
    check_memory_max,
)


def check_executor_arguments(given):
    """The Executor's parameters (`given`, by name) checked on their own,
    before any backend is chosen; returns `given` with cwd, cache_directory
    and command_line_argument_lst in their checked form."""
    if given["max_workers"] is not None:
        check_count("max_workers", given["max_workers"])
    if given["max_cores"] is not None:
        check_count("max_cores", given["max_cores"])
    check_count("cores_per_worker", given["cores_per_worker"], "cores")
    check_count("threads_per_core", given["threads_per_core"])
    check_count("gpus_per_worker", given["gpus_per_worker"], "gpus_per_core")
    if given["memory_max"] is not None:
        check_memory_max("memory_max", given["memory_max"])
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
    check_launcher_value(given["launcher"])
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


def check_backend_arguments(backend, executor, request):
    """What the chosen `backend` cannot do with the Executor's `executor`
    and its workers' `request` (`_pmp.ResourceRequest`): refused before
    anything asks the backend a question."""
    if executor is not None and backend.name != "flux":
        raise ValueError(
            "executor= takes a flux.job.FluxExecutor, which needs the flux backend; "
            f"this executor uses the {backend.name} backend: leave executor=None"
        )
    refusal = _pmp.unsupported(backend.name, request)
    if refusal is not None:
        raise ValueError(_unsupported_message(refusal, None))


# What each launcher does, for the messages that list them.
_LAUNCHERS = {
    "agent": (
        "one node agent per node of the allocation, started once, forks each call's "
        "worker on its node (the default inside a Slurm allocation or a Flux instance, "
        "and for pilot jobs: one agent per job's node)"
    ),
    "step": (
        "one srun step or flux job per worker, with Slurm's or Flux's accounting of each "
        "(outside an allocation with block_allocation=True: one pilot job per worker, whose "
        "ranks srun may spread over nodes)"
    ),
}


def check_allocation(backend, allocation, launcher):
    """`allocation` (a `pmp.Allocation`, or None) is one this Executor can
    honour: Slurm from outside any allocation or Flux (flux batch jobs, each
    an instance of its own), calls (fresh processes, or a block_allocation=True
    pool) under node agents."""
    if allocation is None:
        return
    from pmp.client.allocation import Allocation

    if not isinstance(allocation, Allocation):
        raise TypeError(
            f"allocation must be a pmp.Allocation or None, got {type(allocation).__name__}"
        )
    if not (backend.batch and backend.name in ("slurm", "flux")):
        raise ValueError(
            "allocation=Allocation(...) asks Slurm or Flux for allocations: it needs "
            "backend='slurm' where no Slurm allocation holds this process, or backend='flux'; "
            f"here: {backend.reason}"
        )
    if launcher == "step":
        raise ValueError(
            "allocation=Allocation(...) runs calls (a fresh process each, or with "
            "block_allocation=True the pool's workers) under one node agent per node of each "
            "allocation: launcher='step' (an srun step or flux job per worker) does not apply; "
            "leave it out"
        )


def check_launcher_value(launcher):
    """`launcher` is None or one of the scheduler's launchers (`_pmp.LAUNCHERS`)."""
    if launcher is None or (isinstance(launcher, str) and launcher in _pmp.LAUNCHERS):
        return
    allowed = "; ".join(f"{name!r}: {_LAUNCHERS[name]}" for name in _pmp.LAUNCHERS)
    error = ValueError if isinstance(launcher, str) else TypeError
    raise error(
        f"launcher must be None (the backend's default), {' or '.join(map(repr, _pmp.LAUNCHERS))}, "
        f"got {launcher!r}. {allowed}"
    )


def check_launcher(backend, launcher, pilots):
    """The launcher that starts the workers of `backend` ("agent" or
    "step"), where the user asked for `launcher` (`pilots`: a pool of
    pilot jobs outside any allocation): the scheduler's rule
    (`_pmp.choose_launcher`), which refuses one given where there is no
    allocation for it to choose in."""
    chosen = _pmp.choose_launcher(
        backend.name, backends.inside_allocation(backend), launcher, pilots
    )
    if isinstance(chosen, _pmp.Refusal):
        raise ValueError(refusal_message(chosen, None, None, backend.name, [], None))
    return chosen


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


def refusal_message(refusal, request, given, backend_name, gpus, defaults):
    """The scheduler's `refusal` (`_pmp.Refusal`) of `request`, in the
    user's words: `given` is the call's resource_dict, or None for the
    Executor's parameters; `gpus` the devices the local backend detected;
    `defaults` the Executor's resources."""
    if refusal.kind == "too_small":
        # The client checks these first (`check_count`), with the same minimums.
        name = {"cores": "cores_per_worker"}.get(refusal.setting, refusal.setting)
        return f"{name} must be >= {refusal.available}, got {refusal.requested}"
    if refusal.kind == "pilots":
        return (
            "block_allocation=True outside any Slurm allocation starts the pool's workers "
            "in pilot jobs sized for them or, with allocation=Allocation(...), in those "
            "allocations (one node agent a node): say how many workers with max_workers"
        )
    if refusal.kind == "unsupported":
        return _unsupported_message(refusal, given)
    if refusal.kind == "launcher_unused":
        return _launcher_unused_message(refusal)
    if refusal.kind in ("nodes", "pool_one_node"):
        # The scheduler's message names the key and what to do.
        return f"resource_dict key {refusal.setting or 'num_nodes'!r}: {refusal.message}"
    if refusal.kind == "memory":
        return refusal.message  # it names memory_max, the node's memory and what to do
    if refusal.kind == "not_the_pools":
        key = refusal.setting
        return (
            f"resource_dict key {key!r}: with block_allocation=True every call runs "
            f"on the same workers, set up with {key}={defaults[key]!r}; set "
            "resources on the Executor, or use block_allocation=False"
        )
    if refusal.within == "allocation":
        return _outside_allocation_message(refusal, request, given)
    return _never_fits_message(refusal, request, given, backend_name, gpus, defaults)


def _unsupported_message(refusal, given):
    """A setting the backend cannot honour (`refusal.setting`)."""
    if refusal.setting in ("num_nodes", "exclusive"):
        return (
            f"resource_dict key {refusal.setting!r} chooses nodes of a Slurm allocation or a "
            f"Flux instance, and the {refusal.backend} backend runs every call on this "
            "machine: drop it, or use backend='slurm' or 'flux' inside an allocation"
        )
    if refusal.setting == "memory_max":
        what = "memory_max" if given is None else "resource_dict key 'memory_max'"
        return (
            f"{what}: with launcher='step' each worker is a flux run job, which takes no "
            "memory limit, and pmp knows no node's memory to keep it on: use "
            "launcher='agent' (the default inside a Flux instance), or drop memory_max"
        )
    if refusal.setting == "oversubscribe":
        what = "oversubscribe=True" if given is None else "resource_dict key 'oversubscribe'"
        return (
            f"{what}: the flux backend cannot oversubscribe (Flux gives each rank a core "
            "of its own); ask for no more cores than the Flux instance has, or use the "
            "local or slurm backend"
        )
    what = (
        "command_line_argument_lst holds extra arguments"
        if given is None
        else "resource_dict key 'command_line_argument_lst' holds arguments"
    )
    return f"{what} for srun or flux run; the {refusal.backend} backend has no use for it"


def _launcher_unused_message(refusal):
    """A launcher given where there is no allocation to start workers in."""
    where = (
        "the local backend starts every worker on this machine itself"
        if refusal.backend == "local"
        else f"this {refusal.backend} executor runs outside any, where each worker or call "
        "is a job of its own"
    )
    return (
        f"launcher={refusal.setting!r} chooses how srun or flux start workers inside a Slurm "
        f"allocation or a Flux instance, and {where}: drop launcher (or run inside salloc, "
        "sbatch or flux alloc with backend='slurm' or 'flux')"
    )


def _outside_allocation_message(refusal, request, given):
    """More CPUs than the Slurm allocation srun steps cannot leave: the
    user's max_cores and max_workers may exceed it, but a worker or pool
    larger than it would reach srun and fail there, long after the mistake."""
    cores, threads = request.cores, request.threads_per_core
    where = (
        f"the Slurm allocation's {refusal.available} CPUs (SLURM_NTASKS x "
        "SLURM_CPUS_PER_TASK), which srun steps cannot leave"
    )
    if refusal.kind == "pool":
        return (
            f"max_workers={refusal.workers} block-allocated workers of {cores} cores x "
            f"{threads} threads_per_core need {refusal.requested} CPUs at once, more than "
            f"{where}; lower max_workers or cores, ask salloc/sbatch for more CPUs, or use "
            "SlurmClusterExecutor (a batch job per call)"
        )
    what = (
        f"a worker of {cores} cores x {threads} threads_per_core"
        if given is None
        else f"resource_dict {given!r}: {cores} cores x {threads} threads_per_core"
    )
    return (
        f"{what} can never fit in {where}; lower it, ask salloc/sbatch for more CPUs, or use "
        "SlurmClusterExecutor (a batch job per call)"
    )


def _never_fits_message(refusal, request, given, backend_name, gpus, defaults):
    """More CPUs than max_cores, or more GPUs than there are."""
    cores, threads = request.cores, request.threads_per_core
    workers = refusal.workers
    if refusal.kind == "pool":
        return (
            f"max_workers={workers} block-allocated workers of cores_per_worker={cores} x "
            f"threads_per_core={threads} hold {refusal.requested} CPUs at once, more than "
            f"max_cores={refusal.available}; lower max_workers, raise max_cores, or set "
            "oversubscribe=True"
        )
    if refusal.kind == "cpus":
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
            f"{what} can never fit in max_cores={refusal.available}; lower it, raise "
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
    return f"{what}: {refusal.requested} GPU(s) requested but {refusal.available} {where}"


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
