"""Resources: what `resource_dict` accepts and rejects, what the executor-level
parameters do to the workers, and `exe.info` (a pool of workers and its
init_function: test_executor_block_allocation.py).

Peer breakages these guard against (research/executorlib.md §1.2, §5): bad
per-call keys hung the executor in a background thread; threads_per_core
set no thread variables.
"""

import os
import re
import socket
import time

import psutil
import pytest
import thread_variables
from pmp import Executor

RESULT_TIMEOUT = 60

RESOURCE_KEYS = (
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "oversubscribe",
    "cwd",
    "executor",
    "hostname_localhost",
    "command_line_argument_lst",
    "cache_key",
    "cache_directory",
)


def add(a, b):
    return a + b


def getpid():
    return os.getpid()


def where_am_i():
    return os.getcwd()


def write_relative(name, text):
    with open(name, "w") as f:
        f.write(text)
    return os.path.abspath(name)


def count_concurrent(directory, wait_for, timeout=20.0):
    """Mark this task as running in ``directory``, wait until ``wait_for``
    tasks run at once (or ``timeout``), and report the most seen at once."""
    marker = os.path.join(directory, f"running-{os.getpid()}")
    with open(marker, "w"):
        pass
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            running = sum(name.startswith("running-") for name in os.listdir(directory))
            seen = max(seen, running)
            if running >= wait_for or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        running = sum(name.startswith("running-") for name in os.listdir(directory))
        return max(seen, running)
    finally:
        os.remove(marker)


# ---- resource_dict at submit --------------------------------------------------


@pytest.mark.parametrize("key", ["corez", "gpus_per_worker", "memory", "cache_keys"])
def test_unknown_resource_key_is_a_value_error_naming_it(block_allocation, key):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises(ValueError) as raised:
            exe.submit(add, 1, 2, resource_dict={key: 1})
        message = str(raised.value)
        assert key in message
        for allowed in RESOURCE_KEYS:
            assert allowed in message, f"{allowed!r} missing from {message!r}"
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cores", "two"),
        ("cores", True),
        ("cores", 1.0),
        ("cores", 0),
        ("cores", -1),
        ("threads_per_core", "2"),
        ("threads_per_core", 0),
        ("gpus_per_core", "0"),
        ("gpus_per_core", -1),
        ("oversubscribe", "no"),
        ("hostname_localhost", "yes"),
        ("cwd", 5),
        ("command_line_argument_lst", "--exclusive"),
    ],
)
def test_wrong_resource_value_is_a_value_error_naming_the_key(key, value):
    with Executor(max_cores=2) as exe:
        with pytest.raises(ValueError, match=re.escape(key)):
            exe.submit(add, 1, 2, resource_dict={key: value})
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def test_cores_beyond_max_cores_is_a_value_error_not_a_hang():
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match="cores"):
            exe.submit(add, 1, 2, resource_dict={"cores": 2})
        with pytest.raises(ValueError, match="cores"):
            exe.submit(add, 1, 2, resource_dict={"cores": 64})
        assert exe.submit(add, 1, 2, resource_dict={"cores": 1}).result(RESULT_TIMEOUT) == 3


def test_resource_dict_is_not_mutated():
    resources = {"cores": 1, "threads_per_core": 1}
    with Executor(max_cores=1) as exe:
        assert exe.submit(add, 1, 2, resource_dict=resources).result(RESULT_TIMEOUT) == 3
    assert resources == {"cores": 1, "threads_per_core": 1}


# ---- what the resources do ----------------------------------------------------


def test_cwd_on_executor_and_per_call(tmp_path):
    executor_dir = tmp_path / "executor"
    call_dir = tmp_path / "call"
    executor_dir.mkdir()
    call_dir.mkdir()
    with Executor(max_cores=2, cwd=str(executor_dir)) as exe:
        default = exe.submit(where_am_i)
        per_call = exe.submit(where_am_i, resource_dict={"cwd": str(call_dir)})
        written = exe.submit(write_relative, "out.txt", "hello")
        assert os.path.realpath(default.result(RESULT_TIMEOUT)) == os.path.realpath(executor_dir)
        assert os.path.realpath(per_call.result(RESULT_TIMEOUT)) == os.path.realpath(call_dir)
        assert written.result(timeout=RESULT_TIMEOUT)
    assert (executor_dir / "out.txt").read_text() == "hello"


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_per_core_sets_thread_variables(block_allocation, threads):
    with Executor(
        max_workers=1, threads_per_core=threads, block_allocation=block_allocation
    ) as exe:
        variables = exe.submit(thread_variables.read).result(timeout=RESULT_TIMEOUT)
    assert variables == dict.fromkeys(thread_variables.THREAD_VARIABLES, str(threads))


