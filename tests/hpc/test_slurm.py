"""The slurm backend against a real Slurm (slurmctld and two slurmd on
loopback, 4 CPUs and 2 fake GPUs each): each test runs a script inside
`salloc`, as a user's batch job would."""

import pathlib
import textwrap

import pytest

TESTS = pathlib.Path(__file__).resolve().parents[1]
# Workers import tests/gates.py from the client's sys.path.
WITH_GATES = {"PYTHONPATH": str(TESTS)}

# Two tasks that each announce themselves and wait for the other (a gate file
# each, see tests/gates.py): both return only if both ran at the same time,
# whatever the speed of the machine; one that ran alone fails with
# TimeoutError instead.
MEET = """
import os, pathlib
from gates import wait_for_file

def meet(me, other):
    pathlib.Path(me).touch()
    wait_for_file(other, timeout=60)
    return os.environ.get("CUDA_VISIBLE_DEVICES")

def device():
    return os.environ.get("CUDA_VISIBLE_DEVICES")

def meeting(exe, **submit):
    a, b = os.path.abspath("a-running"), os.path.abspath("b-running")
    futures = [exe.submit(meet, a, b, **submit), exe.submit(meet, b, a, **submit)]
    return [f.result(timeout=120) for f in futures]
"""


def with_meet(body):
    return MEET + textwrap.dedent(body)


SEED_MPI = """
from pmp import Executor

def calc(i):
    from mpi4py import MPI
    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank

with Executor(max_cores=2, cores_per_worker=2) as exe:
    print(exe.info["backend"])
    fs = exe.submit(calc, 3)
    print(fs.result())
"""

SALLOC = ("salloc", "-Q", "-n", "4", "--gres=gpu:2", "--time=5")
SALLOC_NO_GPUS = ("salloc", "-Q", "-n", "4", "--time=5")


def lines(done):
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(180)
def test_the_seed_mpi_example_under_srun(slurm, run_script):
    assert lines(run_script(SEED_MPI, SALLOC)) == ["slurm", "[(3, 2, 0), (3, 2, 1)]"]


@pytest.mark.timeout(180)
def test_the_seed_slurm_example(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        with Executor(max_cores=1, backend="slurm") as exe:
            future = exe.submit(sum, [1,1])
            print(future.result())
        """,
        SALLOC,
    )
    assert lines(done) == ["2"]


@pytest.mark.timeout(180)
def test_block_allocation_with_two_cores_per_worker_runs_each_task_on_two_ranks(slurm, run_script):
    done = run_script(
        """
        import os
        from pmp import Executor

        def calc(i):
            from mpi4py import MPI
            return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

        with Executor(max_cores=4, cores_per_worker=2, block_allocation=True) as exe:
            print(len(exe.info["workers"]))
            print(sorted(f.result() for f in [exe.submit(calc, i) for i in range(4)]))
        """,
        SALLOC,
    )
    out = lines(done)
    assert out[0] == "2"
    assert out[1] == str([[(i, 2, 0), (i, 2, 1)] for i in range(4)])


@pytest.mark.timeout(180)
def test_two_workers_with_one_gpu_each_get_distinct_devices(slurm, run_script):
    done = run_script(
        with_meet(
            """
        from pmp import Executor

        with Executor(max_workers=2, gpus_per_worker=1, block_allocation=True) as exe:
            print(sorted(meeting(exe)))
        """
        ),
        SALLOC,
        env=WITH_GATES,
    )
    assert lines(done) == ["['0', '1']"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("allocation", [SALLOC, SALLOC_NO_GPUS], ids=["gpu-job", "no-gres-job"])
@pytest.mark.parametrize("block", [True, False], ids=["block-allocation", "per-call"])
def test_workers_without_gpus_run_side_by_side_and_get_no_gpu(slurm, run_script, allocation, block):
    # Without --gres=none a step inherits all of the job's GPUs and waits for
    # all of them: the second worker would wait for the first to end.
    done = run_script(
        with_meet(
            f"""
        from pmp import Executor

        with Executor(max_workers=2, block_allocation={block}) as exe:
            print(meeting(exe))
        """
        ),
        allocation,
        env=WITH_GATES,
    )
    # A node agent cannot take the node's GPUs from a worker's cgroup as
    # srun's --gres=none does: it lists none for it (CUDA then sees none).
    expected = "['', '']" if allocation == SALLOC else "[None, None]"
    assert lines(done) == [expected]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("executor", "submit"),
    [
        ("max_cores=2, gpus_per_worker=1", {}),
        ("max_cores=2", {"resource_dict": {"gpus_per_core": 1}}),
    ],
    ids=["gpus_per_worker", "resource_dict"],
)
def test_per_call_gpus_under_srun_run_on_distinct_devices_and_shut_down(
    slurm, run_script, executor, submit
):
    # Without block allocation each call is an `srun --gpus-per-task=1` step;
    # the scheduler counts the job's GPUs (srun picks which), so calls wait
    # for a free one rather than forever, and shutdown returns.
    done = run_script(
        with_meet(
            f"""
        from pmp import Executor

        exe = Executor({executor})
        print(exe.info["gpu_count"], exe.info["gpus"])
        print(sorted(meeting(exe, **{submit!r})))
        # More calls than GPUs: each waits for a free one and gets one device.
        calls = [exe.submit(device, **{submit!r}) for _ in range(5)]
        print(all(f.result(timeout=120) in ("0", "1") for f in calls))
        exe.shutdown(wait=True)
        print("shut down")
        """
        ),
        SALLOC,
        env=WITH_GATES,
    )
    assert lines(done) == ["2 []", "['0', '1']", "True", "shut down"]


@pytest.mark.timeout(180)
def test_gpus_beyond_the_allocation_are_refused_naming_what_asked_for_them(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        for make in (lambda: Executor(max_cores=4, gpus_per_worker=3),
                     lambda: Executor(max_workers=3, gpus_per_worker=1, block_allocation=True)):
            try:
                make()
            except ValueError as error:
                print(error)
        with Executor(max_cores=4) as exe:
            try:
                exe.submit(sum, [1], resource_dict={"gpus_per_core": 3})
            except ValueError as error:
                print(error)
            print(exe.submit(sum, [1, 1]).result(timeout=60))
        """,
        SALLOC,
    )
    assert lines(done) == [
        "gpus_per_worker=3: 3 GPU(s) requested but 2 in the slurm allocation",
        "gpus_per_worker=1 for each of 3 workers: 3 GPU(s) requested but 2 in the slurm allocation",
        "resource_dict key 'gpus_per_core': 3 GPU(s) requested but 2 in the slurm allocation",
        "2",
    ]


