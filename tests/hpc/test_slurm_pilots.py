"""Pilot jobs from a login node (outside any allocation), on the real Slurm
with two nodes (node1, node2: 4 CPUs and 2 fake GPUs each):
`block_allocation=True` submits as few one-node batch jobs as the nodes
hold the pool in, each running one node agent that joins the executor
when it connects and forks its node's workers."""

import signal
import subprocess
import textwrap

import pytest
from login_node import OUTSIDE, login_node_scripts, printed_lines
from together import GATHER

# `where`: the node, pid and job of a call that ran at the same time as
# `n - 1` others (`together`); `hold` waits for "release".
HEADER = (
    GATHER
    + """
def where(me, n):
    gather(me, n)
    return os.environ["SLURMD_NODENAME"], os.getpid(), os.environ["SLURM_JOB_ID"]

def hold(me):
    pathlib.Path(f"pid-{me}").write_text(str(os.getpid()))
    while not pathlib.Path("release").exists():
        time.sleep(0.05)
    return os.environ["SLURMD_NODENAME"]

def node():
    return os.environ["SLURMD_NODENAME"]

def wait_for(count, pattern):
    deadline = time.time() + 120
    while len(list(pathlib.Path(".").glob(pattern))) < count:
        assert time.time() < deadline, f"{count} {pattern} never appeared"
        time.sleep(0.05)

def jobs_named(name):
    # Every job of the executor, whatever its state: squeue keeps ended
    # ones listed for minutes (MinJobAge).
    shown = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i %N %T"],
                           capture_output=True, text=True).stdout
    return [line.split() for line in shown.splitlines()]
"""
)


@pytest.fixture
def login_node(slurm, tmp_path):
    with login_node_scripts(tmp_path, HEADER, "pmp-pilot-") as run:
        yield run


def lines(done):
    return printed_lines(done, "pmp-pilot-")


@pytest.mark.timeout(240)
def test_a_pool_of_eight_is_two_pilot_jobs_whose_agents_run_four_workers_each(login_node):
    done = login_node(
        """
        with Executor(backend="slurm", max_workers=8, block_allocation=True) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            ran = [f.result(timeout=120) for f in [exe.submit(where, i, 8) for i in range(8)]]
            jobs = jobs_named(name)
        nodes = sorted(n for n, _, _ in ran)
        print(nodes)
        print(len({pid for _, pid, _ in ran}), len({job for _, _, job in ran}), len(jobs))
        # Each node's workers in its own job, the job squeue says runs there.
        print(all([job, n] == j[:2] for n, _, job in ran for j in jobs if j[0] == job))
        """
    )
    assert lines(done) == [
        str(["node1"] * 4 + ["node2"] * 4),
        "8 2 2",
        "True",
    ]


@pytest.mark.timeout(240)
def test_the_seeds_data_handling_example_gives_10_from_a_login_node(login_node):
    done = login_node(
        """
        def calc(i, j, k):
            return i + j + k

        def init_function():
            return {"j": 4, "k": 3, "l": 2}

        # The executor's own sbatch options go on its pilot jobs' sbatch line.
        with Executor(backend="slurm", max_workers=2, block_allocation=True,
                      init_function=init_function,
                      command_line_argument_lst=["--comment=pmp-test"]) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            print(exe.submit(calc, 2, j=5).result(timeout=120))
            (job,) = [j[0] for j in jobs_named(name)]
            shown = subprocess.run(["scontrol", "show", "job", "-o", job],
                                   capture_output=True, text=True).stdout
            print("Comment=pmp-test" in shown)
        """
    )
    assert lines(done) == ["10", "True"]


