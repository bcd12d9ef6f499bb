"""The scheduler's plan (`_pmp.make_plan`) decides an Executor's numbers
and refusals; the client only words its typed refusals
(`executor_checks.refusal_message`) with the user's key names."""

import pytest
from pmp import _pmp
from pmp.client.executor_checks import refusal_message
from pmp.client.resources import check_count

DEFAULTS = {"cores": 1, "threads_per_core": 1, "gpus_per_core": 0}


def plan(backend="local", pilots=False, worker=None, *, gpu_count=0, **given):
    """The plan for the user's `given` numbers where the backend knows
    `gpu_count` GPUs, its allocation's cores and srun's `step_cpus`."""
    return _pmp.make_plan(
        backend=backend,
        pilots=pilots,
        max_workers=given.get("max_workers"),
        max_cores=given.get("max_cores"),
        block_allocation=given.get("block_allocation", False),
        worker=worker or _pmp.ResourceRequest(),
        allocation_cores=given.get("allocation_cores"),
        step_cpus=given.get("step_cpus"),
        cpu_count=8,
        gpu_devices=[],
        gpu_count=gpu_count,
        in_allocation=given.get("in_allocation", True),
        launcher=given.get("launcher"),
        nodes=given.get("nodes"),
    )


def test_max_cores_and_the_pool_come_from_the_plan():
    two_by_two = _pmp.ResourceRequest(cores=2, threads_per_core=2)
    made = plan(worker=two_by_two, max_workers=3, block_allocation=True)
    assert (made.max_cores, made.workers) == (12, 3)
    made = plan(block_allocation=True)
    assert (made.max_cores, made.workers) == (8, 8), "the machine's CPUs, a worker each"
    made = plan(backend="slurm", gpu_count=2, allocation_cores=6)
    assert (made.max_cores, made.workers, made.gpu_count) == (6, 0, 2)


def test_pilots_each_count_their_own_gpus_and_need_max_workers():
    gpu_worker = _pmp.ResourceRequest(gpus_per_core=1)
    made = plan("slurm", True, gpu_worker, max_workers=3, block_allocation=True)
    assert made.gpu_count == 3
    refused = plan("slurm", True, gpu_worker, block_allocation=True)
    assert refused.kind == "pilots"
    assert "say how many workers with max_workers" in refusal_message(
        refused, gpu_worker, None, "slurm", [], DEFAULTS
    )


def test_a_refusal_is_typed_and_worded_with_the_users_keys():
    request = _pmp.ResourceRequest()
    refused = plan(max_workers=3, max_cores=2, block_allocation=True)
    assert (refused.kind, refused.within, refused.requested, refused.available) == (
        "pool",
        "max_cores",
        3,
        2,
    )
    assert refusal_message(refused, request, None, "local", [], DEFAULTS).startswith(
        "max_workers=3 block-allocated workers of cores_per_worker=1"
    )
    made = plan(backend="slurm", max_cores=16, step_cpus=4)
    wide = _pmp.ResourceRequest(cores=8)
    refused = made.refuse(wide)
    assert (refused.kind, refused.within) == ("cpus", "allocation")
    assert "resource_dict {'cores': 8}: 8 cores" in refusal_message(
        refused, wide, {"cores": 8}, "slurm", [], DEFAULTS
    )
    assert made.refuse(_pmp.ResourceRequest(cores=4)) is None


def test_settings_a_backend_cannot_honour_are_refused_not_ignored():
    arguments = _pmp.ResourceRequest(command_line_argument_lst=["--exclusive"])
    refused = plan().refuse(arguments)
    assert (refused.kind, refused.setting, refused.backend) == (
        "unsupported",
        "command_line_argument_lst",
        "local",
    )
    assert refusal_message(
        refused, arguments, {"command_line_argument_lst": ["--exclusive"]}, "local", [], DEFAULTS
    ) == (
        "resource_dict key 'command_line_argument_lst' holds arguments for srun or flux "
        "run; the local backend has no use for it"
    )
    assert _pmp.unsupported("slurm", arguments) is None
    over = _pmp.ResourceRequest(oversubscribe=True)
    assert _pmp.unsupported("flux", over).setting == "oversubscribe"


