"""backend="slurm" from outside any allocation, as on a login node: every
call is a batch job submitted with sbatch, which reads its input from the
task store and writes its result there, and outlives the client. Against a
real Slurm (slurmctld + slurmd on loopback); Python runs without any
SLURM_* variable."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from batch_stories import CHAIN_AND_CANCEL, CHAIN_AND_CANCEL_OUTPUT
from full_disk import mount_small_tmpfs
from task_children import assert_all_end

OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}

HEADER = """
import os, sys, time
from pmp import Executor

def record(name):
    with open("runs.txt", "a") as f:
        f.write(name + "\\n")

def where(x):
    record(f"where {x}")
    return x + 1, os.environ["SLURM_JOB_ID"]

def add(a, b):
    record(f"add {a} {b}")
    return a + b

def slow_add(a, b):
    record(f"slow_add {a} {b}")
    while not os.path.exists("go"):
        time.sleep(0.05)
    return a + b

def ranks():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()

def fail():
    raise KeyError("no such thing")
"""


@pytest.fixture
def batch(slurm, tmp_path):
    """Run or start a script outside any allocation, in tmp_path."""

    def script(body):
        path = tmp_path / f"script-{time.monotonic_ns()}.py"
        path.write_text(textwrap.dedent(HEADER) + textwrap.dedent(body))
        return [sys.executable, str(path)]

    def run(body, timeout=180, env=None):
        return subprocess.run(
            script(body),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env={**OUTSIDE, **(env or {})},
            check=False,
        )

    started = []

    def start(body, env=None):
        process = subprocess.Popen(
            script(body),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**OUTSIDE, **(env or {})},
        )
        started.append(process)
        return process

    run.start = start
    run.script = script
    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    # Nothing of this test left in the queue.
    jobs = [job for job, _ in queued("slow_add")]
    if jobs:
        subprocess.run(["scancel", *jobs], check=False, capture_output=True)


def lines(done):
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def runs(tmp_path):
    path = tmp_path / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def queued(name):
    """[(job id, state)] of the jobs named `name`, or of the batch jobs of
    the function `name` (named `<function>.<tag of store and key>`)."""
    shown = subprocess.run(
        ["squeue", "-h", "-o", "%i %T %j"], capture_output=True, text=True, check=False
    ).stdout
    found = []
    for line in shown.splitlines():
        job, state, job_name = line.split(None, 2)
        if job_name == name or job_name.rpartition(".")[0] == name:
            found.append((job, state))
    return found


def in_queue(name):
    return [word for _, state in queued(name) for word in (name, state)]


@pytest.mark.timeout(240)
def test_a_call_is_a_batch_job_and_its_result_comes_back(batch, tmp_path):
    done = batch(
        """
        with Executor(backend="slurm") as exe:
            print(exe.info["backend"], "batch job" in exe.info["backend_reason"])
            print(exe.info["cache_directory"] == os.path.abspath("pmp_cache"))
            result, job = exe.submit(where, 1).result(timeout=120)
            print(result, job.isdigit())
            print(exe.submit(sum, [1, 1]).result(timeout=120))
        with Executor() as local:
            print(local.info["backend"], "backend='slurm' would submit" in local.info["backend_reason"])
        """
    )
    assert lines(done) == ["slurm True", "True", "2 True", "2", "local True"]
    assert (tmp_path / "pmp_cache" / "logs").is_dir()


@pytest.mark.timeout(240)
def test_what_a_batch_jobs_call_started_ends_with_the_job(batch, wait_until):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = batch(
        f"""
        import json
        sys.path.insert(0, {tests!r})
        from task_children import start_three
        with Executor(backend="slurm") as exe:
            pids = exe.submit(start_three, sys.executable, os.getcwd()).result(timeout=120)
        print(json.dumps(pids))
        """
    )
    pids = json.loads(lines(done)[-1])
    assert_all_end(pids, wait_until, "after its batch job ended")


@pytest.mark.timeout(240)
def test_a_chain_and_a_failure(batch, tmp_path):
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            first = exe.submit(add, 1, 2)
            second = exe.submit(add, first, 10)
            print(second.result(timeout=120), first.job != second.job)
            try:
                exe.submit(fail).result(timeout=120)
            except KeyError as error:
                print("raised", error)
        """
    )
    assert lines(done) == ["13 True", "raised 'no such thing'"]
    assert runs(tmp_path) == ["add 1 2", "add 3 10"]


