"""Fresh workers forked by the executor's zygote (Linux, local backend, no
block allocation): each call still gets a process of its own, with its own
variables, cwd and process group, and nothing of an earlier call; a crash is
reported as a spawned worker's would be; nothing outlives the executor or a
killed client. What users can observe of the zygote: a forked worker's
parent is the zygote (a pmp-worker process), not the client.

`warm_up` waits until calls go through the zygote (it is started with the
executor, and calls are spawned until it is ready)."""

import json
import os
import signal
import sys

import psutil
import pytest
from gates import wait_for_file
from pmp import Executor, WorkerDiedError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the zygote is Linux-only"
)

RESULT_TIMEOUT = 60


def where_am_i():
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "worker_id": os.environ.get("PMP_WORKER_ID"),
        "process_omp": os.popen("echo $OMP_NUM_THREADS").read().strip(),
        "secret_vars": sorted(k for k in os.environ if k in ("PMP_KEY", "PMP_ZYGOTE")),
    }


def variable(name):
    return os.environ.get(name)


def set_a_global():
    import builtins

    builtins.pmp_test_leak = "set by an earlier call"
    sys.modules["pmp_test_leak"] = sys
    return True


def sees_the_global():
    import builtins

    return hasattr(builtins, "pmp_test_leak") or "pmp_test_leak" in sys.modules


def crash_with_segfault():
    import ctypes

    sys.stderr.write("pmp-test: about to segfault\n")
    sys.stderr.flush()
    ctypes.string_at(0)


def exit_with_code_3():
    os.write(2, b"pmp-test: about to exit with code 3\n")
    os._exit(3)


def warm_up(exe, wait_until):
    """The zygote's pid, once a call ran in one of its children."""
    me = os.getpid()

    def forked():
        parent = exe.submit(os.getppid).result(RESULT_TIMEOUT)
        return parent if parent != me else None

    return wait_until(forked, timeout=30, message="no call went through the zygote")


def test_calls_get_distinct_processes_in_groups_of_their_own(wait_until):
    with Executor(max_cores=2) as exe:
        zygote = warm_up(exe, wait_until)
        assert psutil.Process(zygote).name() == "pmp-worker"
        seen = [f.result(RESULT_TIMEOUT) for f in [exe.submit(where_am_i) for _ in range(8)]]
    pids = {s["pid"] for s in seen}
    assert len(pids) == 8
    assert os.getpid() not in pids and zygote not in pids
    for s in seen:
        assert s["ppid"] == zygote
        assert s["pgid"] == s["pid"], "each worker leads its own process group"
        assert s["secret_vars"] == [], "neither the key nor the zygote flag reach user code"
    assert len({s["worker_id"] for s in seen}) == 8


def test_the_zygote_has_one_thread_to_fork(wait_until):
    with Executor(max_cores=1) as exe:
        zygote = warm_up(exe, wait_until)
        assert psutil.Process(zygote).num_threads() == 1


def test_threads_and_cwd_take_effect_per_call(tmp_path, wait_until):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with Executor(max_cores=2) as exe:
        zygote = warm_up(exe, wait_until)
        a = exe.submit(where_am_i, resource_dict={"threads_per_core": 2, "cwd": str(first)})
        b = exe.submit(where_am_i, resource_dict={"threads_per_core": 1, "cwd": str(second)})
        a, b = a.result(RESULT_TIMEOUT), b.result(RESULT_TIMEOUT)
    assert a["ppid"] == zygote and b["ppid"] == zygote
    assert (a["cwd"], a["omp"], a["process_omp"]) == (str(first), "2", "2")
    assert (b["cwd"], b["omp"], b["process_omp"]) == (str(second), "1", "1")


def test_state_does_not_leak_from_one_call_to_the_next(wait_until):
    with Executor(max_cores=1) as exe:
        warm_up(exe, wait_until)
        assert exe.submit(set_a_global).result(RESULT_TIMEOUT)
        assert exe.submit(sees_the_global).result(RESULT_TIMEOUT) is False


def test_a_variable_the_client_sets_later_reaches_later_calls(wait_until, monkeypatch):
    with Executor(max_cores=1) as exe:
        first_zygote = warm_up(exe, wait_until)
        monkeypatch.setenv("PMP_TEST_LATE_VARIABLE", "late")
        assert exe.submit(variable, "PMP_TEST_LATE_VARIABLE").result(RESULT_TIMEOUT) == "late"
        # Spawned until a zygote with the new environment is ready, then forked by it.
        second_zygote = warm_up(exe, wait_until)
        assert exe.submit(variable, "PMP_TEST_LATE_VARIABLE").result(RESULT_TIMEOUT) == "late"
    assert second_zygote != first_zygote


