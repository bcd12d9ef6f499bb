"""Nothing a task starts outlives its worker: a plain child, one in a session
of its own (`start_new_session=True`) and a double-forked daemon are all
ended when the worker ends (at shutdown, or when a fresh worker's call
returns). And a worker whose client is gone exits even when it can no longer
write why (its stderr pipe has no reader).

Each process a task starts writes its pid to a file, then sleeps long: the
test reads the pids and waits until none of them runs."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from pmp import Executor
from task_children import GONE_TIMEOUT, SLEEPER, assert_all_end, running, start_three

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="a task's descendants are ended with its worker on Linux (a subreaper)",
)

RESULT_TIMEOUT = 60


def test_what_a_task_started_ends_at_shutdown(block_allocation, tmp_path, wait_until):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        pids = exe.submit(start_three, sys.executable, str(tmp_path)).result(RESULT_TIMEOUT)
        if block_allocation:
            # The worker lives on: so does what its task started.
            assert all(running(pid) for pid in pids.values()), pids
    assert_all_end(pids, wait_until, "after shutdown")


def test_what_a_fresh_workers_call_started_ends_when_the_call_returns(tmp_path, wait_until):
    with Executor(max_workers=1, block_allocation=False) as exe:
        for round in range(2):
            directory = tmp_path / f"round-{round}"
            directory.mkdir()
            pids = exe.submit(start_three, sys.executable, str(directory)).result(RESULT_TIMEOUT)
            assert_all_end(pids, wait_until, f"after call {round} returned")


def crash_after_start_three(python, directory):
    pids = start_three(python, directory)
    with open(os.path.join(directory, "pids.json"), "w") as f:
        json.dump(pids, f)
    os.kill(os.getpid(), signal.SIGKILL)


def test_what_a_task_started_ends_when_its_fresh_worker_is_killed(tmp_path, wait_until):
    # Killed, the worker cleans nothing up itself: the zygote that forked it
    # adopts what it leaves and ends it.
    with Executor(max_workers=1, block_allocation=False) as exe:
        for _ in range(60):
            if exe.submit(os.getppid).result(RESULT_TIMEOUT) != os.getpid():
                break
            time.sleep(0.5)
        else:
            pytest.fail("calls never went through the zygote")
        with pytest.raises(Exception, match="signal 9"):
            exe.submit(crash_after_start_three, sys.executable, str(tmp_path)).result(
                RESULT_TIMEOUT
            )
        pids = json.loads((tmp_path / "pids.json").read_text())
        assert_all_end(pids, wait_until, "after the worker was killed")


def crash_after_a_child(python, directory):
    path = os.path.join(directory, "plain")
    subprocess.Popen([python, "-c", SLEEPER, path])
    while not os.path.exists(path):
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)


def test_what_a_killed_pool_worker_left_in_its_group_ends(tmp_path, wait_until):
    # Killed, the worker cleans nothing up itself: the scheduler kills its
    # process group once it has exited.
    with Executor(max_workers=1, block_allocation=True) as exe:
        with pytest.raises(Exception, match="signal 9"):
            exe.submit(crash_after_a_child, sys.executable, str(tmp_path)).result(RESULT_TIMEOUT)
        pids = {"plain": int((tmp_path / "plain").read_text())}
        assert_all_end(pids, wait_until, "after the worker was killed")


KILLED_CLIENT = """
import json, os, sys, time
from pmp import Executor
sys.path.insert(0, TESTS_DIRECTORY)
from task_children import start_three

def start_three_and_stay(python, directory):
    pids = start_three(python, directory)
    with open(os.path.join(directory, "pids.part"), "w") as f:
        json.dump(pids, f)
    os.rename(os.path.join(directory, "pids.part"), os.path.join(directory, "pids.json"))
    time.sleep(600)

exe = Executor(max_workers=1, block_allocation=BLOCK_VALUE)
exe.submit(start_three_and_stay, sys.executable, os.getcwd())
while not os.path.exists("pids.json"):
    time.sleep(0.02)
print(open("pids.json").read(), flush=True)
time.sleep(600)
"""


def test_what_a_task_started_ends_when_its_client_is_killed(
    block_allocation, start_script, wait_until
):
    # The worker's parent-death signal is SIGTERM, which it handles by
    # ending its descendants before it dies.
    script = KILLED_CLIENT.replace("BLOCK_VALUE", str(block_allocation))
    client = start_script(script.replace("TESTS_DIRECTORY", repr(os.path.dirname(__file__))))
    line = client.stdout.readline()
    assert line, client.stderr.read() if client.poll() is not None else "no output"
    pids = json.loads(line)
    assert all(running(pid) for pid in pids.values()), pids
    client.kill()
    client.wait(timeout=30)
    assert_all_end(pids, wait_until, "after the client was killed")


ORPHANED_WORKER = """
import ctypes, os, sys, time
from pmp import Executor

def outlive_my_client(directory):
    # A worker that its client's death does not kill, as on Flux, where
    # the broker, not the client, starts it: no parent-death signal.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, 0)
    with open(os.path.join(directory, "started"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
    with open(os.path.join(directory, "finished"), "w"):
        pass

exe = Executor(max_workers=1, block_allocation=True)
exe.submit(outlive_my_client, os.getcwd())
while not os.path.exists("started"):
    time.sleep(0.02)
time.sleep(0.1)
print(open("started").read(), flush=True)
time.sleep(600)
"""


def holders_of(link):
    """Pids of the processes with a descriptor on `link` (such as 'pipe:[123]')."""
    holders = set()
    for process in psutil.process_iter():
        try:
            fds = os.listdir(f"/proc/{process.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{process.pid}/fd/{fd}") == link:
                    holders.add(process.pid)
            except OSError:
                continue
    return holders


def test_a_worker_whose_client_is_killed_exits_though_its_stderr_has_no_reader(
    start_script, tmp_path, wait_until, monkeypatch
):
    monkeypatch.setenv("PMP_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("PMP_HEARTBEAT_TIMEOUT", "2")
    client = start_script(ORPHANED_WORKER)
    line = client.stdout.readline()
    assert line, client.stderr.read() if client.poll() is not None else "no output"
    worker = int(line)
    stderr_pipe = os.readlink(f"/proc/{worker}/fd/2")
    assert stderr_pipe.startswith("pipe:")
    client.kill()
    client.wait(timeout=30)
    # The client held the pipe's only read end: what the worker writes to
    # its stderr now fails with EPIPE.
    assert holders_of(stderr_pipe) <= {worker}
    wait_until(
        lambda: not running(worker),
        timeout=GONE_TIMEOUT,
        message=f"worker {worker} outlived its killed client",
    )
    assert not (tmp_path / "finished").exists()
