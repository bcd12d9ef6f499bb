"""A pool of workers (`block_allocation=True`): how many it starts, that
calls reuse them, that it can be resized while busy, what a call may not
ask of it, each worker's id, and init_function, which fills a worker's
namespace once for every call it runs.

Peer breakages these guard against (research/executorlib.md §1.2, §5):
per-call resources in block mode were silently ignored; init values were
injected even when the call passed them positionally ("got multiple
values"), and never into keyword-only parameters.
"""

import os
import re

import pytest
from gates import wait_for_file
from pmp import Executor, SingleNodeExecutor

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def getpid():
    return os.getpid()


def where_am_i():
    return os.getcwd()


def calc(i, j, k):
    return i + j + k


def keyword_only(a, *, k):
    return a + k


def only_var_keywords(**kwargs):
    return sorted(kwargs)


def uses_dataset(i, data):
    return int(data[i])


def init_function():
    return {"j": 4, "k": 3, "l": 2}


def init_dataset():
    import numpy as np

    return {"data": np.arange(100) * 2}


def make_counting_init(log):
    def counting_init():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return {"j": 4, "k": 3}

    return counting_init


def calc_and_pid(i, j, k):
    return i + j + k, os.getpid()


@pytest.mark.parametrize(
    ("key", "value"),
    [("threads_per_core", 2), ("cwd", "SUBDIR"), ("oversubscribe", True)],
)
def test_block_allocation_rejects_per_call_resources_that_differ(key, value, tmp_path):
    if value == "SUBDIR":
        value = str(tmp_path)
    with Executor(max_workers=1, max_cores=4, block_allocation=True) as exe:
        # The scheduler's plan refuses it (never ignored); the message names the key.
        said = (
            f"resource_dict key {key!r}: with block_allocation=True every call runs on the "
            f"same workers, set up with {key}="
        )
        with pytest.raises(ValueError, match=re.escape(said)):
            exe.submit(add, 1, 2, resource_dict={key: value})
        # The same resources as the executor's are fine.
        same = exe.submit(add, 1, 2, resource_dict={"cores": 1, "threads_per_core": 1})
        assert same.result(timeout=RESULT_TIMEOUT) == 3


def test_cwd_with_block_allocation(tmp_path):
    with Executor(max_workers=2, block_allocation=True, cwd=str(tmp_path)) as exe:
        cwds = {f.result(RESULT_TIMEOUT) for f in [exe.submit(where_am_i) for _ in range(4)]}
    assert {os.path.realpath(c) for c in cwds} == {os.path.realpath(tmp_path)}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_workers": 2}, 2),
        ({"max_workers": 3, "max_cores": 8}, 3),
        ({"max_cores": 2}, 2),
        ({"max_cores": 3, "cores_per_worker": 1}, 3),
        ({}, os.cpu_count()),
    ],
    ids=["max_workers", "max_workers-wins", "max_cores", "max_cores-per-worker", "cpu_count"],
)
def test_block_allocation_pool_size(kwargs, expected, wait_until):
    with Executor(block_allocation=True, **kwargs) as exe:
        assert exe.info["block_allocation"] is True

        def all_started():
            workers = exe.info["workers"]
            started = len(workers) == expected and all(w["pid"] for w in workers)
            return started and workers

        workers = wait_until(all_started, timeout=30, message=f"pool of {expected} not up")
        pool = {w["pid"] for w in workers}
        assert len(pool) == expected
        pids = {f.result(RESULT_TIMEOUT) for f in [exe.submit(getpid) for _ in range(20)]}
        assert pids <= pool


def test_block_allocation_reuses_one_worker():
    with Executor(max_workers=1, block_allocation=True) as exe:
        pids = {exe.submit(getpid).result(timeout=RESULT_TIMEOUT) for _ in range(5)}
    assert len(pids) == 1


def test_init_function_requires_block_allocation():
    with pytest.raises(ValueError):
        Executor(max_workers=1, init_function=init_function)


def test_init_function_injection_rules():
    with Executor(max_workers=1, block_allocation=True, init_function=init_function) as exe:
        seed = exe.submit(calc, 2, j=5)  # the seed: 2 + 5 + k=3
        positional = exe.submit(calc, 2, 5, 1)  # nothing injected, no "multiple values"
        overridden = exe.submit(calc, 1, 2, k=10)
        only_i = exe.submit(calc, 1)  # j=4, k=3 from init
        by_keyword = exe.submit(calc, i=1)
        kw_only = exe.submit(keyword_only, 1)
        kw_only_given = exe.submit(keyword_only, 1, k=100)
        var_keywords = exe.submit(only_var_keywords, x=1)
        assert seed.result(timeout=RESULT_TIMEOUT) == 10
        assert positional.result(timeout=RESULT_TIMEOUT) == 8
        assert overridden.result(timeout=RESULT_TIMEOUT) == 13
        assert only_i.result(timeout=RESULT_TIMEOUT) == 8
        assert by_keyword.result(timeout=RESULT_TIMEOUT) == 8
        assert kw_only.result(timeout=RESULT_TIMEOUT) == 4
        assert kw_only_given.result(timeout=RESULT_TIMEOUT) == 101
        assert var_keywords.result(timeout=RESULT_TIMEOUT) == ["x"]
        # Functions that take none of the init names are untouched.
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def test_init_function_dataset_loaded_in_worker():
    with Executor(max_workers=2, block_allocation=True, init_function=init_dataset) as exe:
        results = [
            f.result(RESULT_TIMEOUT) for f in [exe.submit(uses_dataset, i) for i in range(10)]
        ]
    assert results == [2 * i for i in range(10)]


