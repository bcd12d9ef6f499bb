"""Node agents inside a Flux instance (where `flux` is on PATH; see
test_flux.py): one job, started once, runs an agent on each of the
instance's nodes, and each call's worker is a fresh process forked by its
node's agent; `launcher="step"` keeps one flux job per worker. With `flux
start -s 2` the instance has two brokers ("nodes") on this one host, told
apart by rank (`host#0`, `host#1`). Each test runs a script inside `flux
start`, as a user's job would."""

import shutil
import socket
import subprocess

import pytest
from together import GATHER

# `where`: the pid and Flux job of a call that ran at the same time as
# `n - 1` others (`together`).
TOGETHER = (
    GATHER
    + """
def where(me, n):
    gather(me, n)
    return os.getpid(), os.environ.get("FLUX_JOB_ID")

def active_jobs():
    # A job whose `flux run` has exited can still be in its cleanup a moment.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = subprocess.run(["flux", "jobs", "--no-header", "--format={name}"],
                                capture_output=True, text=True, check=True).stdout.split()
        if not active:
            break
        time.sleep(0.1)
    return active

def job_names():
    every = subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={name}"],
                           capture_output=True, text=True, check=True).stdout
    return sorted(every.split())
"""
)


@pytest.fixture
def flux():
    if shutil.which("flux") is None:
        pytest.skip("Flux is not installed: flux-core is in no registry this machine reaches")


def lines(done):
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(240)
def test_calls_are_fresh_processes_of_the_agents_job_and_steps_are_jobs_of_their_own(
    flux, run_script
):
    done = run_script(
        TOGETHER
        + """
with Executor(backend="flux") as exe:
    print(exe.info["launcher"])
    places = [f.result(timeout=120) for f in [exe.submit(where, i, 2) for i in range(2)]]
    print(len({pid for pid, _ in places}))
    agents = subprocess.run(["flux", "jobs", "--no-header", "--name=pmp-agent",
                             "--format={id.f58}"], capture_output=True, text=True).stdout
    print(sorted({job for _, job in places}) == [agents.strip()])
print(job_names(), active_jobs())
for gate in pathlib.Path(".").glob("here-*"):
    gate.unlink()
with Executor(backend="flux", launcher="step") as exe:
    places = [f.result(timeout=120) for f in [exe.submit(where, i, 2) for i in range(2)]]
    print(len({job for _, job in places}))
""",
        ("flux", "start"),
        timeout=220,
    )
    launcher, pids, one_job, names, step_jobs = lines(done)
    assert launcher == "agent"
    assert pids == "2", "each call is a fresh process"
    # Every call ran in the agents' job: no job of its own.
    assert one_job == "True", done.stdout
    # One job for the agents, none per call, and it ends with the executor.
    assert names == "['pmp-agent'] []", names
    assert step_jobs == "2", "launcher='step': a flux job per worker"


@pytest.mark.timeout(240)
def test_calls_spread_over_both_brokers_of_one_host_told_apart_by_rank(flux, run_script):
    done = run_script(
        TOGETHER
        + """
# max_cores: the instance's four cores (its default is this machine's).
with Executor(backend="flux", max_cores=4) as exe:
    futures = [exe.submit(where, i, 4) for i in range(4)]
    places = [f.result(timeout=120) for f in futures]
    print(sorted({f.place[2] for f in futures}))
    print(len({job for _, job in places}))
    # The agents' own variables are not their workers'.
    print(exe.submit(lambda: "PMP_NODE_NAMES" in os.environ).result(timeout=120))
""",
        ("flux", "start", "-s", "2"),
        timeout=220,
    )
    nodes, jobs, leaked = lines(done)
    host = socket.gethostname()
    # 2 cores a broker: four calls at once need both.
    assert nodes == str([f"{host}#0", f"{host}#1"]), nodes
    assert jobs == "1", "both agents are tasks of one job"
    assert leaked == "False"


