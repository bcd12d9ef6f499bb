"""The concurrent.futures contract (submit/shutdown/cancel, wait,
as_completed, asyncio; map: test_executor_map_and_batched.py) and the life
of worker processes: none is left after shutdown or after the client
process is killed.

Peer breakages these guard against (research/executorlib.md §1.3, §6):
shutdown(cancel_futures=True) did not cancel queued calls; shutdown hung
after a failure in a background thread.
"""

import asyncio
import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, CancelledError, as_completed, wait
from concurrent.futures import TimeoutError as FuturesTimeoutError

import psutil
import pytest
from gates import wait_for_file
from pmp import Executor, Future

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def pid_and_group():
    return os.getpid(), os.getpgid(0)


def mark_then_wait(started, gate, value):
    with open(started, "w"):
        pass
    return wait_for_file(gate, value)


def record(path, value):
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


# ---- submit / shutdown --------------------------------------------------------


def test_submit_after_shutdown_raises_runtime_error(block_allocation):
    exe = Executor(max_workers=1, block_allocation=block_allocation)
    assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3
    exe.shutdown()
    with pytest.raises(RuntimeError):
        exe.submit(add, 1, 2)
    with pytest.raises(RuntimeError):
        list(exe.map(add, [1], [2]))
    exe.shutdown()  # a second shutdown is harmless
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        pass
    with pytest.raises(RuntimeError):
        exe.submit(add, 1, 2)


def test_context_manager_returns_the_executor():
    with Executor(max_workers=1) as exe:
        assert isinstance(exe, Executor)


def test_shutdown_waits_for_all_calls(block_allocation):
    exe = Executor(max_workers=2, block_allocation=block_allocation)
    futures = [exe.submit(add, i, i) for i in range(8)]
    exe.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [2 * i for i in range(8)]


def test_shutdown_without_wait_returns_and_work_completes(block_allocation, make_gate):
    gate = make_gate()
    exe = Executor(max_workers=1, block_allocation=block_allocation)
    running = exe.submit(wait_for_file, gate.path, "finished")
    queued = exe.submit(add, 20, 22)
    exe.shutdown(wait=False)  # must not block on the gated call
    assert not running.done()
    gate.open()
    assert running.result(timeout=RESULT_TIMEOUT) == "finished"
    assert queued.result(timeout=RESULT_TIMEOUT) == 42


def test_shutdown_cancel_futures(block_allocation, make_gate, tmp_path, wait_until):
    gate = make_gate()
    started = tmp_path / "started"
    ran = tmp_path / "ran.txt"
    exe = Executor(max_workers=1, block_allocation=block_allocation)
    running = exe.submit(mark_then_wait, str(started), gate.path, "running one finished")
    queued = [exe.submit(record, str(ran), i) for i in range(5)]
    wait_until(started.exists, timeout=30)

    def open_gate_once_cancelled():
        deadline = time.monotonic() + 30
        while not all(f.cancelled() for f in queued) and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.open()

    opener = threading.Thread(target=open_gate_once_cancelled)
    opener.start()
    exe.shutdown(wait=True, cancel_futures=True)
    opener.join()
    assert running.result(timeout=RESULT_TIMEOUT) == "running one finished"
    assert [f.cancelled() for f in queued] == [True] * 5
    for future in queued:
        with pytest.raises(CancelledError):
            future.result(timeout=0)
    assert not ran.exists()


def test_cancel_a_queued_call(block_allocation, make_gate, tmp_path, wait_until):
    gate = make_gate()
    started = tmp_path / "started"
    ran = tmp_path / "ran.txt"
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        running = exe.submit(mark_then_wait, str(started), gate.path, "done")
        queued = exe.submit(record, str(ran), "should never run")
        wait_until(started.exists, timeout=30)
        wait_until(running.running, timeout=30)
        assert queued.cancel() is True
        assert queued.cancelled()
        assert queued.done()
        assert running.cancel() is False  # already running: concurrent.futures semantics
        with pytest.raises(CancelledError):
            queued.result(timeout=0)
        gate.open()
        assert running.result(timeout=RESULT_TIMEOUT) == "done"
        assert running.cancel() is False  # finished
        assert not running.cancelled()
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3
    assert not ran.exists()