@pytest.mark.parametrize("kind", ["segfault", "exit-code"])
def test_a_forked_worker_that_dies_is_reported_with_its_signal_or_code(kind, wait_until):
    with Executor(max_cores=1) as exe:
        warm_up(exe, wait_until)
        crash = crash_with_segfault if kind == "segfault" else exit_with_code_3
        with pytest.raises(WorkerDiedError) as raised:
            exe.submit(crash).result(RESULT_TIMEOUT)
        # The next call still gets a worker (from the same zygote).
        assert exe.submit(variable, "OMP_NUM_THREADS").result(RESULT_TIMEOUT) == "1"
    error = raised.value
    if kind == "segfault":
        assert "SIGSEGV" in str(error)
        assert error.signal in (signal.SIGSEGV, "SIGSEGV")
        assert "pmp-test: about to segfault" in error.stderr_tail
    else:
        assert "exit code 3" in str(error)
        assert error.exit_code == 3
        assert "pmp-test: about to exit with code 3" in error.stderr_tail


def stop_myself():
    os.kill(os.getpid(), signal.SIGSTOP)


def test_a_forked_worker_that_stops_answering_is_killed_through_its_group(wait_until, monkeypatch):
    monkeypatch.setenv("PMP_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("PMP_HEARTBEAT_TIMEOUT", "2")
    with Executor(max_cores=1) as exe:
        warm_up(exe, wait_until)
        with pytest.raises(WorkerDiedError) as raised:
            exe.submit(stop_myself).result(RESULT_TIMEOUT)
        assert exe.submit(variable, "OMP_NUM_THREADS").result(RESULT_TIMEOUT) == "1"
    assert "stopped answering heartbeats" in str(raised.value)
    assert raised.value.signal in (signal.SIGKILL, "SIGKILL")


def test_a_dead_zygote_fails_its_running_calls_and_is_replaced(
    make_gate, tmp_path, wait_until, process_gone
):
    gate = make_gate()
    with Executor(max_cores=1) as exe:
        zygote = warm_up(exe, wait_until)
        started = tmp_path / "started"
        running = exe.submit(_mark_then_wait, str(started), gate.path)
        wait_until(started.exists, timeout=30)
        os.kill(zygote, signal.SIGKILL)
        with pytest.raises(WorkerDiedError):
            running.result(RESULT_TIMEOUT)
        assert warm_up(exe, wait_until) != zygote
    wait_until(lambda: process_gone(zygote), timeout=10)


def _mark_then_wait(started, gate):
    with open(started, "w"):
        pass
    return wait_for_file(gate, "finished")


def test_shutdown_leaves_neither_zygote_nor_child(wait_until, process_gone):
    with Executor(max_cores=2) as exe:
        zygote = warm_up(exe, wait_until)
        pids = [f.result(RESULT_TIMEOUT) for f in [exe.submit(os.getpid) for _ in range(4)]]
    wait_until(
        lambda: all(process_gone(pid) for pid in [zygote, *pids]),
        timeout=10,
        message="the zygote or a worker outlived the executor",
    )
    left = [p for p in psutil.Process().children(recursive=True) if p.pid in {zygote, *pids}]
    assert left == []


KILLED_CLIENT = """
import json, os, time
from pmp import Executor

def nap(directory):
    with open(os.path.join(directory, f"pid-{os.getpid()}"), "w"):
        pass
    time.sleep(300)

exe = Executor(max_cores=2)
me = os.getpid()
deadline = time.monotonic() + 60
zygote = me
while zygote == me and time.monotonic() < deadline:
    zygote = exe.submit(os.getppid).result()
futures = [exe.submit(nap, os.getcwd()) for _ in range(2)]
while time.monotonic() < deadline:
    pids = [int(n[4:]) for n in os.listdir(".") if n.startswith("pid-")]
    if len(pids) == 2:
        break
    time.sleep(0.02)
print(json.dumps({"zygote": zygote, "workers": pids}), flush=True)
time.sleep(600)
"""


def test_a_killed_client_leaves_neither_zygote_nor_child(start_script, process_gone, wait_until):
    client = start_script(KILLED_CLIENT)
    line = client.stdout.readline()
    assert line, client.stderr.read() if client.poll() is not None else "no output"
    seen = json.loads(line)
    assert seen["zygote"] != client.pid
    assert len(seen["workers"]) == 2
    for pid in seen["workers"]:
        assert psutil.Process(pid).ppid() == seen["zygote"]
    client.kill()
    client.wait(timeout=30)
    everything = [seen["zygote"], *seen["workers"]]
    wait_until(
        lambda: all(process_gone(pid) for pid in everything),
        timeout=15,
        message=f"{everything} outlived their killed client",
    )


def test_each_call_gets_its_own_gpu(run_script):
    completed = run_script(
        """
        import os, time
        os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"
        from pmp import Executor

        def device():
            time.sleep(0.2)
            return os.getppid(), os.environ["CUDA_VISIBLE_DEVICES"]

        gpu = {"gpus_per_core": 1}
        with Executor(max_cores=2) as exe:
            me = os.getpid()
            while exe.submit(os.getppid, resource_dict=gpu).result() == me:
                pass
            for _ in range(3):
                futures = [exe.submit(device, resource_dict=gpu) for _ in range(2)]
                seen = [f.result() for f in futures]
                assert all(parent != me for parent, _ in seen), seen
                print(sorted(device for _, device in seen))
        """,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["['3', '5']"] * 3