def test_threads_per_core_per_call():
    with Executor(max_cores=2) as exe:
        per_call = exe.submit(thread_variables.read, resource_dict={"threads_per_core": 2})
        assert per_call.result(RESULT_TIMEOUT) == dict.fromkeys(
            thread_variables.THREAD_VARIABLES, "2"
        )


def test_fresh_worker_per_call_without_block_allocation():
    with Executor(max_workers=1) as exe:
        pids = [exe.submit(getpid).result(timeout=RESULT_TIMEOUT) for _ in range(3)]
    assert len(set(pids)) == 3
    assert os.getpid() not in pids


def test_max_cores_one_runs_calls_one_at_a_time(tmp_path):
    with Executor(max_cores=1) as exe:
        futures = [exe.submit(count_concurrent, str(tmp_path), 2, 0.3) for _ in range(3)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [1, 1, 1]


def test_max_workers_two_runs_two_calls_at_once_never_three(block_allocation, tmp_path):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        futures = [exe.submit(count_concurrent, str(tmp_path), 2) for _ in range(4)]
        seen = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert max(seen) == 2, seen


def test_hostname_localhost_is_accepted():
    with Executor(max_cores=1, hostname_localhost=True) as exe:
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3
        per_call = exe.submit(add, 2, 3, resource_dict={"hostname_localhost": True})
        assert per_call.result(timeout=RESULT_TIMEOUT) == 5


def test_hostname_localhost_per_call_is_honoured_on_the_local_backend():
    # Local workers connect over loopback whatever the call says.
    with Executor(max_cores=1) as exe:
        per_call = exe.submit(add, 2, 3, resource_dict={"hostname_localhost": True})
        assert per_call.result(timeout=RESULT_TIMEOUT) == 5


def test_a_per_call_executor_other_than_the_executors_is_refused():
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match="resource_dict key 'executor'"):
            exe.submit(add, 1, 2, resource_dict={"executor": object()})
        same = exe.submit(add, 1, 2, resource_dict={"executor": None})
        assert same.result(timeout=RESULT_TIMEOUT) == 3


@pytest.mark.parametrize("where", ["executor", "call"])
@pytest.mark.parametrize("problem", ["missing", "a file"])
def test_a_cwd_that_is_not_a_directory_is_a_value_error_naming_it(tmp_path, where, problem):
    path = tmp_path / "nowhere"
    if problem == "a file":
        path.write_text("not a directory")
    expected = "does not exist" if problem == "missing" else "is not a directory"
    if where == "executor":
        with pytest.raises(ValueError, match=re.escape(f"{str(path)!r} {expected}")):
            Executor(max_cores=1, cwd=str(path))
        return
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match=re.escape(f"cwd' {str(path)!r} {expected}")):
            exe.submit(where_am_i, resource_dict={"cwd": path})
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3
    assert not path.is_dir()


def configure(resource_dict):
    return resource_dict


def configure_keyword_only(*, resource_dict=None):
    return resource_dict


def configure_kwargs(**kwargs):
    return kwargs


@pytest.mark.parametrize("function", [configure, configure_keyword_only])
def test_a_function_with_a_resource_dict_parameter_is_refused_with_resource_dict(function):
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match="parameter named 'resource_dict'"):
            exe.submit(function, resource_dict={"cores": 1})
        # Passed positionally there is no clash: the value reaches the function.
        if function is configure:
            assert exe.submit(function, {"x": 1}).result(RESULT_TIMEOUT) == {"x": 1}
        else:
            assert exe.submit(function).result(RESULT_TIMEOUT) is None
        # **kwargs does not name it: resource_dict is the call's resources.
        assert exe.submit(configure_kwargs, resource_dict={"cores": 1}).result(60) == {}