def test_a_failed_future_argument_fails_the_call_with_its_own_error(batch, tmp_path):
    # A done foreign Future (not pmp's) that failed: the call fails as it
    # did, as on the local backend, and no job is submitted for it.
    done = batch(
        """
        from concurrent.futures import Future
        failed = Future()
        failed.set_exception(KeyError("upstream"))
        with Executor(backend="slurm", cache_directory="store") as exe:
            future = exe.submit(add, failed, 1)
            error = future.exception(timeout=30)
            print(type(error).__name__, error, future.job)
        """
    )
    assert lines(done) == ["KeyError 'upstream' None"]
    assert runs(tmp_path) == []


@pytest.mark.timeout(300)
def test_a_dependent_waits_until_the_job_it_depends_on_is_submitted(batch, tmp_path):
    # Another client holds the key of `first` and has not submitted its job
    # yet: `second` must not go before that job has an id to depend on
    # (afterok); it would find no upstream result. It goes once the other
    # client's record names the job, and runs after it.
    done = batch(
        """
        from pmp import _pmp
        store = _pmp.Store(os.path.abspath("store"))
        assert store.try_lock("first", "batch otherhost 1")
        with Executor(backend="slurm", cache_directory="store") as exe:
            first = exe.submit(add, 1, 2, resource_dict={"cache_key": "first"})
            second = exe.submit(add, first, 10)
            time.sleep(3)
            print("waiting", first.job, second.job, second.done())
            store.unlock("first")  # the other client submits now
            with Executor(backend="slurm", cache_directory="store") as other:
                mine = other.submit(add, 1, 2, resource_dict={"cache_key": "first"})
                print(second.result(timeout=200), first.result(timeout=60), mine.result())
                print(first.job == mine.job, second.job is not None)
        """,
        timeout=240,
    )
    assert lines(done) == ["waiting None None False", "13 3 3", "True True"]
    assert runs(tmp_path) == ["add 1 2", "add 3 10"], "each link ran once, in order"


@pytest.mark.timeout(300)
def test_jobs_outlive_a_killed_client_and_a_new_one_attaches(batch, tmp_path, wait_until):
    body = """
    with Executor(backend="slurm", cache_directory="store") as exe:
        first = exe.submit(slow_add, 1, 2)
        second = exe.submit(add, first, 10)
        print("submitted", first.job, flush=True)
        print(second.result(timeout=200), first.from_store is not None, flush=True)
    """
    client = batch.start(body)
    assert client.stdout.readline().startswith("submitted ")
    wait_until(lambda: runs(tmp_path), timeout=120, message="the first job never ran")
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    assert "slow_add" in in_queue("slow_add"), "the job died with its client"
    again = batch.start(body)
    assert again.stdout.readline().startswith("submitted ")
    (tmp_path / "go").write_text("")
    out, err = again.communicate(timeout=200)
    assert again.returncode == 0, err
    assert out.strip().splitlines()[-1] == "13 True"
    assert runs(tmp_path) == ["slow_add 1 2", "add 3 10"], "each link ran once"


@pytest.mark.timeout(240)
def test_cancel_futures_scancels_a_running_job(batch, tmp_path, wait_until):
    done = batch(
        """
        import subprocess
        from concurrent.futures import CancelledError
        exe = Executor(backend="slurm", cache_directory="store")
        future = exe.submit(slow_add, 1, 2)
        while not os.path.exists("runs.txt"):
            time.sleep(0.1)
        exe.shutdown(wait=False, cancel_futures=True)
        try:
            future.result(timeout=30)
        except CancelledError as error:
            print("cancelled")
        for _ in range(100):
            shown = subprocess.run(["squeue", "-h", "-j", future.job, "-o", "%T"],
                                   capture_output=True, text=True).stdout.split()
            if shown in ([], ["CANCELLED"], ["COMPLETING"]):
                break
            time.sleep(0.2)
        print(shown)
        """
    )
    out = lines(done)
    assert out[0] == "cancelled"
    assert out[1] in ("[]", "['CANCELLED']", "['COMPLETING']"), out


@pytest.mark.timeout(240)
def test_a_job_cancelled_from_outside_fails_its_future_naming_the_state(batch, tmp_path):
    done = batch(
        """
        import subprocess
        from pmp import JobFailedError
        with Executor(backend="slurm", cache_directory="store") as exe:
            future = exe.submit(slow_add, 1, 2)
            while not os.path.exists("runs.txt"):
                time.sleep(0.1)
            subprocess.run(["scancel", future.job], check=True)
            try:
                future.result(timeout=60)
            except JobFailedError as error:
                print(error.state, "it was cancelled" in str(error))
        """
    )
    assert lines(done) == ["CANCELLED True"]


