"""A call larger than any node of the allocation, on the real Slurm with two
nodes of 4 CPUs: under node agents it becomes an srun step of its own
spread over both nodes, as srun ran it before agents, while the calls that
fit one node keep running under the agents beside it."""

import pytest

SALLOC_2 = ("salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--time=5")

# What the scripts share: `wait_for(path)` holds a call until the client
# (or another call) creates `path`.
WAIT_FOR = """
import os, pathlib, time
from pmp import Executor

def wait_for(path):
    deadline = time.time() + 60
    while not pathlib.Path(path).exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
"""

SPAN = (
    WAIT_FOR
    + """
def ranks(i):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        pathlib.Path("spanning").touch()
    # Every rank holds on until the one-node calls ran beside it and the
    # client saw it in exe.info.
    wait_for("release")
    return (
        i,
        comm.Get_rank(),
        comm.Get_size(),
        os.environ["SLURMD_NODENAME"],
        os.environ["SLURM_STEP_ID"],
    )

def where(beside=False):
    if beside:
        wait_for("spanning")
    return os.environ["SLURMD_NODENAME"], os.environ["SLURM_STEP_ID"]

with Executor(backend="slurm") as exe:
    print(exe.info["launcher"])
    big = exe.submit(ranks, 6, resource_dict={"cores": 6})
    small = [exe.submit(where, True) for _ in range(2)]
    beside = [f.result(timeout=120) for f in small]
    print(sorted({w["node"] for w in exe.info["workers"] if w["state"] == "busy"}))
    pathlib.Path("release").touch()
    spread = big.result(timeout=120)
    try:
        exe.submit(ranks, 9, resource_dict={"cores": 9})
    except ValueError as refused:
        print("refused:", refused)
    agents = exe.submit(where).result(timeout=120)[1]
print(sorted(spread))
print(sorted(beside))
print(agents)
"""
)


@pytest.mark.timeout(240)
def test_a_call_larger_than_any_node_runs_as_its_own_step_across_both_beside_the_agents(
    slurm, run_script
):
    done = run_script(SPAN, SALLOC_2)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    launcher, busy, refused, spread, beside, agents_step = done.stdout.strip().splitlines()
    assert launcher == "agent"
    spread = eval(spread)
    assert [rank for _, rank, _, _, _ in spread] == list(range(6))
    assert {(i, size) for i, _, size, _, _ in spread} == {(6, 6)}, spread
    nodes = [node for _, _, _, node, _ in spread]
    # Whole ranks where the scheduler counted them: both nodes empty, the
    # first holds 4, the rest go to the next.
    assert nodes == ["node1"] * 4 + ["node2"] * 2, spread
    (step,) = {step for _, _, _, _, step in spread}
    beside = eval(beside)
    # The span left 2 CPUs, on the node it has 2 ranks on: both calls ran
    # there while it ran (they waited for it, it for them), each forked by
    # that node's agent, in the agents' step.
    assert {node for node, _ in beside} == {"node2"}, beside
    assert {s for _, s in beside} == {agents_step}, (beside, agents_step)
    assert step != agents_step, "the span is a step of its own"
    assert busy == "['node1+node2']", "exe.info names both nodes of the span"
    assert refused == (
        "refused: resource_dict {'cores': 9}: 9 cores x 1 threads_per_core can never fit in "
        "the Slurm allocation's 8 CPUs (SLURM_NTASKS x SLURM_CPUS_PER_TASK), which srun steps "
        "cannot leave; lower it, ask salloc/sbatch for more CPUs, or use SlurmClusterExecutor "
        "(a batch job per call)"
    )
    # srun says nothing in the user's output about the allocation's tasks per node.
    assert "Warning" not in done.stderr, done.stderr


NODES = (
    WAIT_FOR
    + """
def hosts(tag=None):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if tag is not None:
        if comm.Get_rank() == 0:
            pathlib.Path(f"running-{tag}").touch()
        # Held until the client has run its other calls beside it.
        wait_for(f"release-{tag}")
    return (
        comm.Get_rank(),
        comm.Get_size(),
        os.environ["SLURMD_NODENAME"],
        os.environ["SLURM_STEP_ID"],
    )

def where(beside=None):
    if beside is not None:
        wait_for(beside)
    return os.environ["SLURMD_NODENAME"], os.environ["SLURM_STEP_ID"]

def refused(exe, **resource_dict):
    try:
        exe.submit(where, resource_dict=resource_dict)
    except ValueError as why:
        return str(why)
    return "accepted"

with Executor(backend="slurm") as exe:
    spread = exe.submit(hosts, "spread", resource_dict={"cores": 2, "num_nodes": 2})
    small = [exe.submit(where, "running-spread") for _ in range(2)]
    beside = [f.result(timeout=120) for f in small]
    busy = sorted({w["node"] for w in exe.info["workers"] if w["state"] == "busy"})
    pathlib.Path("release-spread").touch()
    print(sorted(spread.result(timeout=120)))
    print(spread.place[2], busy)
    print(sorted(beside))
    print(sorted(exe.submit(hosts, resource_dict={"cores": 2, "num_nodes": 1}).result(timeout=120)))
    alone = exe.submit(hosts, "alone", resource_dict={"exclusive": True})
    wait_for("running-alone")
    others = [exe.submit(where).result(timeout=120) for _ in range(3)]
    pathlib.Path("release-alone").touch()
    print(alone.result(timeout=120)[2:], alone.place[2])
    print(sorted(others))
    print(exe.submit(where).result(timeout=120)[1])
    print(refused(exe, cores=3, num_nodes=3))
    print(refused(exe, num_nodes=2))
    print(refused(exe, num_nodes=0))
    print(refused(exe, num_nodes=True))
    print(refused(exe, exclusive="yes"))
with Executor(backend="slurm", block_allocation=True, max_workers=1) as pool:
    print(refused(pool, cores=2, num_nodes=2))
"""
)


