"""`pmp.Allocation`: elastic, walltime-aware allocations from a login node.

An Executor given one (`Executor(backend="slurm", allocation=Allocation(...))`,
outside any Slurm allocation, or `backend="flux"`) runs each call as a fresh
process under the node agents of Slurm jobs (sbatch) or Flux jobs (flux
batch) that pmp's scheduler submits as calls wait and gives back when they
idle. The rules (when to submit, release, which allocation may still take a
call) are the scheduler's; this only checks the values and names them for
the user.
"""

from pmp import _pmp
from pmp.client.resources import check_arguments, check_int, check_plain


class Allocation:
    """What each allocation holds and how many there may be.

    nodes: nodes per allocation (one node agent each, whole nodes).
    time_limit: each allocation's time limit, a Slurm time string
        ("1:00:00", "30:00", "1-0"), a Flux duration ("2m", "1.5h") or
        seconds; required.
    max_allocations: at most this many at once, queued and running together.
    min_allocations: kept even when idle.
    backlog: at most this many waiting in the job system's queue at once.
    idle_timeout: seconds an allocation may have nothing to do before it is
        given back (scancel, flux cancel).
    drain: the last seconds of an allocation in which it starts no call
        without `run_time_max` (default: a tenth of time_limit, between
        30 s and 5 minutes). A call with resource_dict `run_time_max`
        (seconds) goes only where that much time is left.
    partition: Slurm's partition, or Flux's queue (default: the default).
    extra_args: more sbatch or flux batch options (account, qos, ...).
    """

    def __init__(
        self,
        nodes=1,
        time_limit=None,
        max_allocations=1,
        min_allocations=0,
        backlog=1,
        idle_timeout=300,
        drain=None,
        partition=None,
        extra_args=(),
    ):
        if time_limit is None:
            raise ValueError(
                "Allocation(time_limit=...) is required: each allocation's time limit, a "
                "Slurm time string such as '1:00:00', a Flux duration such as '2m' or a "
                "number of seconds"
            )
        for name, value, least in (
            ("nodes", nodes, 1),
            ("max_allocations", max_allocations, 1),
            ("min_allocations", min_allocations, 0),
            ("backlog", backlog, 1),
        ):
            check_int(f"Allocation({name}=...)", value, least)
        if partition is not None:
            if not isinstance(partition, str) or not partition:
                raise ValueError(
                    f"Allocation(partition=...) must be a partition's name, got {partition!r}"
                )
            check_plain("Allocation(partition=...)", partition)
        extra_args = check_arguments("Allocation(extra_args=...)", extra_args)
        self._request = _pmp.AllocationRequest(
            nodes=nodes,
            time_limit=time_limit,
            max_allocations=max_allocations,
            min_allocations=min_allocations,
            backlog=backlog,
            idle_timeout=idle_timeout,
            drain=drain,
            partition=partition,
            extra_args=extra_args,
        )
        self.nodes = nodes
        self.time_limit = self._request.time_limit
        self.max_allocations = max_allocations
        self.min_allocations = min_allocations
        self.backlog = backlog
        self.idle_timeout = self._request.idle_timeout
        self.drain = self._request.drain
        self.partition = partition
        self.extra_args = tuple(extra_args)

    def refuse_run_time_max(self, run_time_max):
        """Why a call with `run_time_max` seconds could never run in these
        allocations, or None (the scheduler's rule)."""
        return self._request.refuse_run_time_max(run_time_max)

    def __repr__(self):
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (
                "nodes",
                "time_limit",
                "max_allocations",
                "min_allocations",
                "backlog",
                "idle_timeout",
                "drain",
                "partition",
                "extra_args",
            )
        )
        return f"Allocation({fields})"