@pytest.mark.timeout(240)
def test_scancel_of_one_pilot_job_fails_only_its_nodes_calls_naming_job_and_state(login_node):
    done = login_node(
        """
        with Executor(backend="slurm", max_workers=8, block_allocation=True) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            held = [exe.submit(hold, i) for i in range(8)]
            wait_for(8, "pid-*")
            job, cancelled_node, _ = jobs_named(name)[0]
            subprocess.run(["scancel", job], check=True)
            # The cancelled node's calls end (the others wait for "release").
            deadline = time.time() + 60
            while sum(f.done() for f in held) < 4 and time.time() < deadline:
                time.sleep(0.05)
            pathlib.Path("release").touch()
            errors = [f.exception(timeout=60) for f in held]
            failed = [str(e).splitlines()[0] for e in errors if e is not None]
            ran = [f.result() for f, e in zip(held, errors) if e is None]
            later = exe.submit(node).result(timeout=60)
        print(len(failed), len(ran))
        print(all(f"pilot job {job} ended CANCELLED: it was cancelled" in e for e in failed))
        print(all(f"node {cancelled_node} was lost" in e for e in failed))
        print(cancelled_node not in ran, later != cancelled_node)
        """
    )
    assert lines(done) == ["4 4", "True", "True", "True True"]


@pytest.mark.timeout(240)
def test_a_pool_worker_no_node_of_the_partition_holds_is_refused_before_any_job(login_node):
    done = login_node(
        """
        try:
            Executor(backend="slurm", max_workers=2, block_allocation=True,
                     cores_per_worker=2, threads_per_core=3)
        except Exception as error:
            print(type(error).__name__, error)
        """
    )
    (line,) = lines(done)
    assert "a worker asks for 6 CPUs (cores=2 x threads_per_core=3)" in line, line
    assert "at most 4 CPUs and 2 GPUs on a node" in line, line


# What is left of the executor's jobs: any not ended, and any process of
# them (every test node is this host, so /proc shows them all).
LEFT = """
import os, subprocess

def left_of(name):
    shown = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i %T"],
                           capture_output=True, text=True).stdout.split("\\n")
    jobs = dict(line.split() for line in shown if line)
    queued = sorted(job for job, state in jobs.items()
                    if state not in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"))
    processes = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\\0")
        except OSError:
            continue
        if any(item.startswith(b"SLURM_JOB_ID=") and item[13:].decode() in jobs for item in env):
            processes.append(int(pid))
    return len(jobs), queued, processes
"""


@pytest.mark.timeout(240)
def test_a_killed_client_leaves_no_pilot_job_and_no_process(login_node, tmp_path):
    # Three jobs: two run four workers each, the third waits for a node.
    client = subprocess.Popen(
        login_node.script(
            """
            exe = Executor(backend="slurm", max_workers=12, block_allocation=True)
            print(exe._engine.pilot_job_name, flush=True)
            futures = [exe.submit(hold, i) for i in range(12)]
            wait_for(8, "pid-*")
            print("running", flush=True)
            time.sleep(600)
            """
        ),
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**OUTSIDE, "PMP_HEARTBEAT_TIMEOUT": "3"},
    )
    name = client.stdout.readline().strip()
    login_node.names.append(name)
    assert client.stdout.readline().strip() == "running"
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    check = login_node(
        LEFT
        + textwrap.dedent(
            f"""
        print(left_of({name!r})[0])
        deadline = time.time() + 120
        while any(left_of({name!r})[1:]) and time.time() < deadline:
            time.sleep(0.5)
        print(left_of({name!r})[1:])
        """
        )
    )
    assert lines(check) == ["3", "([], [])"]


@pytest.mark.timeout(240)
def test_slurm_cluster_executor_with_a_pool_is_one_pilot_job(login_node):
    # executorlib's class as its users write it.
    done = login_node(
        """
        from pmp import SlurmClusterExecutor

        def calc(i, j, k):
            return i + j + k

        def init_function():
            return {"j": 4, "k": 3, "l": 2}

        resources = {"cores": 1}
        with SlurmClusterExecutor(max_workers=2, block_allocation=True, resource_dict=resources,
                                  init_function=init_function) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            print(exe.submit(calc, 2, j=5).result(timeout=120))
            (job,) = [j[0] for j in jobs_named(name)]
            shown = subprocess.run(["scontrol", "show", "job", "-o", job],
                                   capture_output=True, text=True).stdout
            print("NumNodes=1 " in shown, "NumCPUs=2 " in shown)
        """
    )
    assert lines(done) == ["10", "True True"]