@pytest.mark.timeout(180)
def test_a_per_call_hostname_localhost_that_differs_is_refused(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        with Executor(max_cores=1) as exe:
            try:
                exe.submit(sum, [1], resource_dict={"hostname_localhost": True})
            except ValueError as error:
                print(str(error).split(":")[0])
            same = exe.submit(sum, [1, 1], resource_dict={"hostname_localhost": False})
            print(same.result(timeout=60))
        """,
        SALLOC,
    )
    assert lines(done) == ["resource_dict key 'hostname_localhost'=True", "2"]


@pytest.mark.timeout(180)
def test_threads_per_core_reaches_srun_and_the_thread_variables(slurm, run_script):
    done = run_script(
        """
        import os
        from pmp import Executor

        def threads():
            return os.environ["SLURM_CPUS_PER_TASK"], os.environ["OMP_NUM_THREADS"]

        with Executor(max_cores=4, threads_per_core=2) as exe:
            print(exe.submit(threads).result())
        """,
        SALLOC,
    )
    assert lines(done) == ["('2', '2')"]


@pytest.mark.timeout(180)
def test_command_line_arguments_reach_srun(slurm, run_script):
    done = run_script(
        """
        import subprocess, time
        from pmp import Executor

        def nap():
            time.sleep(3)

        args = ["--job-name=pmp-cli-test"]
        with Executor(max_cores=1, command_line_argument_lst=args) as exe:
            future = exe.submit(nap)
            time.sleep(1.5)
            print(subprocess.run(["squeue", "-s", "-h", "-o", "%j"], capture_output=True,
                                 text=True).stdout.split())
            future.result()
        """,
        SALLOC,
    )
    assert "pmp-cli-test" in lines(done)[0]


@pytest.mark.timeout(180)
def test_a_one_rank_call_in_a_two_node_allocation_prints_no_srun_warning(slurm, run_script):
    # srun spreads a step over all of the allocation's nodes unless told how
    # many it may use, and says so in the user's output ("can't run 1
    # processes on 2 nodes, setting nnodes to 1"). Two ranks still spread.
    done = run_script(
        """
        import socket
        from pmp import Executor

        def where():
            return socket.gethostname()

        def ranks():
            from mpi4py import MPI
            return MPI.COMM_WORLD.Get_size()

        with Executor(max_cores=8) as exe:
            print(exe.submit(where).result())
            print(exe.submit(ranks, resource_dict={"cores": 2}).result())
        """,
        ("salloc", "-Q", "-N", "2", "-n", "8", "--time=5"),
    )
    assert done.returncode == 0, done.stderr
    assert "can't run" not in done.stdout + done.stderr, done.stderr
    assert lines(done)[1] == "[2, 2]"


@pytest.mark.timeout(180)
def test_oversubscribe_reaches_srun(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        def calc(i):
            from mpi4py import MPI
            return MPI.COMM_WORLD.Get_size()

        with Executor(max_cores=4, cores_per_worker=4, oversubscribe=True) as exe:
            print(exe.submit(calc, 1).result())
        """,
        ("salloc", "-Q", "-n", "4", "--time=5"),
    )
    assert lines(done) == ["[4, 4, 4, 4]"]


