"""A worker that dies (an exit code, a signal, killed): only its call fails,
with WorkerDiedError, and it is not run again, unless `restart_limit` says
how many times it may be; calls on other workers go on, and a pool gets a
replacement.

Peer breakage this guards against (research/executorlib.md §5): a crashing
task was re-queued until it had killed every worker of the pool.
"""

import os
import signal
import sys

import pytest
from gates import wait_for_file
from pmp import Executor, SingleNodeExecutor, WorkerDiedError

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def getpid():
    return os.getpid()


def crash_with_exit_code(log):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    sys.stderr.write("pmp-test: worker about to exit with code 3\n")
    sys.stderr.flush()
    os._exit(3)


def crash_with_segfault(log):
    import ctypes

    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    ctypes.string_at(0)


def die_until(path, survive_at):
    """Kill this worker's own process until the `survive_at`-th run."""
    with open(path, "a+") as file:
        file.seek(0)
        runs = len(file.read().splitlines())
        file.write("run\n")
    if runs < survive_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return runs


def _check_died(error, kind):
    assert isinstance(error, RuntimeError)
    if kind == "exit-code":
        assert "exit code 3" in str(error)
        assert error.exit_code == 3
        assert "pmp-test: worker about to exit with code 3" in error.stderr_tail
    else:
        assert "SIGSEGV" in str(error)
        assert error.signal in (signal.SIGSEGV, "SIGSEGV")
    assert isinstance(error.stderr_tail, str)


@pytest.mark.parametrize("kind", ["exit-code", "segfault"])
def test_worker_death_fails_only_its_task_which_is_not_rerun(
    block_allocation, kind, tmp_path, wait_until
):
    log = tmp_path / "crash.log"
    crash = crash_with_exit_code if kind == "exit-code" else crash_with_segfault
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        before = exe.submit(add, 1, 1)
        doomed = exe.submit(crash, str(log))
        after = [exe.submit(add, i, 1) for i in range(5)]
        with pytest.raises(WorkerDiedError) as raised:
            doomed.result(timeout=RESULT_TIMEOUT)
        assert before.result(timeout=RESULT_TIMEOUT) == 2
        assert [f.result(timeout=RESULT_TIMEOUT) for f in after] == [1, 2, 3, 4, 5]
        crashed_pid = int(log.read_text().split()[0])
        later_pid = exe.submit(getpid).result(timeout=RESULT_TIMEOUT)
        assert later_pid != crashed_pid
        if block_allocation:
            # The pool of one has a live replacement.
            def replaced():
                workers = exe.info["workers"]
                pids = [w["pid"] for w in workers]
                return len(workers) == 1 and crashed_pid not in pids and later_pid in pids

            wait_until(replaced, timeout=10, message=f"no replacement: {exe.info['workers']}")
    _check_died(raised.value, kind)
    assert log.read_text().splitlines() == [str(crashed_pid)]


def test_crash_leaves_tasks_on_other_workers_alone(tmp_path, make_gate):
    gate = make_gate()
    log = tmp_path / "crash.log"
    with Executor(max_workers=2, block_allocation=True) as exe:
        long_running = exe.submit(wait_for_file, gate.path, "survived")
        doomed = exe.submit(crash_with_exit_code, str(log))
        with pytest.raises(WorkerDiedError, match="exit code 3"):
            doomed.result(timeout=RESULT_TIMEOUT)
        assert not long_running.done()
        gate.open()
        assert long_running.result(timeout=RESULT_TIMEOUT) == "survived"
    assert len(log.read_text().splitlines()) == 1


def test_poison_tasks_do_not_exhaust_the_pool(block_allocation, tmp_path):
    log = tmp_path / "crash.log"
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        doomed = [exe.submit(crash_with_exit_code, str(log)) for _ in range(3)]
        fine = [exe.submit(add, i, i) for i in range(10)]
        for future in doomed:
            with pytest.raises(WorkerDiedError):
                future.result(timeout=RESULT_TIMEOUT)
        assert [f.result(timeout=RESULT_TIMEOUT) for f in fine] == [2 * i for i in range(10)]
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
    assert len(log.read_text().splitlines()) == 3


def test_restart_limit_runs_a_call_again_when_its_worker_is_killed(tmp_path):
    survived = tmp_path / "survived"
    with SingleNodeExecutor(max_workers=1, block_allocation=True, restart_limit=2) as exe:
        future = exe.submit(die_until, str(survived), 2)
        assert future.result(RESULT_TIMEOUT) == 2  # killed twice, done the third time
        assert "running it again (1 restart(s) left)" in future.output
        # Per call: one restart is not enough for a call that needs two.
        died = tmp_path / "died"
        with pytest.raises(WorkerDiedError):
            exe.submit(die_until, str(died), 2, resource_dict={"restart_limit": 1}).result(
                RESULT_TIMEOUT
            )
        assert died.read_text().count("run") == 2
        assert exe.submit(add, 1, 1).result(RESULT_TIMEOUT) == 2  # the pool goes on
    with SingleNodeExecutor() as exe:  # and without block allocation: a fresh process each time
        again = tmp_path / "again"
        future = exe.submit(die_until, str(again), 1, resource_dict={"restart_limit": 1})
        assert future.result(RESULT_TIMEOUT) == 1


def test_a_restart_limit_beyond_what_the_scheduler_counts_is_refused():
    with pytest.raises(ValueError, match="^restart_limit must be <= 4294967295"):
        SingleNodeExecutor(restart_limit=10**12)
    with pytest.raises(ValueError, match="^resource_dict key 'restart_limit' must be <="):
        SingleNodeExecutor(resource_dict={"restart_limit": 10**12})
