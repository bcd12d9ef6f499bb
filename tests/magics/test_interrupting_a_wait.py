"""Interrupting a cell that waits for its task (`%%pmp submit --block`):
the interrupt stops the wait, never the task, and the one line it prints
says what becomes of the task and how to stop it. A running local task
runs to its end; a queued one can still be cancelled; a batch job (the
slurm backend from outside any allocation, as in a notebook on a login
node, against the real test Slurm) runs on until `%pmp cancel` stops it."""

import subprocess
import time

import pytest
from kernel_session import run_and_interrupt, stream_text, wait_for_file


@pytest.mark.timeout(120)
def test_interrupting_a_block_wait_says_in_one_line_that_the_task_keeps_running(
    pmp_kernel, tmp_path
):
    go = tmp_path / "go"
    cell = f"%%pmp submit --name long --block\n{wait_for_file(go)}'finished'"
    reply, messages = run_and_interrupt(pmp_kernel, cell, lambda shown: "running" in shown)
    assert reply["status"] == "error", reply
    (error,) = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert error["traceback"] == [
        (
            "stopped waiting; task long keeps running to its end "
            "(%pmp cancel stops only queued tasks and batch jobs)"
        )
    ], error
    assert "Traceback" not in stream_text(messages)
    # What the line says is so: the task runs on, cancel cannot stop it,
    # and it ends with its result.
    _, messages = pmp_kernel.run("%pmp cancel long")
    assert "cancelled 0 of 1" in stream_text(messages)
    go.touch()
    _, messages = pmp_kernel.run("long.result()")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "'finished'"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("line", "expected", "cancel"),
    [
        (
            "%pmp submit --name second --block sum([1, 2])",
            "stopped waiting; task second is still queued (`%pmp cancel second` cancels it)",
            "%pmp cancel second",
        ),
        (
            "%pmp submit --block sum([1, 2])",
            (
                "stopped waiting; task sum is still queued "
                "(`%pmp cancel all` cancels it, with the notebook's other tasks)"
            ),
            None,
        ),
    ],
)
def test_interrupting_the_wait_for_a_queued_task_says_how_to_cancel_it(
    pmp_kernel, tmp_path, line, expected, cancel
):
    go = tmp_path / "go"
    pmp_kernel.run("%pmp config --max-workers 1 --block-allocation")
    pmp_kernel.run(f"%%pmp submit --name first\n{wait_for_file(go)}1")
    reply, messages = run_and_interrupt(pmp_kernel, line, lambda shown: "queued" in shown)
    assert reply["status"] == "error", reply
    (error,) = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert error["traceback"] == [expected], error
    if cancel:
        # As the line says: cancel takes it back before it runs.
        _, messages = pmp_kernel.run(cancel)
        assert "cancelled 1 of 1" in stream_text(messages)
    go.touch()
    _, messages = pmp_kernel.run("first.result()")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "1"


@pytest.mark.timeout(240)
def test_interrupting_the_wait_for_a_batch_job_says_cancel_stops_it(kernel_outside_slurm, tmp_path):
    session = kernel_outside_slurm
    started, go = tmp_path / "started", tmp_path / "go"
    reply, _ = session.run(f"%pmp config --backend slurm --cache-directory {tmp_path / 'store'}")
    assert reply["status"] == "ok", reply
    cell = (
        f"%%pmp submit --name long --block\nopen({str(started)!r}, 'w').close()\n"
        f"{wait_for_file(go)}'finished'"
    )
    reply, messages = run_and_interrupt(session, cell, lambda shown: started.exists(), 180)
    assert reply["status"] == "error", reply
    (error,) = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert error["traceback"] == [
        "stopped waiting; task long keeps running (`%pmp cancel long` stops it)"
    ], error
    # As the line says: the job ran on, and cancel stops it.
    _, messages = session.run("print(long.job)")
    job = stream_text(messages).strip()
    assert squeue_state(job) == ["RUNNING"], job
    session.run("%pmp cancel long")
    while squeue_state(job) == ["RUNNING"]:  # scancel returns before the job ends
        time.sleep(0.2)
    assert squeue_state(job) in ([], ["CANCELLED"], ["COMPLETING"]), job


def squeue_state(job):
    shown = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
    )
    return shown.stdout.split()
