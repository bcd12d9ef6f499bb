"""memory_max under node agents on the real Slurm with two nodes (node1,
node2): `salloc --mem=1000` gives the job 1000 MB on each node
(SLURM_MEM_PER_NODE), which each agent says in its Hello; the scheduler
keeps each call's memory_max of its node's while it runs, places a call
where it is free, and refuses a call that no node has the memory for.
A call across nodes asks srun for it on each (`--mem`), as a batch job."""

import pytest
from together import GATHER

SALLOC_2 = (
    "salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--gres=gpu:2", "--mem=1000", "--time=5",
)  # fmt: skip

WHERE = (
    GATHER
    + """
def where(me, n):
    gather(me, n)
    return os.environ.get("SLURMD_NODENAME"), os.environ.get("SLURM_MEM_PER_NODE")
"""
)


def lines(done):
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(240)
def test_two_calls_that_together_need_more_than_a_nodes_memory_run_on_both_nodes(slurm, run_script):
    done = run_script(
        WHERE
        + """
with Executor(backend="slurm") as exe:
    print(exe.info["launcher"])
    # 600 MB each of 1000 a node: one per node, though one node's 4 CPUs
    # would hold both (calls fill one node first).
    futures = [exe.submit(where, i, 2, resource_dict={"memory_max": 600 / 1024}) for i in range(2)]
    print(sorted(node for node, _ in (f.result(timeout=120) for f in futures)))
    # Without memory_max, the same two calls share a node (gather counts
    # the first two's gate files too: 4 in all).
    futures = [exe.submit(where, i, 4) for i in range(2, 4)]
    print(len({node for node, _ in (f.result(timeout=120) for f in futures)}))
""",
        SALLOC_2,
    )
    launcher, nodes, shared = lines(done)
    assert launcher == "agent"
    assert nodes == "['node1', 'node2']", "600 MB twice is more than one node's 1000"
    assert shared == "1", "two one-CPU calls fill one node first"


@pytest.mark.timeout(240)
def test_memory_max_above_a_nodes_share_is_refused_naming_the_key_and_the_nodes_memory(
    slurm, run_script
):
    done = run_script(
        """
from pmp import Executor, SlurmJobExecutor

with Executor(backend="slurm") as exe:
    try:
        exe.submit(sum, [1], resource_dict={"memory_max": 2}).result(timeout=120)
    except ValueError as error:
        print(error)
    print(exe.submit(sum, [1, 2], resource_dict={"memory_max": 0.5}).result(timeout=120))
with SlurmJobExecutor(resource_dict={"memory_max": 0.5}) as exe:
    print(exe.submit(sum, [1, 2]).result(timeout=120))
""",
        SALLOC_2,
    )
    refused, fits, front = lines(done)
    assert "resource_dict key 'memory_max' asks for 2 GB on one node" in refused, refused
    assert "more than the 0.977 GB of the allocation's largest node" in refused, refused
    assert (fits, front) == ("3", "3")


@pytest.mark.timeout(240)
def test_a_call_across_nodes_with_memory_max_runs_on_both_as_a_step_of_its_own(slurm, run_script):
    # The test Slurm counts CPUs only (CR_CPU): the step's --mem is not
    # visible in it; scheduler/src/backend/slurm.rs's test checks srun's
    # arguments. Here: the scheduler keeps it on each node and runs it.
    done = run_script(
        """
import os
from pmp import Executor

def where():
    from mpi4py import MPI
    return MPI.COMM_WORLD.allgather(os.environ.get("SLURMD_NODENAME"))

with Executor(backend="slurm") as exe:
    spread = {"cores": 2, "num_nodes": 2, "memory_max": 0.5}
    future = exe.submit(where, resource_dict=spread)
    print(sorted(future.result(timeout=120)[0]))
    try:
        too_much = {"cores": 2, "num_nodes": 2, "memory_max": 1}
        exe.submit(where, resource_dict=too_much).result(timeout=120)
    except ValueError as error:
        print(error)
""",
        SALLOC_2,
    )
    ranks, refused = lines(done)
    assert eval(ranks) == ["node1", "node2"]
    assert "resource_dict key 'memory_max' asks for 1 GB on one node" in refused, refused