@pytest.mark.timeout(240)
def test_a_call_with_gpus_is_a_job_of_its_own_on_named_nodes(flux, run_script, tmp_path):
    # The instance's resources as configured, not probed (this machine has
    # no GPU): two nodes fake1 and fake2 of four cores and two GPUs, both
    # brokers on this host. Names that do not repeat are kept as they are.
    config = tmp_path / "config"
    config.mkdir()
    encoded = subprocess.run(
        ["flux", "R", "encode", "-r", "0-1", "-c", "0-3", "-g", "0-1", "-H", "fake[1-2]"],
        capture_output=True,
        text=True,
        check=True,
    )
    (config / "R.json").write_text(encoded.stdout)
    (config / "resource.toml").write_text(
        f'[resource]\npath = "{config / "R.json"}"\nnoverify = true\n'
    )
    done = run_script(
        TOGETHER
        + """
def devices():
    return os.environ.get("FLUX_JOB_ID"), os.environ.get("CUDA_VISIBLE_DEVICES")

with Executor(backend="flux", max_cores=8) as exe:
    print(exe.info["gpu_count"])
    futures = [exe.submit(where, i, 6) for i in range(6)]
    places = [f.result(timeout=120) for f in futures]
    print(sorted({f.place[2] for f in futures}), len({job for _, job in places}))
    agents = places[0][1]
    job, visible = exe.submit(devices, resource_dict={"gpus_per_core": 1}).result(timeout=120)
    print(job != agents, visible)
""",
        ("flux", "start", "-s", "2", f"--config-path={config}"),
        timeout=220,
    )
    gpus, nodes, gpu_call = lines(done)
    assert gpus == "4"
    assert nodes == "['fake1', 'fake2'] 1", "six calls at once need both nodes"
    # Flux picks the call's GPU: its own job, not the agents'.
    assert gpu_call == "True 0", gpu_call


@pytest.mark.timeout(240)
def test_num_nodes_is_a_job_of_its_own_over_exactly_that_many_brokers(flux, mpi, run_script):
    done = run_script(
        """
import os, subprocess
from pmp import FluxJobExecutor

def ranks():
    from mpi4py import MPI
    broker = subprocess.run(["flux", "getattr", "rank"], capture_output=True, text=True)
    return MPI.COMM_WORLD.Get_rank(), broker.stdout.strip(), os.environ["FLUX_JOB_ID"]

def alone():
    return os.environ["FLUX_JOB_ID"]

with FluxJobExecutor(
    max_cores=4, resource_dict={"cores": 2, "num_nodes": 2}, pmi_mode="simple"
) as exe:
    spread = exe.submit(ranks)
    print(sorted((rank, broker) for rank, broker, _ in spread.result(timeout=120)))
    print(spread.place[2].count("+"), len({job for _, _, job in spread.result()}))
    jobs = exe.submit(alone, resource_dict={"cores": 1, "num_nodes": 1, "exclusive": True})
    print(jobs.result(timeout=120) != spread.result()[0][2])
    try:
        exe.submit(alone, resource_dict={"cores": 3, "num_nodes": 3})
    except ValueError as refused:
        print(refused)
""",
        ("flux", "start", "-s", "2"),
        timeout=220,
    )
    spread, named, own_job, refused = lines(done)
    # One rank on each broker ("node"), in one job of its own.
    assert spread == "[(0, '0'), (1, '1')]", spread
    assert named == "1 1", "the Future names both nodes; one job"
    assert own_job == "True"
    assert refused == (
        "resource_dict key 'num_nodes': num_nodes=3 is more than the allocation's 2 nodes; "
        "ask for at most 2"
    )


@pytest.mark.timeout(240)
def test_with_a_job_per_call_flux_itself_gives_an_exclusive_call_its_nodes_whole(
    flux, mpi, run_script
):
    done = run_script(
        """
import os, subprocess
from pmp import Executor

def job():
    return os.environ["FLUX_JOB_ID"]

with Executor(backend="flux", launcher="step", max_cores=4) as exe:
    for resources in ({"cores": 2, "num_nodes": 2}, {"cores": 2, "num_nodes": 2, "exclusive": True}):
        resources["command_line_argument_lst"] = ["-o", "pmi=simple"]
        ran = exe.submit(job, resource_dict=resources).result(timeout=120)
        shown = subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={nnodes} {ncores}",
                                ran[0]], capture_output=True, text=True, check=True)
        print(shown.stdout.strip())
""",
        ("flux", "start", "-s", "2"),
        timeout=220,
    )
    # Two brokers of two cores: a core on each, or with exclusive all four.
    assert lines(done) == ["2 2", "2 4"]
