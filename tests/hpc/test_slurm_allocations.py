"""Elastic allocations from a login node (outside any allocation), on the
real Slurm with two nodes (node1, node2: 4 CPUs each):
`Executor(backend="slurm", allocation=Allocation(...))` submits one-node
jobs of node agents as calls wait, gives them back when idle, and starts a
call with `run_time_max` only where its allocation has that much time left."""

import ast
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from login_node import OUTSIDE, login_node_scripts, printed_lines

HEADER = """
import os, pathlib, subprocess, sys, time
from pmp import Allocation, Executor, JobFailedError, WorkerDiedError

def where(seconds):
    time.sleep(seconds)
    return os.environ["SLURMD_NODENAME"], os.environ["SLURM_JOB_ID"]

def jobs_named(name):
    # Every job of the executor, whatever its state: squeue keeps ended
    # ones listed for minutes (MinJobAge).
    shown = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i %T"],
                           capture_output=True, text=True).stdout
    return [line.split() for line in shown.splitlines()]

def live(name):
    return [j for j, state in jobs_named(name) if state in ("PENDING", "RUNNING", "CONFIGURING")]

def hold_until_released(me):
    # Says its job (file job-<me>), then waits for the file "release".
    pathlib.Path(f"job-{me}").write_text(os.environ["SLURM_JOB_ID"])
    while not pathlib.Path("release").exists():
        time.sleep(0.05)

def job_of(me):
    # The job the call `me` of hold_until_released runs in, once it runs.
    deadline = time.time() + 120
    while not pathlib.Path(f"job-{me}").exists():
        assert time.time() < deadline, "the call never started"
        time.sleep(0.05)
    return pathlib.Path(f"job-{me}").read_text()

def seconds_until_released(exe, name, limit):
    # Until neither squeue nor the executor has an allocation live (at
    # most `limit` seconds), the executor still open.
    idle = time.monotonic()
    def running():
        states = [a["state"] for a in exe.info["allocations"]]
        return live(name) or {"SUBMITTING", "PENDING", "RUNNING"} & set(states)

    while running() and time.monotonic() - idle < limit:
        time.sleep(0.5)
    return time.monotonic() - idle
"""


@pytest.fixture
def login_node(slurm, tmp_path):
    with login_node_scripts(tmp_path, HEADER, "pmp-alloc-") as run:
        yield run


def lines(done):
    return printed_lines(done, "pmp-alloc-")


@pytest.mark.timeout(300)
def test_allocations_grow_with_the_work_and_are_given_back_when_idle(login_node):
    done = login_node(
        """
        allocation = Allocation(nodes=1, time_limit="5:00", max_allocations=2, idle_timeout=10)
        with Executor(backend="slurm", allocation=allocation) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            ran = [f.result(timeout=150) for f in [exe.submit(where, 1) for _ in range(40)]]
            print(len(ran), sorted({n for n, _ in ran}), len({j for _, j in ran}))
            print(len(jobs_named(name)))
            # Idle: both go within idle_timeout + 10 s, the executor still open.
            took = seconds_until_released(exe, name, 60)
            print(live(name), took <= 20)
            states = [a["state"] for a in exe.info["allocations"]]
            print(states)
            # A new call: a new allocation, which runs it.
            node, job = exe.submit(where, 0).result(timeout=120)
            print(job not in {j for _, j in ran}, len(jobs_named(name)))
        print(live(name))
        """
    )
    assert lines(done) == [
        "40 ['node1', 'node2'] 2",
        "2",
        "[] True",
        "['CANCELLED', 'CANCELLED']",
        "True 3",
        "[]",
    ]