@pytest.mark.timeout(240)
def test_num_nodes_spreads_a_call_over_exactly_those_nodes_and_exclusive_has_its_node_alone(
    slurm, run_script
):
    done = run_script(NODES, SALLOC_2)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (
        spread,
        named,
        beside,
        one_node,
        alone,
        others,
        agents_step,
        too_many,
        rankless,
        zero,
        boolean,
        text,
        pool,
    ) = done.stdout.strip().splitlines()
    spread = eval(spread)
    # Two ranks on two nodes: one on each, as srun's block distribution
    # lays them out, in a step of its own.
    assert [(rank, size, node) for rank, size, node, _ in spread] == [
        (0, 2, "node1"),
        (1, 2, "node2"),
    ], spread
    (step,) = {step for _, _, _, step in spread}
    assert named == "node1+node2 ['node1+node2']", "the Future and exe.info name both"
    # One-node calls ran beside it, forked by the agents in their own step.
    beside = eval(beside)
    assert {s for _, s in beside} == {agents_step}, (beside, agents_step)
    assert step != agents_step
    # num_nodes=1: both ranks on one node, under its agent.
    one_node = eval(one_node)
    assert len({node for _, _, node, _ in one_node}) == 1, one_node
    assert {s for _, _, _, s in one_node} == {agents_step}, one_node
    # exclusive: a step of its own, and the calls made while it ran all went
    # to the other node, though its node had 3 CPUs free (packing would
    # have put them there).
    (alone_node, alone_step), alone_named = eval(alone.rsplit(" ", 1)[0]), alone.rsplit(" ", 1)[1]
    assert alone_step != agents_step
    assert alone_named == alone_node
    assert {node for node, _ in eval(others)} == {"node1", "node2"} - {alone_node}, others
    assert too_many == (
        "resource_dict key 'num_nodes': num_nodes=3 is more than the allocation's 2 nodes; "
        "ask for at most 2"
    )
    assert rankless.startswith(
        "resource_dict key 'num_nodes': num_nodes=2 with 1 cores leaves a node without a rank"
    ), rankless
    assert zero == "resource_dict key 'num_nodes' must be >= 1, got 0"
    assert boolean == "resource_dict key 'num_nodes' must be an int, got bool True"
    assert text == "resource_dict key 'exclusive' must be True or False, got str 'yes'"
    assert pool.startswith(
        "resource_dict key 'num_nodes': a block-allocated worker is one process on one node"
    ), pool


EXECUTORLIB = """
import os
from pmp import SlurmJobExecutor

def hosts():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), os.environ["SLURMD_NODENAME"]

with SlurmJobExecutor(resource_dict={"cores": 2, "num_nodes": 2, "exclusive": True}) as exe:
    print(sorted(exe.submit(hosts).result(timeout=120)))
    print(sorted(exe.submit(hosts, resource_dict={"num_nodes": 1}).result(timeout=120))[0][1]
          in ("node1", "node2"))
"""


@pytest.mark.timeout(240)
def test_slurm_job_executor_takes_num_nodes_and_exclusive_as_executorlib_users_write_them(
    slurm, run_script
):
    done = run_script(EXECUTORLIB, SALLOC_2)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    spread, one_node = done.stdout.strip().splitlines()
    assert spread == "[(0, 'node1'), (1, 'node2')]"
    assert one_node == "True"


POOL_SPAN = (
    WAIT_FOR
    + """
def ranks():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), os.environ["SLURMD_NODENAME"]

with Executor(backend="slurm", block_allocation=True, max_cores=8, cores_per_worker=6) as exe:
    first = exe.submit(ranks).result(timeout=120)
    again = exe.submit(ranks).result(timeout=120)
    print([w["node"] for w in exe.info["workers"]])
print(sorted(first))
print(sorted(again))
"""
)


@pytest.mark.timeout(240)
def test_a_pool_worker_larger_than_any_node_spans_both_as_a_call_that_size_does(slurm, run_script):
    done = run_script(POOL_SPAN, SALLOC_2)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    workers, first, again = done.stdout.strip().splitlines()
    # One worker of 6 ranks: 4 on the first node, 2 on the next, as a
    # call of 6 cores gets, not 6 packed on node1 under its agent.
    assert workers == "['node1+node2']"
    expected = [(rank, "node1") for rank in range(4)] + [(4, "node2"), (5, "node2")]
    assert eval(first) == expected, first
    assert eval(again) == expected, "the same long-lived worker ran both calls"
