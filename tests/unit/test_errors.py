"""The exceptions a pmp Future raises besides the function's own
(`pmp.client.errors`): what they carry, and that they survive a pickle."""

import pickle

from pmp.client import serialize
from pmp.client.errors import JobFailedError, RemoteError, WorkerDiedError, exception_of


def test_a_dead_workers_error_shows_its_stderr_and_keeps_code_and_signal():
    error = WorkerDiedError("the worker died", exit_code=-9, signal=9, stderr_tail="Killed\n")
    assert str(error) == "the worker died\nlast lines of the worker's stderr:\nKilled\n"
    assert (error.exit_code, error.signal, error.stderr_tail) == (-9, 9, "Killed\n")


def test_a_dead_workers_error_pickles_with_its_message_code_and_signal():
    error = WorkerDiedError("the worker died", exit_code=3, signal=None, stderr_tail="boom")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is WorkerDiedError
    assert str(again) == str(error)
    assert (again.exit_code, again.signal) == (3, None)


def test_a_failed_jobs_error_shows_its_log_and_names_job_and_state():
    error = JobFailedError("job 83 reached its time limit", "83", "TIMEOUT", "step 4 of 9\n")
    assert str(error).endswith("last lines of the job's output:\nstep 4 of 9\n")
    assert (error.job, error.state) == ("83", "TIMEOUT")
    assert str(JobFailedError("no log")) == "no log"


def test_a_tasks_exception_comes_back_from_its_frames():
    raised = exception_of(serialize.dumps_value(ValueError("bad input")))
    assert type(raised) is ValueError
    assert str(raised) == "bad input"


def test_frames_that_hold_no_exception_or_do_not_unpickle_are_a_remote_error():
    not_an_error = exception_of(serialize.dumps_value(42))
    assert isinstance(not_an_error, RemoteError)
    assert "a non-exception: 42" in str(not_an_error)
    broken = exception_of([b"not a pickle"])
    assert isinstance(broken, RemoteError)
    assert "cannot be unpickled here" in str(broken)
