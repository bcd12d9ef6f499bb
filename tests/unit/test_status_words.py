"""How a task's display words its state (`pmp.notebook.status_display`),
from made-up Futures: durations, a batch job's wait in words, what a task
printed as a terminal shows it, and the summary line of each state."""

import types
from concurrent.futures import Future

import pytest
from pmp.notebook import status_display
from pmp.notebook.status_display import JOB_REASONS, FutureStatus, job_words


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.0003, "0.3 ms"), (0.012, "12 ms"), (3.42, "3.4 s"), (125, "2 min 5 s")],
)
def test_a_duration_is_short_and_readable(seconds, said):
    assert status_display._duration(seconds) == said


def batch_future(state, reason="None", nodes=""):
    future = Future()
    future.job = "83"
    future.job_status = types.SimpleNamespace(
        state=state, reason=reason, nodes=nodes, system="Slurm"
    )
    return future


def test_a_pending_job_says_why_it_waits_in_words():
    said = job_words(batch_future("PENDING", "Priority"))
    assert said == f"job 83 waiting in Slurm's queue: Priority ({JOB_REASONS['Priority']})"


def test_a_reason_with_slurms_details_is_still_explained():
    said = job_words(batch_future("PENDING", "ReqNodeNotAvail, Reserved for maintenance"))
    assert said.endswith(
        f"ReqNodeNotAvail, Reserved for maintenance ({JOB_REASONS['ReqNodeNotAvail']})"
    )


def test_a_reason_pmp_does_not_know_is_shown_as_the_job_system_says_it():
    assert job_words(batch_future("PENDING", "AssocGrpCpuLimit")) == (
        "job 83 waiting in Slurm's queue: AssocGrpCpuLimit"
    )
    assert job_words(batch_future("PENDING")) == "job 83 waiting in Slurm's queue"


def test_a_running_job_names_its_nodes_and_one_not_asked_about_its_id():
    assert job_words(batch_future("RUNNING", nodes="node[1-2]")) == "job 83 on node[1-2]"
    attached = Future()
    attached.job = "84"
    assert job_words(attached) == "job 84"


def test_printed_output_shows_what_a_terminal_would_after_carriage_returns():
    chunks = [
        ("stdout", "progress 10%\rprogress 50%"),
        ("stdout", "\rprogress 100%\ndone\n"),
        ("stderr", "warning\n"),
    ]
    assert status_display._as_shown(chunks) == [
        ("stdout", "progress 100%\ndone\n"),
        ("stderr", "warning\n"),
    ]


def test_a_batch_futures_log_is_named_and_says_when_it_holds_more():
    future = Future()
    assert status_display.log_line(future) == ""
    future.log_path = "/store/logs/k.log"
    assert status_display.log_line(future) == "output: /store/logs/k.log"
    future.output_truncated = True
    assert "earlier lines are in that file" in status_display.log_line(future)


def summary(future):
    status = FutureStatus(future, "t")
    return status.summary(status.observe())


def test_each_state_has_its_summary_line():
    queued = Future()
    assert summary(queued).startswith("queued for ")
    running = Future()
    running.set_running_or_notify_cancel()
    running.place = (2, 4242, "node1")
    assert summary(running).startswith("running on node1, pid 4242 (worker 2) for ")
    done = Future()
    done.set_result([1, 2])
    assert summary(done).endswith(": [1, 2]")
    failed = Future()
    failed.set_exception(KeyError("x"))
    assert summary(failed).endswith(": KeyError: 'x'")
    cancelled = Future()
    cancelled.cancel()
    assert summary(cancelled) == "cancelled"


def test_a_queued_batch_job_says_its_job_in_its_summary():
    assert summary(batch_future("PENDING", "Resources")).endswith(
        f"job 83 waiting in Slurm's queue: Resources ({JOB_REASONS['Resources']})"
    )


def test_a_result_too_long_to_show_is_cut():
    done = Future()
    done.set_result("x" * 1000)
    assert summary(done).endswith("x…")
    assert len(summary(done).split(": ", 1)[1]) == 501
