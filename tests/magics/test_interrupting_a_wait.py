"""`%%pmp submit --block` with the slurm backend from outside any allocation,
as in a notebook on a login node: an interrupt stops the wait, not the batch
job, and the one line it prints says how to stop the job. Against the real
test Slurm (slurmctld + slurmd on loopback); the kernel runs without any
SLURM_* variable."""

import subprocess
import time

import pytest
from kernel_session import run_and_interrupt, stream_text, wait_for_file


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
