"""The flux backend end to end: the seed's Flux examples inside `flux start`.

Flux (flux-core) cannot be installed on the machines this project's CI runs
on (no registry they reach carries it), so these tests run where `flux` is on
PATH and skip elsewhere; the exact `flux run` command lines are unit-tested in
scheduler/src/backend/flux.rs.
"""

import os
import shutil

import pytest
from batch_stories import CHAIN_AND_CANCEL, CHAIN_AND_CANCEL_OUTPUT

SEED_FLUX_EXAMPLES = """
import flux.job
from pmp import Executor

def calc(*args):
    return sum(*args)

def calc_function(parameter_a, parameter_b):
    return parameter_a + parameter_b

def mpi_calc(i):
    from mpi4py import MPI
    return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

with flux.job.FluxExecutor() as flux_exe:
    with Executor(max_cores=1, executor=flux_exe) as exe:
        print(exe.info["backend"], exe.submit(sum, [1, 1]).result())
    with Executor(max_cores=2, executor=flux_exe) as exe:
        print([f.result() for f in [exe.submit(calc, [2, i]) for i in range(1, 5)]])
        print(list(exe.map(calc, [[2, 1], [2, 2], [2, 3], [2, 4]])))
    with Executor(max_cores=2, executor=flux_exe) as exe:
        future_1 = exe.submit(calc_function, 1, parameter_b=2, resource_dict={"cores": 1})
        future_2 = exe.submit(calc_function, 1, parameter_b=future_1, resource_dict={"cores": 1})
        print(future_2.result())
    with Executor(max_cores=2, cores_per_worker=2, executor=flux_exe) as exe:
        print(exe.submit(mpi_calc, 3).result())
"""


@pytest.fixture
def flux():
    if shutil.which("flux") is None:
        pytest.skip(
            "Flux is not installed: flux-core is in no registry this machine reaches "
            "(command lines are unit-tested in scheduler/src/backend/flux.rs)"
        )