def job_fields(job):
    """`scontrol show job`'s fields of `job`, as a dict."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False
    ).stdout
    return dict(field.split("=", 1) for field in shown.split() if "=" in field)


@pytest.mark.timeout(240)
def test_a_requeued_job_does_not_run_its_stored_call_again(batch, tmp_path, wait_until):
    # Slurm requeues a job after a node failure, and on `scontrol requeue`
    # even once it completed: the call must not run a second time.
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            plain = exe.submit(add, 1, 2)
            asked = exe.submit(add, 2, 3, resource_dict={"slurm_cmd_args": ["--requeue"]})
            print(plain.result(timeout=120), asked.result(timeout=120), plain.job, asked.job)
        """
    )
    (line,) = lines(done)
    three, five, plain, asked = line.split()
    assert (three, five) == ("3", "5")
    refused = subprocess.run(
        ["scontrol", "requeue", plain], capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0, "the job was submitted without --no-requeue"
    # The user's --requeue wins; such a job, requeued, finds its result stored.
    subprocess.run(["scontrol", "requeue", asked], check=True)
    wait_until(lambda: job_fields(asked).get("JobState") == "PENDING", timeout=60)
    # A requeued job waits two minutes (BeginTime) before it may start again:
    # a few seconds here, as slurmd refuses to start a job again within the
    # second it ended in ("Job credential revoked").
    subprocess.run(["scontrol", "update", f"jobid={asked}", "starttime=now+3"], check=True)
    wait_until(
        lambda: job_fields(asked).get("JobState") == "COMPLETED",
        timeout=120,
        message="the requeued job never ran",
    )
    assert job_fields(asked)["Restarts"] == "1"
    assert sorted(runs(tmp_path)) == ["add 1 2", "add 2 3"], "the requeued job ran its call again"
    logs = [path.read_text() for path in (tmp_path / "store" / "logs").iterdir()]
    assert any("it was not run again" in log for log in logs), logs
    assert not os.listdir(tmp_path / "store" / "locks")


SQUEUE_OUTAGE = """#!/bin/sh
# squeue as slurmctld's outage makes it ({here}/outage exists), or once
# Slurm forgot the jobs ({here}/forgot); else the real one.
if [ -e {here}/outage ]; then
    echo call >> {here}/outage.calls
    echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2
    exit 1
fi
if [ -e {here}/forgot ]; then
    echo "slurm_load_jobs error: Invalid job id specified" >&2
    exit 1
fi
exec {squeue} "$@"
"""


def squeue_outage(tmp_path):
    """An environment whose sbatch is the real one and whose squeue fails
    while `tmp_path/outage` exists (see SQUEUE_OUTAGE)."""
    import shutil

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "sbatch").symlink_to(shutil.which("sbatch"))
    squeue = tools / "squeue"
    squeue.write_text(SQUEUE_OUTAGE.format(here=tmp_path, squeue=shutil.which("squeue")))
    squeue.chmod(0o755)
    return {"PATH": f"{tools}:{os.environ['PATH']}"}