def test_result_timeout_and_wait_timeout(block_allocation, make_gate):
    gate = make_gate()
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        blocked = exe.submit(wait_for_file, gate.path, 1)
        with pytest.raises(FuturesTimeoutError):
            blocked.result(timeout=0.05)
        done, not_done = wait([blocked], timeout=0.05)
        assert not done and not_done == {blocked}
        gate.open()
        assert blocked.result(timeout=RESULT_TIMEOUT) == 1


def test_many_threads_waiting_in_result_all_wake(block_allocation, make_gate):
    """result() waits without a Condition of its own until one exists (see
    pmp.client.future): waiters of either kind, timeouts and a cancel while
    threads wait must all still wake the right threads."""
    gate = make_gate()
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        blocked = exe.submit(wait_for_file, gate.path, 7)
        queued = exe.submit(add, 1, 2)
        outcomes = {}

        def take(name, future, timeout=RESULT_TIMEOUT):
            try:
                outcomes[name] = future.result(timeout=timeout)
            except BaseException as error:  # noqa: BLE001 - recorded for the asserts
                outcomes[name] = type(error)

        threads = [threading.Thread(target=take, args=(f"r{i}", blocked)) for i in range(4)]
        threads.append(threading.Thread(target=take, args=("short", blocked, 0.05)))
        threads += [threading.Thread(target=take, args=(f"q{i}", queued)) for i in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # all of them waiting (the short one timed out)
        assert outcomes == {"short": FuturesTimeoutError}
        # A waiter of the other kind joins: wait() makes the Condition.
        waited = []
        waiting = threading.Thread(
            target=lambda: waited.append(wait([blocked], timeout=RESULT_TIMEOUT))
        )
        waiting.start()
        assert queued.cancel()
        gate.open()
        for thread in [*threads, waiting]:
            thread.join(RESULT_TIMEOUT)
            assert not thread.is_alive()
        assert outcomes == {
            "short": FuturesTimeoutError,
            **{f"r{i}": 7 for i in range(4)},
            **{f"q{i}": CancelledError for i in range(2)},
        }
        assert waited[0].done == {blocked}
        assert blocked.result(timeout=0) == 7 and blocked.exception(timeout=0) is None


# ---- futures interoperate -------------------------------------------------------


def test_wait_and_as_completed(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        futures = [exe.submit(add, i, 1) for i in range(10)]
        assert all(isinstance(f, Future) for f in futures)
        done, not_done = wait(futures, timeout=RESULT_TIMEOUT)
        assert not not_done and done == set(futures)
        completed = list(as_completed(futures, timeout=RESULT_TIMEOUT))
        assert sorted(f.result() for f in completed) == list(range(1, 11))
        failing = exe.submit(fail, "first exception")
        done, _ = wait([failing], timeout=RESULT_TIMEOUT, return_when=FIRST_EXCEPTION)
        assert failing in done
        assert isinstance(failing.exception(), ValueError)


def test_asyncio_wrap_future(block_allocation):
    async def gather(exe):
        futures = [asyncio.wrap_future(exe.submit(add, i, i)) for i in range(5)]
        return await asyncio.wait_for(asyncio.gather(*futures), RESULT_TIMEOUT)

    async def failing(exe):
        await asyncio.wrap_future(exe.submit(fail, "async failure"))

    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        assert asyncio.run(gather(exe)) == [0, 2, 4, 6, 8]
        with pytest.raises(ValueError, match="async failure"):
            asyncio.run(asyncio.wait_for(failing(exe), RESULT_TIMEOUT))


def test_done_callbacks(block_allocation):
    called = threading.Event()
    seen = []

    def callback(future):
        seen.append(future.result())
        called.set()

    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(add, 2, 2)
        future.add_done_callback(callback)
        assert called.wait(RESULT_TIMEOUT)
        late = []
        future.add_done_callback(lambda f: late.append(f.result()))  # runs at once
        assert late == [4]
    assert seen == [4]


def test_independent_executors_at_once():
    a = Executor(max_workers=1)
    b = Executor(max_workers=1, block_allocation=True)
    c = Executor(max_workers=2, block_allocation=True)
    with a, b, c:
        assert len({a.info["address"], b.info["address"], c.info["address"]}) == 3
        futures = [exe.submit(add, i, 100) for i, exe in enumerate((a, b, c) * 4)]
        results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert results == [i + 100 for i in range(12)]


def test_exception_inside_with_body_still_shuts_down():
    with pytest.raises(ZeroDivisionError), Executor(max_workers=2, block_allocation=True) as exe:
        future = exe.submit(add, 1, 2)
        1 / 0  # noqa: B018
    assert future.result(timeout=RESULT_TIMEOUT) == 3
    with pytest.raises(RuntimeError):
        exe.submit(add, 1, 2)


# ---- worker processes ---------------------------------------------------------


def test_workers_are_children_while_running_and_gone_after(
    block_allocation, worker_descendants, process_gone, wait_until
):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        pids = {f.result(RESULT_TIMEOUT)[0] for f in [exe.submit(pid_and_group) for _ in range(4)]}
        if block_allocation:
            mine = {p.pid for p in worker_descendants()}
            assert pids <= mine
    wait_until(lambda: all(process_gone(pid) for pid in pids), timeout=10)


def test_workers_run_in_their_own_process_group(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        groups = [f.result(RESULT_TIMEOUT) for f in [exe.submit(pid_and_group) for _ in range(4)]]
    mine = os.getpgid(0)
    for _, group in groups:
        assert group != mine


KILLED_CLIENT = """
import json, os, sys, time
from pmp import Executor

def nap(directory):
    with open(os.path.join(directory, f"pid-{os.getpid()}"), "w"):
        pass
    time.sleep(300)

BLOCK = BLOCK_VALUE
exe = Executor(max_workers=2, block_allocation=BLOCK)
futures = [exe.submit(nap, os.getcwd()) for _ in range(4)]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if BLOCK:
        pids = [w["pid"] for w in exe.info["workers"]]
        ready = len(pids) == 2 and all(pids)
    else:
        pids = [int(n[4:]) for n in os.listdir(".") if n.startswith("pid-")]
        ready = len(pids) == 2
    if ready:
        break
    time.sleep(0.02)
print(json.dumps(pids), flush=True)
time.sleep(600)
"""


def test_killed_client_leaves_no_worker(block_allocation, start_script, process_gone, wait_until):
    client = start_script(KILLED_CLIENT.replace("BLOCK_VALUE", str(block_allocation)))
    line = client.stdout.readline()
    assert line, client.stderr.read() if client.poll() is not None else "no output"
    pids = json.loads(line)
    assert len(pids) == 2
    for pid in pids:
        assert psutil.Process(pid).name() == "pmp-worker"
    client.kill()
    client.wait(timeout=30)
    wait_until(
        lambda: all(process_gone(pid) for pid in pids),
        timeout=15,
        message=f"workers {pids} outlived their killed client",
    )


def test_script_without_shutdown_exits_and_leaves_no_worker(
    block_allocation, run_script, process_gone, wait_until
):
    completed = run_script(
        f"""
        import json, os
        from pmp import Executor

        def add(a, b):
            return a + b

        exe = Executor(max_workers=2, block_allocation={block_allocation})
        futures = [exe.submit(add, i, 1) for i in range(4)]
        print([f.result() for f in futures])
        print(json.dumps(sorted({{exe.submit(os.getpid).result() for _ in range(4)}})))
        """,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    first, second = completed.stdout.splitlines()
    assert first == "[1, 2, 3, 4]"
    pids = json.loads(second)
    wait_until(lambda: all(process_gone(pid) for pid in pids), timeout=15)


def test_a_script_never_loads_the_notebook_or_ipython(run_script):
    # The client sits below the notebook: submitting, mapping and reading
    # results and failures in a script must not import `pmp.notebook`
    # (nor IPython through it).
    completed = run_script(
        """
        import sys
        from pmp import Executor

        def fail():
            raise ValueError("no")

        with Executor(max_workers=1) as exe:
            print(exe.submit(sum, [1, 2]).result(), list(exe.map(abs, [-1, -2])))
            print(repr(exe.submit(fail).exception()))
        print(sorted(m for m in sys.modules if m.startswith(("pmp.notebook", "IPython"))))
        """,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["3 [1, 2]", "ValueError('no')", "[]"]
