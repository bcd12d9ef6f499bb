"""The slurm backend against a real single-node Slurm (slurmctld + slurmd on
loopback, 4 CPUs, 2 fake GPUs): each test runs a script inside `salloc`, as a
user's batch job would."""

import pytest

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
        """
        import os, time
        from pmp import Executor

        def device():
            time.sleep(1)  # both workers busy at once
            return os.environ.get("CUDA_VISIBLE_DEVICES")

        with Executor(max_workers=2, gpus_per_worker=1, block_allocation=True) as exe:
            print(sorted(f.result() for f in [exe.submit(device) for _ in range(2)]))
        """,
        SALLOC,
    )
    assert lines(done) == ["['0', '1']"]


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

        with Executor(max_workers=2, block_allocation=True) as exe:
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