@pytest.mark.timeout(240)
def test_a_job_is_followed_through_a_slurmctld_outage(batch, tmp_path):
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            future = exe.submit(slow_add, 1, 2)
            while not os.path.exists("runs.txt"):
                time.sleep(0.1)
            open("outage", "w").close()
            # Four state polls unanswered, as while slurmctld restarts.
            while not os.path.exists("outage.calls") or len(open("outage.calls").read().split()) < 4:
                time.sleep(0.1)
            print(future.done(), os.listdir("store/locks") != [])
            os.remove("outage")
            open("go", "w").close()
            print(future.result(timeout=60))
        """,
        env=squeue_outage(tmp_path),
    )
    assert lines(done) == ["False True", "3"]


@pytest.mark.timeout(240)
def test_a_job_slurm_no_longer_knows_is_lost_by_slurm(batch, tmp_path):
    done = batch(
        """
        import subprocess
        from pmp import JobFailedError
        with Executor(backend="slurm", cache_directory="store") as exe:
            future = exe.submit(slow_add, 1, 2)
            while not os.path.exists("runs.txt"):
                time.sleep(0.1)
            open("forgot", "w").close()
            subprocess.run(["scancel", future.job], check=True)
            try:
                future.result(timeout=60)
            except JobFailedError as error:
                print(str(error).splitlines()[0])
        """,
        env=squeue_outage(tmp_path),
    )
    (line,) = lines(done)
    assert "it was lost by Slurm" in line and "UNKNOWN" not in line, line


HANGING_SBATCH = """#!/bin/sh
# The real sbatch, then a hang: its client is killed before it hears the id.
echo $$ > {here}/sbatch.pid
{sbatch} "$@" > {here}/submitted.part && mv {here}/submitted.part {here}/submitted
exec sleep 600
"""


@pytest.mark.timeout(300)
def test_a_job_whose_client_died_in_sbatch_is_found_not_submitted_again(
    batch, tmp_path, wait_until
):
    import shutil

    tools = tmp_path / "hanging"
    tools.mkdir()
    sbatch = tools / "sbatch"
    sbatch.write_text(HANGING_SBATCH.format(here=tmp_path, sbatch=shutil.which("sbatch")))
    sbatch.chmod(0o755)
    body = """
    with Executor(backend="slurm", cache_directory="store") as exe:
        future = exe.submit(slow_add, 1, 2)
        print("submitted", future.job, flush=True)
        print(future.result(timeout=200), flush=True)
    """
    client = batch.start(body, env={"PATH": f"{tools}:{os.environ['PATH']}"})
    submitted = tmp_path / "submitted"
    wait_until(submitted.exists, timeout=60, message="sbatch never submitted")
    client.kill()
    client.wait(timeout=30)
    os.kill(int((tmp_path / "sbatch.pid").read_text()), signal.SIGKILL)
    job = submitted.read_text().strip().split(";")[0]
    again = batch.start(body)
    assert again.stdout.readline().split() == ["submitted", job], "a second job was submitted"
    (tmp_path / "go").write_text("")
    out, err = again.communicate(timeout=200)
    assert again.returncode == 0, err
    assert out.split()[-1] == "3"
    assert runs(tmp_path) == ["slow_add 1 2"], "the call ran once"


@pytest.mark.timeout(240)
def test_a_read_only_store_serves_its_results(batch, tmp_path):
    body = """
        with Executor(backend="slurm", cache_directory={!r}) as exe:
            print(exe.submit(add, 1, 2).result(timeout=120))
        """
    assert lines(batch(body.format("store"))) == ["3"]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    bound = subprocess.run(
        ["mount", "--bind", str(tmp_path / "store"), str(readonly)],
        capture_output=True,
        text=True,
        check=False,
    )
    if bound.returncode != 0:
        pytest.skip(f"a read-only store needs a bind mount (root): {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(readonly)], check=True)
        done = batch(body.format("readonly"))
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
    assert lines(done) == ["3"]
    assert runs(tmp_path) == ["add 1 2"]


@pytest.mark.timeout(240)
def test_a_job_whose_result_the_full_disk_cannot_hold_says_so(batch, tmp_path):
    store = tmp_path / "store"
    mount_small_tmpfs(store)
    try:
        done = batch(
            """
            from pmp import JobFailedError
            with Executor(backend="slurm", cache_directory="store") as exe:
                try:
                    exe.submit(bytes, 1024 * 1024).result(timeout=120)
                except JobFailedError as error:
                    print(str(error).splitlines()[0])
                    print("No space left on device" in error.log_tail)
            """
        )
    finally:
        subprocess.run(["umount", str(store)], check=True)
    first, second = lines(done)
    assert "it could not use the task store" in first, first
    assert second == "True"


@pytest.mark.timeout(240)
def test_two_cores_run_as_ranks_inside_the_job(batch):
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            print(exe.submit(ranks, resource_dict={"cores": 2}).result(timeout=120))
        """
    )
    assert lines(done) == ["[(0, 2), (1, 2)]"]


@pytest.mark.timeout(120)
def test_bad_batch_resources_are_value_errors(batch):
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            for bad in ({"num_nodes": 0}, {"run_time_max": "1h"}, {"memory_max": -1},
                        {"partition": ""}, {"slurm_cmd_args": "--exclusive"}, {"corez": 1}):
                try:
                    exe.submit(sum, [1], resource_dict=bad)
                except ValueError as error:
                    print(str(error).split(" must")[0].split(" is not")[0])
        try:
            Executor(backend="slurm", block_allocation=True)
        except ValueError as error:
            print("pilots:", "say how many workers with max_workers" in str(error))
        """
    )
    assert lines(done) == [
        "resource_dict key 'num_nodes'",
        "resource_dict key 'run_time_max'",
        "resource_dict key 'memory_max'",
        "resource_dict key 'partition'",
        "resource_dict key 'slurm_cmd_args'",
        "resource_dict key 'corez'",
        "pilots: True",
    ]


class Kernel:
    """A pmp-kernel outside any allocation, driven as a frontend would."""

    def __init__(self, cwd):
        import jupyter_client

        self.manager, self.client = jupyter_client.manager.start_new_kernel(
            kernel_name="pmp", startup_timeout=60, cwd=str(cwd), env=OUTSIDE
        )
        self.displays = {}

    def run(self, code, timeout=120):
        msg_id = self.client.execute(code)
        mine = []
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            self._record(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mine.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        return reply["content"], mine

    def _record(self, msg):
        if msg["msg_type"] in ("display_data", "update_display_data"):
            display_id = msg["content"].get("transient", {}).get("display_id")
            if display_id:
                self.displays.setdefault(display_id, []).append(
                    msg["content"]["data"]["text/plain"]
                )

    def value(self, code):
        reply, messages = self.run(code)
        assert reply["status"] == "ok", reply
        (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
        return result["content"]["data"]["text/plain"]

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


CELL = """%%pmp submit --name answer
import os, time
open("ran.txt", "a").write("ran\\n")
while not os.path.exists("go"):
    time.sleep(0.05)
