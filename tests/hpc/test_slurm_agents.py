"""Node agents on the real Slurm with two nodes (node1, node2: 4 CPUs and 2
fake GPUs each): inside `salloc -N 2`, one agent per node starts each
call's worker as a fork on its node; `launcher="step"` keeps one srun step
per worker. Each test runs a script inside salloc, as a user's job would."""

import pytest
from together import GATHER

SALLOC_2 = ("salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--gres=gpu:2", "--time=5")

# `where`: the node, pid, step and GPUs of a call that ran at the same time
# as `n - 1` others (`together`).
TOGETHER = (
    GATHER
    + """
def where(me, n):
    gather(me, n)
    return (
        os.environ.get("SLURMD_NODENAME"),
        os.getpid(),
        os.environ.get("SLURM_STEP_ID"),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
"""
)


def lines(done):
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(240)
def test_calls_spread_over_both_nodes_each_a_process_of_its_own_in_the_agents_step(
    slurm, run_script
):
    done = run_script(
        TOGETHER
        + """
with Executor(backend="slurm") as exe:
    print(exe.info["launcher"])
    futures = [exe.submit(where, i, 8) for i in range(8)]
    places = [f.result(timeout=120) for f in futures]
nodes = sorted({node for node, _, _, _ in places})
print(nodes)
# What the status display and %pmp status show: the node each call ran on.
print(all(f.place[2] == node for f, (node, _, _, _) in zip(futures, places)))
print(len({pid for _, pid, _, _ in places}))
print(sorted({step for _, _, step, _ in places}))
""",
        SALLOC_2,
    )
    launcher, nodes, shown, pids, steps = lines(done)
    assert launcher == "agent"
    assert nodes == "['node1', 'node2']", "4 CPUs a node: eight calls at once need both"
    assert shown == "True", "each Future names its call's node"
    assert pids == "8", "each call is a fresh process"
    # One step holds every agent; no call made a step of its own.
    assert len(eval(steps)) == 1, steps


@pytest.mark.timeout(240)
def test_the_step_launcher_still_makes_a_step_per_call(slurm, run_script):
    done = run_script(
        TOGETHER
        + """
with Executor(backend="slurm", launcher="step") as exe:
    print(exe.info["launcher"])
    futures = [exe.submit(where, i, 2) for i in range(2)]
    places = [f.result(timeout=120) for f in futures]
print(len({step for _, _, step, _ in places}))
""",
        SALLOC_2,
    )
    assert lines(done) == ["step", "2"]


@pytest.mark.timeout(240)
def test_a_two_rank_mpi_call_runs_both_ranks_on_one_node_under_its_agent(slurm, run_script):
    done = run_script(
        """
import os
from pmp import Executor

def ranks():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size(), os.environ.get("SLURMD_NODENAME"), os.environ.get("SLURM_STEP_ID")

with Executor(backend="slurm") as exe:
    print(exe.submit(ranks, resource_dict={"cores": 2}).result(timeout=120))
""",
        SALLOC_2,
    )
    (result,) = lines(done)
    (r0, size0, node0, step0), (r1, size1, node1, step1) = eval(result)
    assert (r0, r1, size0, size1) == (0, 1, 2, 2)
    assert node0 == node1, "both ranks on the agent's node"
    assert step0 == step1, "the ranks run in the agents' step, not a step of their own"


@pytest.mark.timeout(240)
def test_gpus_are_distinct_per_call_on_each_node(slurm, run_script):
    done = run_script(
        TOGETHER
        + """
with Executor(backend="slurm") as exe:
    futures = [exe.submit(where, i, 4, resource_dict={"gpus_per_core": 1}) for i in range(4)]
    places = [f.result(timeout=120) for f in futures]
    nodes = exe.info["nodes"]
print(sorted((node, gpu) for node, _, _, gpu in places))
print(sorted((name, n["cpus"], n["gpus"], n["lost"]) for name, n in nodes.items()))
print(sorted((name, n["memory_mb"]) for name, n in nodes.items()))
""",
        SALLOC_2,
    )
    pairs, nodes, memory = lines(done)
    assert eval(pairs) == [("node1", "0"), ("node1", "1"), ("node2", "0"), ("node2", "1")]
    # What the scheduler placed them by: each node's agent said its shape.
    assert eval(nodes) == [("node1", 4, 2, False), ("node2", 4, 2, False)]
    # The memory Slurm gives the job on each node (or the node's, as its
    # agent read it): known, so that memory_max is kept there.
    assert all(isinstance(mb, int) and mb > 0 for _, mb in eval(memory)), memory


@pytest.mark.timeout(240)
def test_a_large_argument_shared_by_100_calls_crosses_to_each_node_once(slurm, run_script):
    # The first eight calls wait for each other (4 CPUs a node): both nodes
    # get the argument, whatever the order the rest run in.
    done = run_script(
        TOGETHER
        + """
import numpy as np

def total(array, me):
    if me < 8:
        where(me, 8)
    return float(array.sum()) + me

array = np.ones(45_000_000 // 8)
with Executor(backend="slurm") as exe:
    futures = [exe.submit(total, array, i) for i in range(100)]
    print([f.result(timeout=180) for f in futures] == [array.size + i for i in range(100)])
    print(sorted((node, kept["kept"]) for node, kept in exe.info["agents"].items()))
    print(min(kept["kept_bytes"] for kept in exe.info["agents"].values()) >= array.nbytes)
""",
        SALLOC_2,
    )
    right, kept, sizes = lines(done)
    assert right == "True"
    # Not once per call: once per node, each agent keeping it for the rest.
    assert eval(kept) == [("node1", 1), ("node2", 1)]
    assert sizes == "True"