@pytest.mark.timeout(120)
def test_a_call_longer_than_the_time_limit_is_refused_at_submit(login_node):
    done = login_node(
        """
        with Executor(backend="slurm", allocation=Allocation(time_limit="2:00")) as exe:
            print("name", exe._engine.pilot_job_name, flush=True)
            try:
                exe.submit(where, 0, resource_dict={"run_time_max": 300})
            except ValueError as e:
                print(e)
            print(exe.info.get("allocations", []))
        try:
            Executor(backend="slurm", allocation=Allocation(time_limit="an hour"))
        except ValueError as e:
            print(e)
        try:
            with Executor(backend="slurm", max_workers=1) as exe:
                exe.submit(where, 0, resource_dict={"run_time_max": 10}).result()
        except ValueError as e:
            print("batch", e)
        # A pool whose workers no node of the allocations holds (4 CPUs).
        try:
            Executor(
                backend="slurm",
                block_allocation=True,
                max_workers=1,
                cores_per_worker=8,
                allocation=Allocation(time_limit="2:00"),
            )
        except ValueError as e:
            print("pool", e)
        """
    )
    said = lines(done)
    assert said[-1] == (
        "pool block_allocation=True workers of 8 cores x 1 threads_per_core need 8 CPUs "
        "each, more than the 4 of a node of the allocations: lower cores_per_worker or "
        "threads_per_core"
    ), said
    assert said[0] == (
        "resource_dict key 'run_time_max' is 300 s, more than the allocations' time_limit "
        "of 120 s: no allocation could finish it; lower it or raise Allocation(time_limit=...)"
    )
    # Nothing was asked of Slurm for it.
    assert said[1] == "[]"
    assert said[2].startswith('time_limit="an hour" is not a Slurm time or a Flux duration'), said


@pytest.mark.timeout(420)
def test_a_stream_of_calls_with_run_time_max_is_never_killed_by_a_time_limit(login_node):
    # One-minute allocations, 20-second calls that say they take at most 25:
    # each allocation takes two in a row, never a third, and replacements
    # come ahead of time.
    done = login_node(
        """
        allocation = Allocation(time_limit="0:01:00", max_allocations=2, idle_timeout=10)
        with Executor(backend="slurm", allocation=allocation) as exe:
            print("name", exe._engine.pilot_job_name, flush=True)
            start, results, failures = time.monotonic(), [], []
            while time.monotonic() - start < 180:
                f = exe.submit(where, 20, resource_dict={"run_time_max": 25})
                try:
                    results.append(f.result(timeout=200))
                except Exception as e:
                    failures.append(repr(e))
            print(failures)
            print(len(results) >= 6, len({job for _, job in results}) > 1)
        """,
        timeout=400,
    )
    assert lines(done) == ["[]", "True True"]


@pytest.mark.timeout(300)
def test_an_allocation_cancelled_under_a_call_fails_it_naming_the_job_or_reruns_it(login_node):
    done = login_node(
        """
        def hold(me):
            hold_until_released(me)
            return os.environ["SLURM_JOB_ID"]

        allocation = Allocation(time_limit="5:00", max_allocations=2, idle_timeout=30)
        with Executor(backend="slurm", allocation=allocation) as exe:
            print("name", exe._engine.pilot_job_name, flush=True)
            f = exe.submit(hold, "a")
            job = job_of("a")
            subprocess.run(["scancel", job], check=True)
            try:
                f.result(timeout=60)
            except Exception as e:
                print(type(e).__name__, f"job {job} ended CANCELLED" in str(e), "node" in str(e), e.job == job, e.state)
            again = exe.submit(hold, "b", resource_dict={"restart_limit": 1})
            first = job_of("b")
            pathlib.Path("job-b").unlink()
            subprocess.run(["scancel", first], check=True)
            second = job_of("b")
            pathlib.Path("release").touch()
            print(again.result(timeout=120) == second != first)
        """
    )
    assert lines(done) == ["JobFailedError True True True CANCELLED", "True"]


POOL = """
def setup():
    # Runs once in each pool worker, inside the allocation's job.
    return {"value": "init in job " + os.environ["SLURM_JOB_ID"]}

def read(seconds, value):
    time.sleep(seconds)
    return value, os.environ["SLURM_JOB_ID"], os.getpid()

def pool(allocation):
    return Executor(backend="slurm", block_allocation=True, max_workers=4,
                    init_function=setup, allocation=allocation)
"""