def test_num_nodes_and_exclusive_are_refused_where_nothing_can_honour_them():
    spread = _pmp.ResourceRequest(cores=3, num_nodes=3)
    refused = plan("slurm", nodes=2).refuse(spread)
    assert refusal_message(refused, spread, {"num_nodes": 3}, "slurm", [], DEFAULTS) == (
        "resource_dict key 'num_nodes': num_nodes=3 is more than the allocation's 2 nodes; "
        "ask for at most 2"
    )
    assert plan("slurm", nodes=3).refuse(spread) is None
    assert plan("slurm").refuse(spread) is None, "nodes unknown: srun or flux decide"
    rankless = _pmp.ResourceRequest(num_nodes=2)
    refused = plan("slurm", nodes=2).refuse(rankless)
    assert refusal_message(refused, rankless, {}, "slurm", [], DEFAULTS).startswith(
        "resource_dict key 'num_nodes': num_nodes=2 with 1 cores leaves a node without a rank"
    )
    exclusive = _pmp.ResourceRequest(exclusive=True)
    refused = plan().refuse(exclusive)
    assert (refused.kind, refused.setting) == ("unsupported", "exclusive")
    assert refusal_message(refused, exclusive, {"exclusive": True}, "local", [], DEFAULTS) == (
        "resource_dict key 'exclusive' chooses nodes of a Slurm allocation or a Flux "
        "instance, and the local backend runs every call on this machine: drop it, or use "
        "backend='slurm' or 'flux' inside an allocation"
    )
    pool = plan("slurm", nodes=2, max_workers=2, block_allocation=True)
    spread = _pmp.ResourceRequest(cores=2, num_nodes=2)
    refused = pool.refuse(spread)
    assert (refused.kind, refused.setting) == ("pool_one_node", "num_nodes")
    assert refusal_message(refused, spread, {"num_nodes": 2}, "slurm", [], DEFAULTS) == (
        "resource_dict key 'num_nodes': a block-allocated worker is one process on one node: "
        "it cannot honour num_nodes; without block allocation each such call is a step of "
        "its own"
    )
    assert pool.refuse(_pmp.ResourceRequest(num_nodes=1)) is None, "one node: as any worker"
    with pytest.raises(ValueError, match="^num_nodes must be >= 1, got 0$"):
        _pmp.ResourceRequest(num_nodes=0)


@pytest.mark.parametrize(("key", "least"), [("cores", 1), ("threads_per_core", 1)])
def test_the_client_and_the_scheduler_share_one_minimum(key, least):
    # The scheduler's constructor applies the rule the client words first.
    assert _pmp.MINIMUMS[key] == least
    with pytest.raises(ValueError, match=f"^{key} must be >= {least}, got 0$"):
        _pmp.ResourceRequest(**{key: 0})
    with pytest.raises(ValueError, match=f"^resource_dict key '{key}' must be >= {least}, got 0$"):
        check_count(f"resource_dict key {key!r}", 0, key)


def test_a_pools_call_asking_for_other_resources_is_refused_by_the_plan():
    pool = plan(max_workers=2, block_allocation=True)
    two_threads = _pmp.ResourceRequest(threads_per_core=2)
    refused = pool.refuse(two_threads)
    assert (refused.kind, refused.setting) == ("not_the_pools", "threads_per_core")
    assert refusal_message(
        refused, two_threads, {"threads_per_core": 2}, "local", [], DEFAULTS
    ) == (
        "resource_dict key 'threads_per_core': with block_allocation=True every call runs on "
        "the same workers, set up with threads_per_core=1; set resources on the Executor, or "
        "use block_allocation=False"
    )
    assert pool.refuse(_pmp.ResourceRequest()) is None


def test_the_plan_refuses_a_count_below_its_minimum_too():
    # The client checks first (check_count); the plan does not trust it.
    refused = plan(max_workers=0, block_allocation=True)
    assert (refused.kind, refused.setting) == ("too_small", "max_workers")
    assert (
        refusal_message(refused, _pmp.ResourceRequest(), None, "local", [], DEFAULTS)
        == "max_workers must be >= 1, got 0"
    )


def test_memory_max_is_refused_only_where_flux_runs_a_job_per_worker():
    memory = _pmp.ResourceRequest(memory_max=0.5)
    assert memory.memory_mb == 512
    agents = plan("flux", allocation_cores=4)
    assert agents.refuse(memory) is None, "each agent's node keeps it"
    steps = plan("flux", allocation_cores=4, launcher="step")
    refused = steps.refuse(memory)
    assert (refused.kind, refused.setting) == ("unsupported", "memory_max")
    words = refusal_message(refused, memory, {"memory_max": 0.5}, "flux", [], DEFAULTS)
    assert words.startswith("resource_dict key 'memory_max': with launcher='step'"), words
    assert "use launcher='agent'" in words, words
    executor = plan("flux", worker=memory, allocation_cores=4, launcher="step")
    words = refusal_message(executor, memory, None, "flux", [], DEFAULTS)
    assert words.startswith("memory_max: with launcher='step'"), words
    assert plan("slurm", allocation_cores=4, launcher="step").refuse(memory) is None