@pytest.mark.timeout(180)
def test_a_step_cancelled_with_scancel_fails_only_its_task(slurm, run_script):
    done = run_script(
        """
        import os, pathlib, subprocess, time
        from pmp import Executor, WorkerDiedError

        def nap(seconds, report=None):
            if report:
                pathlib.Path(report).write_text(os.environ["SLURM_STEP_ID"])
            time.sleep(seconds)
            return "rested"

        with Executor(max_workers=2, block_allocation=True, launcher="step") as exe:
            victim = exe.submit(nap, 60, "step.txt")
            while not pathlib.Path("step.txt").exists():
                time.sleep(0.1)
            step = os.environ["SLURM_JOB_ID"] + "." + pathlib.Path("step.txt").read_text()
            subprocess.run(["scancel", step], check=True)
            try:
                victim.result(timeout=60)
                print("no error")
            except WorkerDiedError:
                print("WorkerDiedError")
            print([f.result(timeout=60) for f in [exe.submit(nap, 0) for _ in range(3)]])
        """,
        SALLOC,
    )
    assert lines(done) == ["WorkerDiedError", "['rested', 'rested', 'rested']"]


@pytest.mark.timeout(180)
def test_killing_the_client_cancels_its_steps(slurm, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "client.py"
    script.write_text(
        "import time\n"
        "from pmp import Executor\n"
        "def nap():\n"
        "    time.sleep(300)\n"
        "exe = Executor(max_workers=2, block_allocation=True,\n"
        "               command_line_argument_lst=['--job-name=pmp-kill-test'])\n"
        "futures = [exe.submit(nap) for _ in range(2)]\n"
        "print('running', flush=True)\n"
        "time.sleep(300)\n"
    )
    client = subprocess.Popen(
        ["salloc", "-Q", "-n", "4", "--time=5", sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )

    def steps():
        listing = subprocess.run(
            ["squeue", "-s", "-h", "-o", "%j"], capture_output=True, text=True, check=False
        )
        return listing.stdout.split().count("pmp-kill-test")

    try:
        assert client.stdout.readline().strip() == "running"
        deadline = time.monotonic() + 30
        while steps() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert steps() == 2
        # SIGKILL the Python client only (salloc keeps the allocation).
        python = subprocess.run(
            ["pgrep", "-f", "-n", f"{sys.executable} {script}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        os.kill(int(python), signal.SIGKILL)
        deadline = time.monotonic() + 15
        while steps() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert steps() == 0, "worker steps outlived their client by 15 s"
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()


@pytest.mark.timeout(180)
def test_a_failing_rank_under_srun_fails_the_future_and_not_the_worker(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        def fail_on_1(i):
            from mpi4py import MPI
            if MPI.COMM_WORLD.Get_rank() == 1:
                raise ValueError("rank one refuses")
            return i

        with Executor(max_cores=4, cores_per_worker=2, block_allocation=True) as exe:
            try:
                exe.submit(fail_on_1, 1).result(timeout=60)
            except ValueError as error:
                print(error, error.__notes__)
            print(exe.submit(sum, [1, 2]).result(timeout=60))
        """,
        SALLOC,
    )
    assert lines(done) == ["rank one refuses ['(raised on MPI rank 1 of 2)']", "[3, 3]"]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"SLURM_GPUS": "gpu:a100:6", "SLURM_GPUS_ON_NODE": "2", "SLURM_JOB_NUM_NODES": "3"}, 6),
        ({"SLURM_GPUS_ON_NODE": "2", "SLURM_JOB_NUM_NODES": "3"}, 6),
        ({"SLURM_JOB_GPUS": "0,1,2,3", "SLURM_NNODES": "2"}, 8),
        ({"SLURM_GPUS_ON_NODE": "4"}, 4),
    ],
)
def test_the_gpu_count_of_an_allocation_covers_all_its_nodes(monkeypatch, variables, expected):
    import types

    from pmp.client import backends

    for name in ("SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SLURM_NNODES", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert backends.allocation_gpus(types.SimpleNamespace(name="slurm")) == expected


@pytest.mark.timeout(180)
def test_workers_stopped_before_they_connect_end_their_steps_quietly(slurm, run_script):
    done = run_script(
        """
        import subprocess, time
        from pmp import Executor

        def steps():
            listing = subprocess.run(["squeue", "-s", "-h", "-o", "%j"],
                                     capture_output=True, text=True).stdout.split()
            return listing.count("pmp-early-stop")

        for _ in range(5):
            exe = Executor(max_workers=2, block_allocation=True,
                           command_line_argument_lst=["--job-name=pmp-early-stop"])
            # One worker answers; the other is often still starting at shutdown.
            assert exe.submit(sum, [1, 2]).result(timeout=60) == 3
            exe.shutdown()
        deadline = time.monotonic() + 60
        while steps() and time.monotonic() < deadline:
            time.sleep(0.2)
        print("steps left:", steps())
        """,
        SALLOC,
    )
    assert lines(done) == ["steps left: 0"]
    # srun's reports of the stop we asked for ("STEP ... CANCELLED") are not
    # the user's business.
    assert done.stderr == ""