# Where a process of this job runs what: read from /proc (every test node is
# this host), so a test can find a node's agent or see that none is left.
PROCESSES = """
import os

def processes_of_this_job(variable, value=None):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(
                    item.split(b"=", 1) for item in f.read().split(b"\\0") if b"=" in item
                )
        except OSError:
            continue
        job = env.get(b"SLURM_JOB_ID", b"").decode()
        if job != os.environ["SLURM_JOB_ID"] or variable.encode() not in env:
            continue
        if value is None or env[variable.encode()].decode() == value:
            found.append((int(pid), env.get(b"SLURMD_NODENAME", b"").decode()))
    return found

def agents():
    # On a node (srun, on the client's side, has the variable too).
    return [
        (pid, node) for pid, node in processes_of_this_job("PMP_AGENT")
        if node and os.path.exists(f"/proc/{pid}")
    ]

# What is still there of the executor: its workers' processes, agents on
# a node, and pmp's steps in squeue.
def left_of(workers):
    import subprocess
    steps = subprocess.run(
        ["squeue", "-h", "-s", "-j", os.environ["SLURM_JOB_ID"], "-o", "%j"],
        capture_output=True, text=True,
    ).stdout.split()
    alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    return alive, agents(), [s for s in steps if s.startswith("pmp")]
"""


@pytest.mark.timeout(240)
def test_an_agent_killed_fails_only_its_nodes_calls_naming_the_node(slurm, run_script):
    done = run_script(
        PROCESSES
        + """
import pathlib, signal, time
from pmp import Executor

def hold(me):
    pathlib.Path(f"pid-{me}").write_text(str(os.getpid()))
    while not pathlib.Path("release").exists():
        time.sleep(0.05)
    return os.environ["SLURMD_NODENAME"]

def node():
    return os.environ["SLURMD_NODENAME"]

def wait_for(path):
    deadline = time.time() + 60
    while not pathlib.Path(path).exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)

whole_node = {"threads_per_core": 4}
with Executor(backend="slurm") as exe:
    a = exe.submit(hold, "a", resource_dict=whole_node)
    wait_for("pid-a")
    b = exe.submit(hold, "b", resource_dict=whole_node)
    wait_for("pid-b")
    worker_b = int(pathlib.Path("pid-b").read_text())
    (b_node,) = [n for pid, n in processes_of_this_job("SLURMD_NODENAME") if pid == worker_b]
    (agent,) = [pid for pid, n in agents() if n == b_node]
    os.kill(agent, signal.SIGKILL)
    error = b.exception(timeout=60)
    print(b_node in str(error), "agent" in str(error))
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{worker_b}") and time.time() < deadline:
        time.sleep(0.1)
    print("worker gone", not os.path.exists(f"/proc/{worker_b}"))
    later = exe.submit(node)
    pathlib.Path("release").touch()
    print(a.result(timeout=60) != b_node, later.result(timeout=60) != b_node)
""",
        SALLOC_2,
        env={"PMP_HEARTBEAT_TIMEOUT": "3"},
    )
    assert lines(done) == ["True True", "worker gone True", "True True"], done.stderr


@pytest.mark.timeout(240)
def test_a_client_killed_leaves_no_agent_worker_or_step_on_any_node(slurm, tmp_path):
    import subprocess
    import sys

    (tmp_path / "client.py").write_text(
        """
import os, pathlib, signal, time
from pmp import Executor

def hold(me):
    pathlib.Path(f"pid-{me}").write_text(str(os.getpid()))
    time.sleep(600)

exe = Executor(backend="slurm")
futures = [exe.submit(hold, i, resource_dict={"threads_per_core": 4}) for i in range(2)]
deadline = time.time() + 60
while len(list(pathlib.Path(".").glob("pid-*"))) < 2:
    assert time.time() < deadline
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""
    )
    (tmp_path / "check.py").write_text(
        PROCESSES
        + """
import pathlib, subprocess, time
workers = [int(p.read_text()) for p in pathlib.Path(".").glob("pid-*")]
print(len(workers))
deadline = time.time() + 60
while any(left_of(workers)) and time.time() < deadline:
    time.sleep(0.2)
print(left_of(workers))
"""
    )
    python = sys.executable
    done = subprocess.run(
        [*SALLOC_2, "bash", "-c", f"{python} client.py; {python} check.py"],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        env={**__import__("os").environ, "PMP_HEARTBEAT_TIMEOUT": "3"},
        check=False,
    )
    assert done.stdout.strip().splitlines() == ["2", "([], [], [])"], done.stderr


@pytest.mark.timeout(240)
def test_shutdown_leaves_no_agent_worker_or_step_on_any_node(slurm, run_script):
    done = run_script(
        PROCESSES
        + """
import subprocess, time
from pmp import Executor

def pid():
    return os.getpid()

with Executor(backend="slurm") as exe:
    workers = [f.result(timeout=120) for f in [exe.submit(pid) for _ in range(4)]]
    print(len(agents()))
# shutdown() returned: what it ended is gone already, or within moments
# (Slurm's own bookkeeping of the step).
deadline = time.time() + 30
while any(left_of(workers)) and time.time() < deadline:
    time.sleep(0.2)
print(left_of(workers))
""",
        SALLOC_2,
        # Longer than the wait above: only shutdown() itself can end them
        # in time, not the agents' heartbeat limit.
        env={"PMP_HEARTBEAT_TIMEOUT": "120"},
    )
    assert lines(done) == ["2", "([], [], [])"], done.stderr
