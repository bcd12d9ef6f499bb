"""What a batch call's Future says as the scheduler's events come
(`pmp.client.batch_futures`): its job state, its output, and each way a
job can end, in the user's words. The events are the scheduler's own
classes, made here as its follower thread makes them; entries come from a
real store in tmp_path."""

from concurrent.futures import CancelledError

import pytest
from pmp import _pmp
from pmp.client import serialize, store
from pmp.client.batch_futures import BatchFutures
from pmp.client.errors import DependencyCancelledError, JobFailedError
from pmp.client.future import Future


@pytest.fixture
def opened(tmp_path):
    return store.open_store(str(tmp_path / "store"))


def entry(opened, key, value, state="done"):
    opened.write(key, "add", state, serialize.dumps_value(value), 100.0, 101.0, 103.5, "node7", 42)
    return opened.read(key)


def followed(*upstream):
    """A BatchFutures following one call (task 1), which reads `upstream`
    calls (tasks 2, 3, ...)."""
    futures = BatchFutures("Slurm")
    future = Future()
    future.job = None
    futures.add(1, future, {2 + i: f for i, f in enumerate(upstream)})
    return futures, future


def test_a_jobs_state_output_and_result_reach_its_future(opened):
    futures, future = followed()
    futures.on_events(
        [
            _pmp.JobKnown(1, "83"),
            _pmp.JobState(1, "PENDING", "Priority", "", None),
        ]
    )
    assert future.job == "83"
    assert future.job_status.state == "PENDING" and future.job_status.reason == "Priority"
    assert not future.running()
    futures.on_events(
        [
            _pmp.JobState(1, "RUNNING", "None", "node1", 1_765_000_000.0),
            _pmp.JobOutput(1, "hello\n", False),
        ]
    )
    assert future.running()
    assert future.place == ("job 83", None, "node1")
    futures.on_events([_pmp.JobStored(1, entry(opened, "k", 5), None)])
    assert future.result(timeout=0) == 5
    assert future.job_status.state == "COMPLETED", "its end, not the last state a poll saw"
    assert futures.open() == {}


def test_a_stored_failure_is_the_calls_own_exception(opened):
    futures, future = followed()
    futures.on_events([_pmp.JobKnown(1, "83")])
    failed = entry(opened, "k", KeyError("no such thing"), state="failed")
    futures.on_events([_pmp.JobStored(1, failed, None)])
    assert isinstance(future.exception(timeout=0), KeyError)
    assert future.job_status.state == "FAILED"


def test_an_entry_failing_its_check_fails_the_future_naming_the_job():
    futures, future = followed()
    futures.on_events([_pmp.JobKnown(1, "83"), _pmp.JobStored(1, None, "bad signature")])
    error = future.exception(timeout=0)
    assert isinstance(error, JobFailedError)
    assert str(error) == "the result of job 83 failed its check: bad signature"


@pytest.mark.parametrize(
    ("state", "exit_code", "words"),
    [
        ("TIMEOUT", None, "batch job 83 ended without a result: it reached its time limit"),
        ("FAILED", 7, "batch job 83 ended without a result: an upstream result is missing"),
        (None, None, "batch job 83 ended without a result: it was lost by Slurm"),
    ],
)
def test_a_job_that_ended_without_a_result_says_why(state, exit_code, words):
    futures, future = followed()
    futures.on_events([_pmp.JobKnown(1, "83")])
    futures.on_events([_pmp.JobEnded(1, "83", state, exit_code, None, "last line\n", False)])
    error = future.exception(timeout=0)
    assert isinstance(error, JobFailedError)
    assert str(error).startswith(words), str(error)
    assert error.job == "83" and error.state == state and error.log_tail == "last line\n"
    assert future.job_status.state == (state or "LOST")


def test_a_cancelled_dependent_is_cancelled_with_its_upstream():
    futures, future = followed(Future())
    futures.on_events([_pmp.JobEnded(1, "84", "CANCELLED", None, None, "", True)])
    assert isinstance(future.exception(timeout=0), DependencyCancelledError)


def test_a_dependent_fails_as_its_upstream_once_that_is_done(opened):
    upstream = Future()
    futures, future = followed(upstream)
    futures.on_events([_pmp.CallAsUpstream(1, 2, None)])
    assert not future.done(), "its upstream's Future has not failed yet"
    upstream.set_exception(KeyError("upstream"))
    assert isinstance(future.exception(timeout=0), KeyError)

    cancelled = Future()
    futures, future = followed(cancelled)
    cancelled.cancel()
    futures.on_events([_pmp.CallAsUpstream(1, 2, None)])
    assert isinstance(future.exception(timeout=0), DependencyCancelledError)

    # Stored up the chain by another client.
    futures, future = followed()
    failed = entry(opened, "head", ValueError("at the head"), state="failed")
    futures.on_events([_pmp.CallAsUpstream(1, None, failed)])
    assert str(future.exception(timeout=0)) == "at the head"


def test_a_job_the_job_system_did_not_take_fails_with_its_words():
    futures, future = followed()
    futures.on_events([_pmp.CallNotSubmitted(1, "sbatch refused the job of f.1: no partition")])
    error = future.exception(timeout=0)
    assert isinstance(error, RuntimeError)
    assert str(error) == "sbatch refused the job of f.1: no partition"


def test_shutdown_cancels_a_pending_future_and_fails_a_running_one():
    futures, pending = followed()
    futures.cancelled_by_shutdown(pending)
    assert pending.cancelled()

    futures, running = followed()
    futures.on_events([_pmp.JobKnown(1, "85"), _pmp.JobState(1, "RUNNING", "", "node2", None)])
    futures.cancelled_by_shutdown(running)
    error = running.exception(timeout=0)
    assert isinstance(error, CancelledError)
    assert str(error) == "job 85 was cancelled by shutdown"
    assert running.job_status.state == "CANCELLED"


def test_events_of_a_call_no_longer_followed_change_nothing(opened):
    futures, future = followed()
    futures.forget(1)
    futures.on_events([_pmp.JobStored(1, entry(opened, "k", 5), None)])
    assert not future.done()