def test_init_function_runs_once_per_worker(tmp_path):
    log = tmp_path / "init.log"
    init = make_counting_init(str(log))
    with Executor(max_workers=2, block_allocation=True, init_function=init) as exe:
        outcomes = [
            f.result(RESULT_TIMEOUT) for f in [exe.submit(calc_and_pid, i) for i in range(20)]
        ]
    assert [value for value, _ in outcomes] == [i + 7 for i in range(20)]
    init_pids = [int(line) for line in log.read_text().split()]
    assert len(init_pids) == len(set(init_pids)), "init ran twice in one worker"
    assert 1 <= len(init_pids) <= 2
    assert {pid for _, pid in outcomes} <= set(init_pids)


def test_a_pool_larger_than_max_cores_is_refused_not_started(wait_until):
    with pytest.raises(ValueError, match=r"max_workers=2 block-allocated workers .* max_cores=1"):
        Executor(max_workers=2, max_cores=1, block_allocation=True)
    # Oversubscribed workers may share the CPUs.
    with Executor(max_workers=2, max_cores=1, block_allocation=True, oversubscribe=True) as exe:
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def worker_id_after_gate(path, executorlib_worker_id):
    wait_for_file(path)
    return executorlib_worker_id


def init_with_worker_id(executorlib_worker_id):
    return {"offset": 100 * executorlib_worker_id}


def add_offset(x, offset):
    return x + offset


def test_the_worker_id_is_distinct_per_worker_and_reaches_init_function(make_gate):
    gate = make_gate()
    with SingleNodeExecutor(max_workers=2, block_allocation=True) as exe:
        # Both workers are busy at once, so each call has one of its own.
        ids = [exe.submit(worker_id_after_gate, gate.path) for _ in range(2)]
        gate.open()
        assert sorted(f.result(RESULT_TIMEOUT) for f in ids) == [0, 1]
    with SingleNodeExecutor(
        max_workers=2, block_allocation=True, init_function=init_with_worker_id
    ) as exe:
        offsets = {exe.submit(add_offset, 1).result(RESULT_TIMEOUT) for _ in range(20)}
        assert offsets <= {1, 101}
        # A call may still pass the parameter itself.
        assert exe.submit(add_offset, 1, offset=5).result(RESULT_TIMEOUT) == 6


def worker_pid_after_gate(path):
    wait_for_file(path)
    return os.getpid()


def test_a_pool_resized_while_busy_grows_and_shrinks(make_gate, wait_until):
    first, second = make_gate("first"), make_gate("second")
    with SingleNodeExecutor(max_workers=1, block_allocation=True) as exe:
        assert exe.max_workers == 1
        busy = exe.submit(worker_pid_after_gate, first.path)
        waiting = [exe.submit(worker_pid_after_gate, first.path) for _ in range(2)]
        exe.max_workers = 3  # the two queued calls start on the two new workers
        wait_until(lambda: exe.info["tasks"]["running"] == 3, message="three running")
        assert exe.max_workers == 3 and len(exe.info["workers"]) == 3
        first.open()
        pids = {f.result(RESULT_TIMEOUT) for f in [busy, *waiting]}
        assert len(pids) == 3
        # Shrunk while one call runs: the idle ones stop now, the busy one stays.
        held = exe.submit(worker_pid_after_gate, second.path)
        wait_until(lambda: exe.info["tasks"]["running"] == 1, message="one running")
        exe.max_workers = 1
        wait_until(lambda: len(exe.info["workers"]) == 1, message="surplus workers stopped")
        second.open()
        assert held.result(RESULT_TIMEOUT) in pids
        assert exe.submit(add, 1, 1).result(RESULT_TIMEOUT) == 2
        with pytest.raises(ValueError, match="max_workers must be >= 1"):
            exe.max_workers = 0
        assert exe.max_workers == 1
    assert exe.max_workers is None  # after shutdown, as executorlib's
    with SingleNodeExecutor() as exe, pytest.raises(NotImplementedError, match="only with block"):
        exe.max_workers = 2