@pytest.mark.timeout(120)
def test_a_pool_lives_in_an_allocation_and_goes_with_it_when_idle(login_node):
    done = login_node(
        POOL
        + textwrap.dedent(
            """
        allocation = Allocation(nodes=1, time_limit="5:00", idle_timeout=10)
        with pool(allocation) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            ran = [f.result(timeout=60) for f in [exe.submit(read, 0.5) for _ in range(8)]]
            jobs = {job for _, job, _ in ran}
            print(len(ran), len(jobs), all(value == f"init in job {job}" for value, job, _ in ran))
            # Long-lived workers: at most the pool's 4 processes ran the 8 calls.
            print(len({pid for _, _, pid in ran}) <= 4, [j for j, _ in jobs_named(name)] == list(jobs))
            # Idle: its workers stop and it is given back, the executor still open.
            took = seconds_until_released(exe, name, 40)
            print(live(name), took <= 25)
            # A new call: a new allocation, a new pool there, init run again.
            value, job, _ = exe.submit(read, 0).result(timeout=60)
            print(job not in jobs, value == f"init in job {job}", len(jobs_named(name)))
        print(live(name))
        """
        )
    )
    assert lines(done) == ["8 1 True", "True True", "[] True", "True True 2", "[]"]


@pytest.mark.timeout(120)
def test_an_allocation_cancelled_under_a_pools_call_fails_or_reruns_it_and_the_pool_lives_on(
    login_node,
):
    done = login_node(
        POOL
        + textwrap.dedent(
            """
        def hold(me, value):
            hold_until_released(me)
            return value

        allocation = Allocation(time_limit="5:00", idle_timeout=30)
        with pool(allocation) as exe:
            print("name", exe._engine.pilot_job_name, flush=True)
            f = exe.submit(hold, "a")
            job = job_of("a")
            subprocess.run(["scancel", job], check=True)
            try:
                f.result(timeout=60)
            except JobFailedError as e:
                print(f"job {job} ended CANCELLED" in str(e), e.job == job, e.state)
            again = exe.submit(hold, "b", resource_dict={"restart_limit": 1})
            first = job_of("b")
            pathlib.Path("job-b").unlink()
            subprocess.run(["scancel", first], check=True)
            second = job_of("b")
            pathlib.Path("release").touch()
            print(again.result(timeout=60) == f"init in job {second}", second != first)
            # Not the function's fault: the pool still runs calls.
            print(exe.submit(read, 0).result(timeout=60)[0] == f"init in job {second}")
        """
        )
    )
    assert lines(done) == ["True True CANCELLED", "True True", "True"]


@pytest.mark.timeout(120)
def test_a_refused_submission_fails_the_calls_with_sbatchs_words_and_is_not_retried(
    login_node, tmp_path
):
    # sbatch behind a wrapper that counts its calls.
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    real = shutil.which("sbatch")
    count = tmp_path / "sbatch-calls"
    sbatch = wrappers / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho x >> "{count}"\nexec "{real}" "$@"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    done = login_node(
        """
        allocation = Allocation(time_limit="5:00", partition="nosuch")
        with Executor(backend="slurm", allocation=allocation) as exe:
            print("name", exe._engine.pilot_job_name, flush=True)
            start = time.monotonic()
            for f in [exe.submit(where, 0) for _ in range(3)]:
                try:
                    f.result(timeout=60)
                except Exception as e:
                    print(type(e).__name__, "sbatch" in str(e), "nosuch" in str(e) or
                          "partition" in str(e).lower())
            # Submitting again while paused: the same words at once, no sbatch.
            try:
                exe.submit(where, 0).result(timeout=30)
            except Exception as e:
                print(type(e).__name__, "partition" in str(e).lower())
            print(time.monotonic() - start < 30)
        """,
        env={"PATH": f"{wrappers}:{os.environ['PATH']}"},
    )
    said = lines(done)
    assert said[:3] == ["WorkerDiedError True True"] * 3, done.stdout
    assert said[3:] == ["WorkerDiedError True", "True"], done.stdout
    assert pathlib.Path(count).read_text().count("x") == 1


