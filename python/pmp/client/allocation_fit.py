"""What srun steps inside a Slurm allocation can never get: more CPUs than
the allocation holds. `max_cores` and `max_workers` are the user's numbers
and may exceed it; a worker or a pool larger than the allocation would
reach srun and fail there, long after the mistake. As executorlib, it is
refused when the executor is made (a call's own request when submitted).
The rule is the scheduler's (`_pmp.never_fits`) with the allocation's
CPUs as the limit."""

import os

from pmp import _pmp
from pmp.client import backends


def allocation_cpus(backend):
    """The CPUs of the Slurm allocation srun steps run in, where Slurm says
    it for the whole job (SLURM_NTASKS x SLURM_CPUS_PER_TASK, as executorlib
    reads it); None elsewhere (per node counts would refuse a multi-node job's
    valid requests)."""
    if backend.name != "slurm" or backend.batch or not os.environ.get("SLURM_NTASKS"):
        return None
    return backends.allocation_cores(backend)


def check(request, workers, cpus, gpus, given):
    """Refuse `workers` workers of `request` that the allocation's `cpus`
    can never hold (`given`: the call's resource_dict, or None for the
    executor's parameters)."""
    reason = _pmp.never_fits(request, cpus, gpus, workers)
    if reason is None or reason.kind not in ("cpus", "pool"):
        return
    cores, threads = request.cores, request.threads_per_core
    where = (
        f"the Slurm allocation's {cpus} CPUs (SLURM_NTASKS x SLURM_CPUS_PER_TASK), which "
        "srun steps cannot leave"
    )
    if reason.kind == "pool":
        raise ValueError(
            f"max_workers={workers} block-allocated workers of {cores} cores x {threads} "
            f"threads_per_core need {reason.requested} CPUs at once, more than {where}; lower "
            "max_workers or cores, ask salloc/sbatch for more CPUs, or use "
            "SlurmClusterExecutor (a batch job per call)"
        )
    what = (
        f"a worker of {cores} cores x {threads} threads_per_core"
        if given is None
        else f"resource_dict {given!r}: {cores} cores x {threads} threads_per_core"
    )
    raise ValueError(
        f"{what} can never fit in {where}; lower it, ask salloc/sbatch for more CPUs, or use "
        "SlurmClusterExecutor (a batch job per call)"
    )
