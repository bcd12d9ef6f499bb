"""A call larger than any node of the allocation, on the real Slurm with two
nodes of 4 CPUs: under node agents it becomes an srun step of its own
spread over both nodes, as srun ran it before agents, while the calls that
fit one node keep running under the agents beside it."""

import pytest

SALLOC_2 = ("salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--time=5")

SPAN = """
import os, pathlib, time
from pmp import Executor

def wait_for(path):
    deadline = time.time() + 60
    while not pathlib.Path(path).exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)

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