@pytest.mark.timeout(200)
def test_min_allocations_keeps_one_through_an_idle_minute(login_node):
    done = login_node(
        """
        allocation = Allocation(time_limit="5:00", min_allocations=1, idle_timeout=5)
        with Executor(backend="slurm", allocation=allocation) as exe:
            name = exe._engine.pilot_job_name
            print("name", name, flush=True)
            node, job = exe.submit(where, 0).result(timeout=120)
            time.sleep(65)
            print(live(name) == [job], exe.submit(where, 0).result(timeout=60)[1] == job)
        print(live(name))
        """
    )
    assert lines(done) == ["True True", "[]"]


@pytest.mark.timeout(300)
def test_in_the_kernel_a_cell_waits_for_an_allocation_runs_and_status_lists_it(slurm, tmp_path):
    from test_status_batch import Kernel

    kernel = Kernel(tmp_path)
    name = None
    try:
        kernel.run(
            "%pmp config --backend slurm --allocation nodes=1,time_limit=5:00,idle_timeout=60"
        )
        name = ast.literal_eval(
            kernel.value("get_ipython().find_magic('pmp').__self__.executor._engine.pilot_job_name")
        )
        kernel.run(
            "%%pmp submit --name x\nimport os, time\ntime.sleep(6)\nos.environ['SLURM_JOB_ID']"
        )
        job = ast.literal_eval(kernel.value("x.result(timeout=150)"))
        texts = [b["text/plain"] for bundles in kernel.displays.values() for b in bundles]
        said = [t for t in texts if t.startswith("x: ")]
        waiting = [i for i, t in enumerate(said) if "waiting for an allocation" in t]
        running = [i for i, t in enumerate(said) if t.startswith("x: running")]
        done = [i for i, t in enumerate(said) if t.startswith("x: done")]
        assert waiting and running and done, said
        assert waiting[0] < running[0] < done[0], said
        status, _ = kernel.shown("%pmp status")
        assert f"allocations: job {job} RUNNING on node" in status, status
    finally:
        kernel.close()
        if name:
            subprocess.run(["scancel", "-n", name], check=False, capture_output=True)


@pytest.mark.timeout(200)
def test_a_client_killed_with_sigkill_leaves_no_allocation_running(slurm, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(HEADER)
        + textwrap.dedent(
            """
            def hold():
                pathlib.Path("started").write_text(os.environ["SLURM_JOB_ID"])
                time.sleep(600)

            allocation = Allocation(time_limit="10:00", min_allocations=1)
            exe = Executor(backend="slurm", allocation=allocation)
            print(exe._engine.pilot_job_name, flush=True)
            exe.submit(hold)
            time.sleep(600)
            """
        )
    )
    client = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**OUTSIDE, "PMP_HEARTBEAT_TIMEOUT": "5"},
    )
    name = client.stdout.readline().strip()
    try:
        assert name.startswith("pmp-alloc-"), name
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.1)
        client.kill()
        client.wait()
        killed = time.monotonic()

        def live():
            shown = subprocess.run(
                ["squeue", "-h", "-n", name, "-o", "%i %T"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            return [line for line in shown.splitlines() if "COMPLETING" not in line]

        while live() and time.monotonic() - killed < 60:
            time.sleep(0.5)
        # The agent hears nothing within its heartbeat limit (5 s here), ends
        # its worker and exits; the job ends with it.
        assert live() == [], live()
        assert time.monotonic() - killed < 30
    finally:
        client.kill()
        subprocess.run(["scancel", "-n", name], check=False, capture_output=True)
