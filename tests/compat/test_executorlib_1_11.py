"""What executorlib 1.11 has that pmp's executorlib classes lacked: the
executorlib columns of `get_cache_data`, `executorlib_worker_id` without
block allocation, `info`'s keys, `pmp.api`, and `log_obj_size` records that
a user sees without configuring logging. Through real executors and
workers; the batch-job parts (queue_id, input_args, get_cache_data_queue,
terminate_task_in_cache) are in tests/hpc/test_cache_jobs_slurm.py."""

import subprocess
import sys
import textwrap

import pytest
from pmp import SingleNodeExecutor, get_cache_data

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def worker_id(executorlib_worker_id):
    return executorlib_worker_id


def preload():
    return {"offset": 1}


def test_cache_rows_have_executorlibs_runtime_and_queue_id(tmp_path):
    with SingleNodeExecutor(cache_directory=str(tmp_path)) as exe:
        assert exe.submit(add, 1, b=2).result(RESULT_TIMEOUT) == 3
    (row,) = get_cache_data(str(tmp_path))
    assert row["output"] == 3
    assert row["runtime"] == row["duration"] >= 0
    # Run by the executor's own workers: no batch job, and the store keeps
    # only the outcome, so executorlib's input columns are left out.
    assert row["queue_id"] is None
    assert "input_args" not in row and "input_kwargs" not in row


def test_without_block_allocation_every_call_gets_worker_id_zero_as_in_executorlib():
    with SingleNodeExecutor(max_workers=2) as exe:
        ids = [exe.submit(worker_id).result(RESULT_TIMEOUT) for _ in range(3)]
    assert ids == [0, 0, 0]


def test_info_has_executorlibs_keys_beside_pmps(tmp_path):
    with SingleNodeExecutor(
        max_workers=2,
        block_allocation=True,
        init_function=preload,
        resource_dict={"cwd": str(tmp_path)},
    ) as exe:
        info = exe.info
    assert info["backend"] == "local" and info["max_workers"] == 2
    assert {
        key: info[key]
        for key in (
            "cores",
            "threads_per_core",
            "gpus_per_core",
            "cwd",
            "openmpi_oversubscribe",
            "hostname_localhost",
            "log_obj_size",
            "init_function",
            "restart_limit",
        )
    } == {
        "cores": 1,
        "threads_per_core": 1,
        "gpus_per_core": 0,
        "cwd": str(tmp_path),
        "openmpi_oversubscribe": False,
        "hostname_localhost": None,
        "log_obj_size": False,
        "init_function": preload,
        "restart_limit": 0,
    }
    with SingleNodeExecutor(max_workers=1) as exe:
        assert "init_function" not in exe.info  # executorlib's: block allocation only


def test_pmp_api_has_test_cluster_executor_storing_every_call(tmp_path, monkeypatch):
    from pmp.api import TestClusterExecutor

    monkeypatch.chdir(tmp_path)
    with TestClusterExecutor(max_workers=1) as exe:
        assert exe.submit(add, 2, b=3).result(RESULT_TIMEOUT) == 5
    assert [row["output"] for row in get_cache_data("pmp_cache")] == [5]


def test_pmp_api_refuses_executorlibs_worker_machinery_saying_why():
    with pytest.raises(ImportError, match="pmp.api has no SocketInterface: pmp starts its workers"):
        from pmp.api import SocketInterface  # noqa: F401
    with pytest.raises(ImportError, match="cancel calls with Future.cancel"):
        from pmp.api import cancel_items_in_queue  # noqa: F401


def test_cloudpickle_register_sends_a_module_workers_cannot_import_by_value(tmp_path, monkeypatch):
    # A module the client imports and the workers cannot: its file is gone
    # before any worker starts, so only a function pickled by value runs.
    (tmp_path / "vanishing_module.py").write_text(
        textwrap.dedent(
            """
            from pmp.api import cloudpickle_register

            cloudpickle_register(ind=1)

            def triple(x):
                return 3 * x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_module

    (tmp_path / "vanishing_module.py").unlink()
    try:
        with SingleNodeExecutor(max_workers=1) as exe:
            assert exe.submit(vanishing_module.triple, 4).result(RESULT_TIMEOUT) == 12
    finally:
        import cloudpickle

        cloudpickle.unregister_pickle_by_value(vanishing_module)
        del sys.modules["vanishing_module"]


def test_log_obj_size_reaches_stderr_without_any_logging_setup(tmp_path):
    # As executorlib's records on its logger: a script or a notebook that
    # configured no logging shows them (on stderr, under the cell).
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, threading
            from pmp import SingleNodeExecutor

            # sys.stderr, noting when the result's size was written: it is
            # logged from the thread that resolves the Future.
            class Stderr:
                def __init__(self, stream):
                    self.stream, self.result_logged = stream, threading.Event()

                def write(self, text):
                    if "result of add" in text:
                        self.result_logged.set()
                    return self.stream.write(text)

                def flush(self):
                    self.stream.flush()

            sys.stderr = Stderr(sys.stderr)

            def add(a, b):
                return a + b

            with SingleNodeExecutor(log_obj_size=True) as exe:
                print(exe.submit(add, 1, b=2).result(60))
            print(sys.stderr.result_logged.wait(60))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "True"]
    assert "submit add: function " in done.stderr, done.stderr
    assert "result of add: " in done.stderr, done.stderr
