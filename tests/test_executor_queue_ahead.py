"""Tasks sent ahead: a busy pool worker holds the next task, so it starts it
without a round trip to the scheduler. Sent ahead is not started: such a
task is not running(), can be cancelled, moves to a worker that falls idle,
and is not lost with a worker that dies before starting it."""

import os

import pytest
from gates import wait_for_file
from pmp import Executor

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def die_at(gate):
    wait_for_file(gate, None)
    os._exit(9)


@pytest.fixture(params=["on", "off"])
def queue_ahead(request, monkeypatch):
    """Each test holds with tasks sent ahead and without (PMP_QUEUE_AHEAD=0)."""
    if request.param == "off":
        monkeypatch.setenv("PMP_QUEUE_AHEAD", "0")
    return request.param


def test_a_task_behind_a_long_one_runs_on_the_worker_that_falls_idle(make_gate, queue_ahead):
    gate = make_gate()
    with Executor(max_workers=2, block_allocation=True) as exe:
        long = exe.submit(wait_for_file, gate.path, "long")
        quick = [exe.submit(add, i, 1) for i in range(20)]
        # All of them finish while the long task still runs: none stays
        # behind it on its worker.
        assert [f.result(timeout=RESULT_TIMEOUT) for f in quick] == list(range(1, 21))
        assert not long.done()
        assert long.place not in {f.place for f in quick}
        gate.open()
        assert long.result(timeout=RESULT_TIMEOUT) == "long"


def test_a_task_sent_ahead_is_not_running_and_cancels(make_gate, queue_ahead):
    gate = make_gate()
    with Executor(max_workers=1, block_allocation=True) as exe:
        first = exe.submit(wait_for_file, gate.path, "first")
        second = exe.submit(add, 1, 2)
        third = exe.submit(add, 3, 4)
        assert not second.running()
        assert second.cancel() is True
        assert second.cancelled()
        gate.open()
        assert first.result(timeout=RESULT_TIMEOUT) == "first"
        assert third.result(timeout=RESULT_TIMEOUT) == 7


def test_the_task_held_ahead_by_a_worker_that_dies_runs_on_its_replacement(make_gate, queue_ahead):
    gate = make_gate()
    with Executor(max_workers=1, block_allocation=True) as exe:
        dying = exe.submit(die_at, gate.path)
        behind = exe.submit(add, 1, 2)
        gate.open()
        with pytest.raises(Exception, match="died|exit|signal|lost"):
            dying.result(timeout=RESULT_TIMEOUT)
        # Never started, so not lost, though it may not be restarted.
        assert behind.result(timeout=RESULT_TIMEOUT) == 3


def test_many_tasks_finish_in_order_of_submission_on_one_worker(queue_ahead):
    with Executor(max_workers=1, block_allocation=True) as exe:
        futures = [exe.submit(add, i, 0) for i in range(500)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == list(range(500))
