"""Many tasks, long chains, wide fan-in, large values, many submitting threads:
all results correct, nothing lost or duplicated. Timeouts only guard against
hangs; speed is measured in bench/, never asserted here."""

import threading

import pytest
from pmp import Executor

RESULT_TIMEOUT = 300


def square(x):
    return x * x


def inc(x):
    return x + 1


def total(values):
    return sum(values)


def ones(n):
    import numpy as np

    return np.ones(n, dtype=np.float64)


def checksum(array):
    return float(array.sum()), array.shape, str(array.dtype)


def double(array):
    return array * 2


@pytest.mark.timeout(300)
def test_ten_thousand_tiny_tasks_on_a_pool_of_two():
    with Executor(max_workers=2, block_allocation=True) as exe:
        futures = [exe.submit(square, i) for i in range(10_000)]
        results = [f.result(timeout=RESULT_TIMEOUT) for f in futures]
    assert results == [i * i for i in range(10_000)]


@pytest.mark.timeout(300)
def test_map_over_ten_thousand_items():
    with Executor(max_workers=2, block_allocation=True) as exe:
        assert list(exe.map(square, range(10_000), timeout=RESULT_TIMEOUT)) == [
            i * i for i in range(10_000)
        ]


@pytest.mark.timeout(300)
def test_fresh_worker_per_task_many_times():
    with Executor(max_workers=2) as exe:
        futures = [exe.submit(square, i) for i in range(60)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [i * i for i in range(60)]


@pytest.mark.timeout(300)
def test_chain_of_five_hundred_dependent_futures(block_allocation):
    length = 500 if block_allocation else 40  # fresh mode: one process per link
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        future = exe.submit(inc, 0)
        for _ in range(length - 1):
            future = exe.submit(inc, future)
        assert future.result(timeout=RESULT_TIMEOUT) == length


@pytest.mark.timeout(300)
def test_fan_in_of_two_thousand_futures():
    with Executor(max_workers=2, block_allocation=True) as exe:
        parts = [exe.submit(square, i) for i in range(2_000)]
        assert exe.submit(total, parts).result(timeout=RESULT_TIMEOUT) == sum(
            i * i for i in range(2_000)
        )


@pytest.mark.timeout(300)
def test_large_arrays_in_and_out(block_allocation):
    import numpy as np

    n = 8_000_000  # 64 MB of float64
    argument = np.arange(n, dtype=np.float64)
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        made = exe.submit(ones, n)
        summed = exe.submit(checksum, made)
        doubled = exe.submit(double, argument)
        assert summed.result(timeout=RESULT_TIMEOUT) == (float(n), (n,), "float64")
        result = doubled.result(timeout=RESULT_TIMEOUT)
    assert result.dtype == np.float64
    assert np.array_equal(result, argument * 2)
    assert np.array_equal(argument, np.arange(n, dtype=np.float64))  # input untouched


@pytest.mark.timeout(300)
def test_submitting_from_many_threads():
    per_thread = 1_000
    outcomes = {}

    def submit_many(exe, offset):
        futures = [exe.submit(square, offset + i) for i in range(per_thread)]
        outcomes[offset] = [f.result(timeout=RESULT_TIMEOUT) for f in futures]

    with Executor(max_workers=2, block_allocation=True) as exe:
        threads = [
            threading.Thread(target=submit_many, args=(exe, k * per_thread)) for k in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RESULT_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads)
    for offset in range(0, 4 * per_thread, per_thread):
        assert outcomes[offset] == [(offset + i) ** 2 for i in range(per_thread)]