@pytest.mark.timeout(300)
def test_the_seed_flux_examples_inside_flux_start(flux, mpi, run_script):
    done = run_script(SEED_FLUX_EXAMPLES, ("flux", "start"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "flux 2",
        "[3, 4, 5, 6]",
        "[3, 4, 5, 6]",
        "4",
        "[(3, 2, 0), (3, 2, 1)]",
    ]


FAKE_FLUX = """#!/bin/sh
# Answers only what pmp asks when an Executor is made: `flux resource info`
# (and `flux env`, to find flux-job, which it does not answer either), with
# a job per worker: node agents would start a job at once (test_flux_agents.py).
[ "$1 $2" = "resource info" ] && echo "1 Node, 4 Cores, 2 GPUs" && exit 0
exit 1
"""


def test_the_flux_instances_gpus_are_counted_and_bound_what_a_call_may_ask(run_script, tmp_path):
    # Runs without Flux: a stand-in `flux` first on PATH answers the one query.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flux").write_text(FAKE_FLUX)
    (bin_dir / "flux").chmod(0o755)
    done = run_script(
        """
        from pmp import Executor

        with Executor(max_cores=2, gpus_per_worker=1, backend="flux", launcher="step") as exe:
            print(exe.info["backend"], exe.info["gpu_count"], exe.info["gpus"])
            try:
                exe.submit(sum, [1], resource_dict={"gpus_per_core": 3})
            except ValueError as error:
                print(error)
        """,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLUX_URI": "local:///nowhere"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "flux 2 []",
        "resource_dict key 'gpus_per_core': 3 GPU(s) requested but 2 in the flux allocation",
    ]


@pytest.mark.timeout(120)
def test_oversubscribe_is_refused_by_the_flux_backend(flux, run_script):
    done = run_script(
        """
        from pmp import Executor

        try:
            Executor(max_cores=1, oversubscribe=True)
        except ValueError as error:
            print(str(error).split(":")[0])
        with Executor(max_cores=1) as exe:
            try:
                exe.submit(sum, [1], resource_dict={"oversubscribe": True})
            except ValueError as error:
                print(str(error).split(":")[0])
            print(exe.submit(sum, [1, 1]).result(timeout=60))
        """,
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [
        "oversubscribe=True",
        "resource_dict key 'oversubscribe'",
        "2",
    ]


# ---- detached mode: each call a `flux submit` job that outlives the client ----

CLUSTER_CLIENT = """
import os, sys, time
from pmp import FluxClusterExecutor, JobFailedError

def record(name):
    with open("runs.txt", "a") as f:
        f.write(name + "\\n")

def add(a, b):
    record(f"add {a} {b}")
    return a + b, bool(os.environ.get("FLUX_JOB_ID"))

def slow_add(a, b):
    record(f"slow_add {a} {b}")
    open("started", "w").close()
    time.sleep(3)
    return a + b

def first(pair):
    return pair[0]

def ranks():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

def sleeper(seconds):
    open("sleeping", "w").close()
    time.sleep(seconds)
"""


@pytest.mark.timeout(300)
def test_flux_cluster_jobs_compute_chain_and_run_ranks(flux, mpi, run_script):
    done = run_script(
        CLUSTER_CLIENT
        + """
with FluxClusterExecutor(cache_directory="store") as exe:
    print(exe.info["backend"], "flux submit" in exe.info["backend_reason"])
    one = exe.submit(add, 1, 1)
    two = exe.submit(add, exe.submit(first, one), 10)
    print(one.result(), one.job is not None, two.result())
    print(exe.submit(ranks, resource_dict={"cores": 2}).result())
    try:
        exe.submit(sleeper, 60, resource_dict={"run_time_max": 1}).result()
    except JobFailedError as error:
        print(error.state)
    try:
        exe.submit(add, 1, 2, resource_dict={"memory_max": 4})
    except ValueError as error:
        print(str(error).split(":")[0])
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "flux True",
        "(2, True) True (12, True)",
        "[(0, 2), (1, 2)]",
        "TIMEOUT",
        "resource_dict key 'memory_max' cannot be honoured on Flux",
    ]


@pytest.mark.timeout(300)
def test_a_flux_job_outlives_its_killed_client_and_a_new_client_attaches(
    flux, run_script, tmp_path
):
    # Both clients and the check run inside one Flux instance: the driver
    # starts the first client, SIGKILLs it while its job runs, then runs a
    # second one with the same store and calls.
    (tmp_path / "client.py").write_text(
        CLUSTER_CLIENT
        + """
with FluxClusterExecutor(cache_directory="store") as exe:
    future = exe.submit(add, exe.submit(slow_add, 1, 2), 10)
    print("submitted", flush=True)
    print(future.result())
"""
    )
    done = run_script(
        """
import os, signal, subprocess, sys, time
client = subprocess.Popen([sys.executable, "client.py"], stdout=subprocess.PIPE, text=True)
# Killed once both jobs are submitted (a kill between a submit and the
# job file it writes next would leave a lock that looks abandoned).
assert client.stdout.readline() == "submitted\\n"
deadline = time.monotonic() + 120
while not os.path.exists("started"):
    assert time.monotonic() < deadline and client.poll() is None
    time.sleep(0.1)
client.send_signal(signal.SIGKILL)
client.wait()
again = subprocess.run([sys.executable, "client.py"], capture_output=True, text=True)
print(again.stdout.strip(), again.returncode)
print(subprocess.run(["flux", "jobs", "--no-header", "--format={name}"],
                     capture_output=True, text=True).stdout.split())
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["submitted", "(13, True) 0", "[]"], done.stdout
    # Each link ran once: the second client attached to the jobs of the first.
    assert sorted((tmp_path / "runs.txt").read_text().split("\n")[:-1]) == [
        "add 3 10",
        "slow_add 1 2",
    ]


@pytest.mark.timeout(300)
def test_each_link_of_a_failing_flux_chain_fails_with_the_first_links_error(flux, run_script):
    # The story of Slurm's batch test, with Flux's executor.
    functions = """
def fail():
    raise KeyError("no such thing")

def slow_add(a, b):
    while True:
        time.sleep(1)

def make(directory):
    return FluxClusterExecutor(cache_directory=directory)
"""
    done = run_script(CLUSTER_CLIENT + functions + CHAIN_AND_CANCEL, ("flux", "start"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == CHAIN_AND_CANCEL_OUTPUT, done.stdout


@pytest.mark.timeout(300)
def test_shutdown_with_cancel_futures_cancels_a_running_flux_job(flux, run_script):
    done = run_script(
        CLUSTER_CLIENT
        + """
import subprocess
exe = FluxClusterExecutor(cache_directory="store")
future = exe.submit(sleeper, 120)
# Running as the Future knows it (Flux's state, polled every 2 s), not only
# as the job's own file says: a Future pmp has not seen run yet is cancelled.
while not (os.path.exists("sleeping") and future.running()):
    time.sleep(0.1)
exe.shutdown(wait=False, cancel_futures=True)
time.sleep(1)
print(subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={result}", future.job],
                     capture_output=True, text=True).stdout.strip())
print(type(future.exception(timeout=10)).__name__)
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["CANCELED", "CancelledError"], done.stdout


@pytest.mark.timeout(300)
def test_flux_job_executor_as_executorlib_users_write_it(flux, mpi, run_script):
    done = run_script(
        """
        from pmp import FluxJobExecutor

        def calc_mpi(i):
            from mpi4py import MPI
            return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

        with FluxJobExecutor(max_cores=2, resource_dict={"cores": 2}, pmi_mode="simple") as exe:
            print(exe.info["backend"], exe.submit(calc_mpi, 3).result())
        with FluxJobExecutor(max_workers=2, block_allocation=True, flux_log_files=True) as exe:
            print(sorted(exe.map(abs, [-1, -2, -3])))
        import glob
        print(len(glob.glob("flux-*.out")), len(glob.glob("flux-*.err")))
        """,
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["flux [(3, 2, 0), (3, 2, 1)]", "[1, 2, 3]", "2 2"]


@pytest.mark.timeout(300)
def test_priority_is_the_flux_jobs_urgency(flux, mpi, run_script):
    done = run_script(
        CLUSTER_CLIENT
        + """
import subprocess
from pmp import FluxJobExecutor

def urgency(job):
    return subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={urgency}", job],
                          capture_output=True, text=True).stdout.strip()

with FluxClusterExecutor(cache_directory="store", pmi_mode="simple") as exe:
    future = exe.submit(add, 2, 2, resource_dict={"priority": 20})
    print(future.result()[0], urgency(future.job))
    print(exe.submit(ranks, resource_dict={"cores": 2}).result())
with FluxJobExecutor(max_cores=1) as exe:
    print(exe.submit(add, 1, 1, resource_dict={"priority": 3}).result()[0])
    every = subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={urgency}"],
                           capture_output=True, text=True).stdout.split()
    print("3" in every)
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["4 20", "[(0, 2), (1, 2)]", "2", "True"]


# ---- workers as jobs submitted by `flux job submit` + `flux job attach` ----
# (launcher="step": under node agents, the default, calls are forks of the
# agents' job; test_flux_agents.py)

WORKER_JOBS = """
import os, subprocess, sys, time
from pmp import Executor, WorkerDiedError

def active_jobs():
    return subprocess.run(["flux", "jobs", "--no-header", "--format={name}"],
                          capture_output=True, text=True).stdout.split()

def all_jobs(field):
    return subprocess.run(["flux", "jobs", "-a", "--no-header", "--format={" + field + "}"],
                          capture_output=True, text=True).stdout.split()

def until_no_active_jobs():
    # A job whose attach has exited can still be in its cleanup for a moment.
    deadline = time.monotonic() + 60
    while active_jobs() and time.monotonic() < deadline:
        time.sleep(0.1)
    return active_jobs()
"""


@pytest.mark.timeout(300)
def test_a_crashed_worker_jobs_exit_code_signal_and_stderr_reach_the_error(flux, run_script):
    done = run_script(
        WORKER_JOBS
        + """
import ctypes

def exit_3():
    sys.stderr.write("pmp-test: worker about to exit with code 3\\n")
    sys.stderr.flush()
    os._exit(3)

def segfault():
    ctypes.string_at(0)

with Executor(max_cores=1, launcher="step") as exe:
    print(exe.info["backend"])
    for crash in (exit_3, segfault):
        try:
            exe.submit(crash).result(timeout=120)
        except WorkerDiedError as error:
            print(error.exit_code, error.signal, repr(error.stderr_tail.splitlines()[-1]))
    print(exe.submit(sum, [1, 2]).result(timeout=120))
print(until_no_active_jobs(), sorted(set(all_jobs("name"))))
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    # Flux reports a task killed by a signal as exit code 128+signal, as
    # `flux run` did.
    assert done.stdout.strip().splitlines() == [
        "flux",
        "3 None 'flux-job: task(s) exited with exit code 3'",
        "139 None 'flux-job: task(s) Segmentation fault'",
        "3",
        "[] ['pmp-worker']",
    ], done.stdout
    assert "pmp-test: worker about to exit with code 3" in done.stderr


@pytest.mark.timeout(300)
def test_a_worker_stopped_while_it_runs_ends_its_flux_job(flux, run_script):
    # A worker frozen by SIGSTOP stops answering heartbeats, so the scheduler
    # stops it (SIGTERM, then SIGKILL); SIGTERM alone cannot end a stopped
    # task, and with attach gone the job would run on: it must be cancelled.
    done = run_script(
        WORKER_JOBS
        + """
import signal

def freeze():
    os.kill(os.getpid(), signal.SIGSTOP)

with Executor(max_cores=1, launcher="step") as exe:
    try:
        exe.submit(freeze).result(timeout=120)
    except WorkerDiedError as error:
        print("heartbeats" in str(error))
print(until_no_active_jobs(), all_jobs("result"))
""",
        ("flux", "start"),
        env={"PMP_HEARTBEAT_TIMEOUT": "2", "PMP_HEARTBEAT_INTERVAL": "0.2"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["True", "[] ['CANCELED']"], done.stdout


@pytest.mark.timeout(300)
def test_cwd_environment_and_threads_reach_the_worker_job(flux, run_script, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    done = run_script(
        WORKER_JOBS
        + """
def where():
    return (os.getcwd(), os.environ.get("PMP_FLUX_TEST"), os.environ["OMP_NUM_THREADS"],
            len(os.sched_getaffinity(0)), bool(os.environ.get("FLUX_JOB_ID")),
            "PMP_FLUX_JOBSPEC" in os.environ)

os.environ["PMP_FLUX_TEST"] = "set-by-the-client"
with Executor(max_cores=2, launcher="step") as exe:
    elsewhere = os.path.abspath("elsewhere")
    cwd, value, threads, cpus, in_job, spec = exe.submit(
        where, resource_dict={"cwd": elsewhere, "threads_per_core": 2}).result(timeout=120)
    print(cwd == elsewhere, value, threads, cpus, in_job, spec)
    cwd, value, threads, cpus, in_job, spec = exe.submit(where).result(timeout=120)
    print(cwd == os.getcwd(), value, threads, cpus, in_job, spec)
print(until_no_active_jobs())
""",
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "True set-by-the-client 2 2 True False",
        "True set-by-the-client 1 1 True False",
        "[]",
    ], done.stdout