def test_oversubscribe_with_the_flux_backend_is_refused_when_the_executor_is_made(
    tmp_path, monkeypatch
):
    # Only detection needs `flux` on PATH and FLUX_URI: the refusal comes
    # before anything asks Flux a question, which this `flux` would fail.
    fake = tmp_path / "flux"
    fake.write_text("#!/bin/sh\necho 'flux must not be run' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLUX_URI", f"local://{tmp_path}/no-broker")
    with pytest.raises(ValueError, match="oversubscribe=True: the flux backend cannot"):
        Executor(max_cores=1, backend="flux", oversubscribe=True)


# ---- exe.info and backends ----------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "local", "mpi"])
def test_info(block_allocation, backend, wait_until):
    with Executor(max_workers=2, block_allocation=block_allocation, backend=backend) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        info = exe.info
        assert info["backend"] == "local"
        assert isinstance(info["backend_reason"], str) and info["backend_reason"]
        assert info["block_allocation"] is block_allocation
        assert info["max_workers"] == 2
        assert "max_cores" in info
        match = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", info["address"])
        assert match, info["address"]
        assert 0 < int(match.group(1)) < 65536
        assert isinstance(info["workers"], list)
        # One node, this machine, with the CPUs the executor may use.
        ((name, node),) = info["nodes"].items()
        assert name == socket.gethostname()
        assert node["cpus"] == info["max_cores"] and node["gpus"] == info["gpu_count"]
        assert node["lost"] is False
        if block_allocation:
            workers = wait_until(
                lambda: all(w["pid"] for w in exe.info["workers"]) and exe.info["workers"],
                timeout=30,
            )
            assert len(workers) == 2
            for worker in workers:
                assert {"id", "pid", "host", "state"} <= set(worker)
                assert psutil.pid_exists(worker["pid"])
                assert isinstance(worker["state"], str)
                # The scheduler placed it on its one node: this machine.
                assert worker["node"] == worker["host"]
            assert len({w["id"] for w in workers}) == 2


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend"):
        Executor(max_workers=1, backend="nonsense")


# ---- bad input that would change meaning ------------------------------------


@pytest.mark.parametrize("where", ["executor", "call"])
def test_an_empty_cwd_is_refused_not_taken_for_the_current_directory(where):
    if where == "executor":
        with pytest.raises(ValueError, match="cwd must be a directory's path or None"):
            Executor(max_cores=1, cwd="")
        return
    message = "resource_dict key 'cwd' must be a directory's"
    with Executor(max_cores=1) as exe, pytest.raises(ValueError, match=message):
        exe.submit(where_am_i, resource_dict={"cwd": ""})


@pytest.mark.parametrize("where", ["executor", "call"])
def test_an_empty_cache_directory_is_refused_not_made_in_the_current_directory(
    where, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    if where == "executor":
        with pytest.raises(ValueError, match="cache_directory must be a directory's path"):
            Executor(max_cores=1, cache_directory="")
    else:
        message = "'cache_directory' must be a directory's path"
        with Executor(max_cores=1) as exe, pytest.raises(ValueError, match=message):
            exe.submit(add, 1, 2, resource_dict={"cache_directory": ""})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["executor", "call"])
def test_a_newline_in_a_cwd_or_argument_is_refused(where, tmp_path):
    odd = tmp_path / "a\necho injected"
    odd.mkdir()
    if where == "executor":
        with pytest.raises(ValueError, match=r"^cwd holds the control character '\\n'"):
            Executor(max_cores=1, cwd=str(odd))
        return
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match=r"resource_dict key 'cwd' holds the control"):
            exe.submit(where_am_i, resource_dict={"cwd": str(odd)})
        with pytest.raises(ValueError, match="'command_line_argument_lst' holds the control"):
            exe.submit(add, 1, 2, resource_dict={"command_line_argument_lst": ["-x\n-y"]})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_cores": 10**12}, "max_cores"),
        ({"max_workers": 10**12}, "max_workers"),
        ({"cores_per_worker": 2**32}, "cores_per_worker"),
    ],
)
def test_a_number_beyond_what_the_scheduler_counts_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be <= 4294967295, got"):
        Executor(**kwargs)


def test_a_per_call_number_beyond_what_the_scheduler_counts_names_the_key():
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match="'restart_limit' must be <= 4294967295"):
            exe.submit(add, 1, 2, resource_dict={"restart_limit": 10**12})
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3