6 * 7"""


@pytest.mark.timeout(300)
def test_a_cell_as_a_batch_job_survives_a_kernel_restart(slurm, tmp_path, wait_until):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("pmp")
    except NoSuchKernel:
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    first = Kernel(tmp_path)
    try:
        first.run("%pmp config --backend slurm --cache-directory store")
        reply, messages = first.run(CELL)
        assert reply["status"] == "ok", reply
        (shown,) = [m for m in messages if m["msg_type"] == "display_data"]
        assert re.match(
            r"answer: queued for .+: job \d+ waiting in Slurm.s queue",
            shown["content"]["data"]["text/plain"],
        )
        job = first.value("answer.job").strip("'")
        wait_until((tmp_path / "ran.txt").exists, timeout=120, message="the job never ran")
        assert first.value("import time; time.sleep(2.5); answer.job_state").startswith("'RUNNING")
    finally:
        first.close()  # killed mid-job: the job goes on
    assert in_queue("answer") == ["answer", "RUNNING"], "the job died with the kernel"
    second = Kernel(tmp_path)
    try:
        second.run("%pmp config --backend slurm --cache-directory store")
        second.run(CELL)
        assert second.value("answer.job").strip("'") == job, "it attached to the same job"
        (tmp_path / "go").write_text("")
        assert second.value("answer.result(timeout=120), answer.from_store is not None") == (
            "(42, True)"
        )
        # %pmp cancel scancels a task's job.
        second.run("%%pmp submit --name slow_add\nimport time\ntime.sleep(120)")
        wait_until(lambda: in_queue("slow_add")[1:] == ["RUNNING"], timeout=120)
        reply, _ = second.run("%pmp cancel slow_add")
        assert reply["status"] == "ok"
        wait_until(
            lambda: in_queue("slow_add")[1:] in ([], ["CANCELLED"], ["COMPLETING"]), timeout=60
        )
    finally:
        second.close()
    assert (tmp_path / "ran.txt").read_text() == "ran\n", "the cell ran once"


@pytest.mark.timeout(240)
def test_pilot_jobs_serve_many_calls_with_an_init_function(batch):
    # The seed's data-handling example, from a login node.
    done = batch(
        """
        import subprocess

        def calc(i, j, k):
            return i + j + k, os.environ["SLURM_JOB_ID"]

        def init_function():
            return {"j": 4, "k": 3, "l": 2}

        with Executor(backend="slurm", max_workers=2, block_allocation=True,
                      init_function=init_function) as exe:
            print("pilot job" in exe.info["backend_reason"])
            results = [exe.submit(calc, i) for i in range(8)]
            print([r.result(timeout=120)[0] for r in results])
            jobs = {r.result()[1] for r in results}
            print(1 <= len(jobs) <= 2)
            name = exe._engine.pilot_job_name
        for _ in range(100):
            left = subprocess.run(["squeue", "-h", "-n", name, "-o", "%T"],
                                  capture_output=True, text=True).stdout.split()
            if all(state in ("COMPLETED", "COMPLETING", "CANCELLED") for state in left):
                break
            time.sleep(0.2)
        print("left:", [s for s in left if s not in ("COMPLETED", "CANCELLED")])
        """
    )
    out = lines(done)
    assert out[:3] == ["True", "[7, 8, 9, 10, 11, 12, 13, 14]", "True"], out
    assert out[3] in ("left: []", "left: ['COMPLETING']"), out


@pytest.mark.timeout(240)
def test_pilots_end_when_their_client_is_killed(batch, tmp_path, wait_until):
    client = batch.start(
        """
        with Executor(backend="slurm", max_workers=1, block_allocation=True) as exe:
            future = exe.submit(slow_add, 1, 2)
            print(exe._engine.pilot_job_name, flush=True)
            future.result()
        """
    )
    name = client.stdout.readline().strip()
    wait_until(lambda: runs(tmp_path), timeout=120, message="the pilot never ran the call")
    assert in_queue(name) == [name, "RUNNING"]
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    # The worker hears nothing within its heartbeat limit (10 s) and exits.
    wait_until(
        lambda: in_queue(name)[1:] in ([], ["COMPLETED"], ["COMPLETING"], ["FAILED"]),
        timeout=60,
        message="the pilot outlived its client",
    )


@pytest.mark.timeout(240)
def test_a_pilot_cancelled_with_scancel_names_its_job_and_state(batch):
    done = batch(
        """
        import subprocess
        with Executor(backend="slurm", max_workers=1, block_allocation=True) as exe:
            future = exe.submit(slow_add, 1, 2)
            while not os.path.exists("runs.txt"):
                time.sleep(0.1)
            (job,) = subprocess.run(["squeue", "-h", "-n", exe._engine.pilot_job_name, "-o", "%i"],
                                    capture_output=True, text=True).stdout.split()
            subprocess.run(["scancel", job], check=True)
            print(job, str(future.exception(timeout=60)).splitlines()[0])
        """
    )
    (line,) = lines(done)
    job, message = line.split(" ", 1)
    assert f"pilot job {job} ended CANCELLED: it was cancelled" in message, message


def slurm_nodes():
    shown = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=False
    )
    return sorted(set(shown.stdout.split()))


@pytest.mark.timeout(240)
def test_two_ranks_on_two_nodes(batch):
    if len(slurm_nodes()) < 2:
        pytest.skip("this Slurm has one node (the test command starts two: SLURM_CI_NODES=2)")
    done = batch(
        """
        def placed():
            from mpi4py import MPI
            return MPI.COMM_WORLD.Get_rank(), os.environ["SLURMD_NODENAME"]

        with Executor(backend="slurm", cache_directory="store") as exe:
            ranks = exe.submit(placed, resource_dict={"cores": 2, "num_nodes": 2}).result(120)
        print([rank for rank, _ in ranks], len({node for _, node in ranks}))
        """
    )
    assert lines(done) == ["[0, 1] 2"]


@pytest.mark.timeout(300)
def test_a_job_killed_by_its_time_limit_names_it(batch):
    # Slurm counts time limits in whole minutes: run_time_max=1 (s) is 1 min.
    done = batch(
        """
        from pmp import JobFailedError

        def sleepy():
            time.sleep(300)

        with Executor(backend="slurm", cache_directory="store") as exe:
            try:
                exe.submit(sleepy, resource_dict={"run_time_max": 1}).result(timeout=240)
            except JobFailedError as error:
                print(error.state, "it reached its time limit" in str(error))
        """,
        timeout=280,
    )
    assert lines(done) == ["TIMEOUT True"]


@pytest.mark.timeout(240)
def test_slurm_cluster_executor_as_executorlib_users_write_it(batch, tmp_path):
    # executorlib's class and executor-level resource_dict: sbatch options
    # for every call, and a batch job even from inside an allocation.
    body = """
        from pmp import SlurmClusterExecutor
        import subprocess
        resources = {"cores": 1, "run_time_max": 120, "slurm_cmd_args": ["--comment=pmp-test"]}
        with SlurmClusterExecutor(cache_directory="store", resource_dict=resources) as exe:
            future = exe.submit(where, int(sys.argv[1]))
            value, job = future.result(timeout=120)
            shown = subprocess.run(["scontrol", "show", "job", "-o", job],
                                   capture_output=True, text=True).stdout
            print(value, job == future.job, os.environ.get("SLURM_JOB_ID") != job,
                  "Comment=pmp-test" in shown, "TimeLimit=00:02:00" in shown)
        """
    script = batch.script(body)
    for launcher, argument in (((), "1"), (("salloc", "-n", "1"), "2")):
        done = subprocess.run(
            [*launcher, *script, argument],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env=OUTSIDE,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        expected = [str(int(argument) + 1), "True", "True", "True", "True"]
        assert done.stdout.split() == expected, (launcher, done.stdout)


@pytest.mark.timeout(240)
def test_slurm_cluster_pmi_mode_and_priority(batch):
    done = batch(
        """
        from pmp import SlurmClusterExecutor
        with SlurmClusterExecutor(cache_directory="store", pmi_mode="pmi2") as exe:
            print(exe.submit(ranks, resource_dict={"cores": 2}).result(timeout=120))
            try:
                exe.submit(add, 1, 2, resource_dict={"priority": 10})
            except ValueError as error:
                print(str(error).split(":")[0])
        """
    )
    assert lines(done) == [
        "[(0, 2), (1, 2)]",
        "resource_dict key 'priority' cannot be honoured by Slurm",
    ]


@pytest.mark.timeout(240)
def test_terminate_tasks_in_cache_cancels_what_a_gone_client_left_running(batch, wait_until):
    done = batch(
        """
        exe = Executor(backend="slurm", cache_directory="store")
        future = exe.submit(slow_add, 1, 2)
        while future.job_state is None or not future.job_state.startswith("RUNNING"):
            time.sleep(0.2)
        print(future.job)
        exe.shutdown(wait=False)  # detached: the job keeps running
        """
    )
    (job,) = lines(done)
    assert in_queue("slow_add") == ["slow_add", "RUNNING"]
    done = batch(
        """
        from pmp import get_future_from_cache, terminate_tasks_in_cache
        (key,) = os.listdir("store/jobs")
        pending = get_future_from_cache("store", key)
        print(pending.done(), terminate_tasks_in_cache("store"))
        print(type(pending.exception(timeout=30)).__name__)
        """
    )
    assert lines(done) == [f"False ['{job}']", "RuntimeError"]
    wait_until(lambda: in_queue("slow_add") == [], timeout=60, message="job cancelled")


@pytest.mark.timeout(240)
def test_each_link_of_a_failing_chain_fails_with_the_first_links_error(batch):
    make = 'def make(directory):\n    return Executor(backend="slurm", cache_directory=directory)\n'
    assert lines(batch(make + CHAIN_AND_CANCEL)) == CHAIN_AND_CANCEL_OUTPUT


@pytest.mark.timeout(240)
def test_terminate_tasks_in_cache_hands_scancel_only_signed_job_ids(batch, tmp_path, wait_until):
    # An unrelated job of the user's, and job records rewritten as text (as
    # before records were signed): one that would read as an scancel option,
    # one with the job's real id. Neither is the store's own record.
    canary = subprocess.run(
        ["sbatch", "--parsable", "--job-name=canary", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        env=OUTSIDE,
        cwd=tmp_path,
        check=True,
        timeout=60,
    ).stdout.strip()
    try:
        done = batch(
            f"""
            import warnings
            from pmp import terminate_tasks_in_cache
            from pmp.client import store
            store.open_store(os.path.abspath("store"))
            for key, text in (("option", "--name=canary"), ("plain", "{canary}")):
                with open(os.path.join("store", "jobs", key), "w") as f:
                    f.write(text)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                print(terminate_tasks_in_cache("store"))
            print(sorted(str(w.message).split(":")[0] for w in caught))
            """
        )
        shown = lines(done)
        assert shown[0] == "[]"
        assert "ignoring the job record of 'option'" in shown[1], shown[1]
        assert "ignoring the job record of 'plain'" in shown[1], shown[1]
        # scancel returns once slurmctld has cancelled: a cancel would show now.
        assert in_queue("canary")[0] == "canary", "an unrelated job was cancelled"
    finally:
        subprocess.run(["scancel", canary], check=False, timeout=60)
    wait_until(lambda: in_queue("canary") == [], timeout=60, message="canary cancelled")


@pytest.mark.timeout(240)
def test_slurm_job_executor_outside_an_allocation_runs_srun_jobs_as_executorlib_does(batch):
    done = batch(
        """
        from pmp import SlurmJobExecutor
        with SlurmJobExecutor(max_cores=2) as exe:
            print(exe.info["backend"], "outside any Slurm allocation" in exe.info["backend_reason"])
            value, job = exe.submit(where, 1).result(timeout=120)
            print(value, job.isdigit())
        """
    )
    assert lines(done) == ["slurm True", "2 True"]


# ---- bad input that would change meaning --------------------------------------------------


@pytest.fixture
def submitted(slurm):
    """The ids of the jobs submitted for a function (named after it, or
    after it and a dot) since the test began, pending, running or ended;
    those still queued are cancelled at its end."""
    names = []

    def jobs(name):
        shown = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i|%j|%T"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        rows = [line.split("|") for line in shown.splitlines()]
        return {job for job, named, _ in rows if named.split(".")[0] == name}

    def since(name):
        return sorted(jobs(name) - before[name])

    def watch(name):
        names.append(name)
        before[name] = jobs(name)

    before = {}
    since.watch = watch
    yield since
    for name in names:
        for job in since(name):
            subprocess.run(["scancel", job], check=False, capture_output=True)


@pytest.mark.timeout(120)
def test_a_newline_in_an_sbatch_value_is_refused_and_nothing_is_submitted(
    batch, tmp_path, submitted
):
    submitted.watch("newline_probe")
    done = batch(
        """
        from pmp import SlurmClusterExecutor

        def newline_probe():
            return 1

        injected = "\\necho INJECTED"
        with Executor(backend="slurm", cache_directory="store") as exe:
            for bad in ({"partition": "debug" + injected},
                        {"slurm_cmd_args": ["--comment=x" + injected]},
                        {"command_line_argument_lst": ["--comment=x" + injected]}):
                try:
                    exe.submit(newline_probe, resource_dict=bad)
                except ValueError as error:
                    print(str(error).split(" in ")[0])
        try:
            SlurmClusterExecutor(cache_directory="store",
                                 resource_dict={"slurm_cmd_args": ["-J" + injected]})
        except ValueError as error:
            print(str(error).split(" in ")[0])
        try:
            Executor(backend="slurm", block_allocation=True, max_workers=1,
                     command_line_argument_lst=["--comment=x" + injected])
        except ValueError as error:
            print(str(error).split(" in ")[0])
        """
    )
    assert lines(done) == [
        "resource_dict key 'partition' holds the control character '\\n'",
        "resource_dict key 'slurm_cmd_args' holds the control character '\\n'",
        "resource_dict key 'command_line_argument_lst' holds the control character '\\n'",
        "resource_dict key 'slurm_cmd_args' holds the control character '\\n'",
        "command_line_argument_lst holds the control character '\\n'",
    ]
    assert submitted("newline_probe") == []
    assert not (tmp_path / "store" / "logs").exists() or not any(
        (tmp_path / "store" / "logs").iterdir()
    )


@pytest.mark.timeout(120)
def test_memory_max_that_slurm_would_read_as_all_or_nothing_is_refused(batch):
    done = batch(
        """
        with Executor(backend="slurm", cache_directory="store") as exe:
            for bad in (0.0001, float("inf"), float("nan")):
                try:
                    exe.submit(sum, [1], resource_dict={"memory_max": bad})
                except ValueError as error:
                    print(str(error).split(", got")[0])
        """
    )
    refused = (
        "resource_dict key 'memory_max' must be a finite number of GB of at least 1/1024 "
        "(1 MB, the least Slurm can limit a job to)"
    )
    assert lines(done) == [refused] * 3


@pytest.mark.timeout(120)
def test_a_job_its_partition_can_never_hold_is_refused_at_submit(batch, tmp_path, submitted):
    submitted.watch("too_big")
    # The test Slurm's partition: 2 nodes of 4 CPUs and 2 GPUs each. sinfo is
    # asked once per executor: a wrapper beside sbatch counts its calls.
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("sbatch", "squeue", "scancel", "scontrol", "srun"):
        (shims / tool).symlink_to(shutil.which(tool))
    sinfo = shims / "sinfo"
    sinfo.write_text(
        f'#!/bin/sh\necho >> "{tmp_path}/sinfo-calls"\nexec {shutil.which("sinfo")} "$@"\n'
    )
    sinfo.chmod(0o755)
    done = batch(
        f"""
        os.environ["PATH"] = {str(shims)!r} + os.pathsep + os.environ["PATH"]

        def too_big():
            return 1

        with Executor(backend="slurm", cache_directory="store") as exe:
            for bad in ({{"cores": 9}}, {{"threads_per_core": 5}}, {{"num_nodes": 3}},
                        {{"gpus_per_core": 3}}):
                try:
                    exe.submit(too_big, resource_dict=bad)
                except ValueError as error:
                    print(str(error).split("can never hold: ")[1].split(" (")[0])
            print(exe.submit(where, 1).result(timeout=120)[0])
        try:
            Executor(backend="slurm", block_allocation=True, max_workers=1, cores_per_worker=9)
        except ValueError as error:
            print(str(error).split(",")[0])
        """
    )
    assert lines(done) == [
        "its 9 CPUs are more than all the nodes have",
        "a task's 5 CPUs are more than any node has",
        "its 3 nodes are more than the partition has",
        "a task's 3 GPUs are more than any node has",
        "2",
        "each pilot job's worker asks for cores=9",
    ]
    assert submitted("too_big") == []
    assert (tmp_path / "sinfo-calls").read_text().count("\n") == 2  # once per executor


@pytest.mark.timeout(120)
def test_a_pmi_mode_that_srun_does_not_list_is_refused(batch):
    done = batch(
        """
        from pmp import SlurmClusterExecutor, SlurmJobExecutor

        for make in (SlurmJobExecutor, SlurmClusterExecutor):
            try:
                make(cache_directory="store", pmi_mode="bogus")
            except ValueError as error:
                print(str(error).split(":")[0])
        with SlurmJobExecutor(pmi_mode="pmi2"):
            print("pmi2 accepted")
        """
    )
    assert lines(done) == [
        "pmi_mode='bogus' is not an MPI type of this Slurm",
        "pmi_mode='bogus' is not an MPI type of this Slurm",
        "pmi2 accepted",
    ]
