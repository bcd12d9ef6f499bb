"""Many calls at once: `map` (results in the order of its arguments, the
first failure raised where it stands) and `batched` (lists of `n` results
in the order the calls finish, failed and cancelled calls skipped, and
batches that only failures can fill failed).
"""

import pytest
from gates import wait_for_file
from pmp import Executor, SingleNodeExecutor

RESULT_TIMEOUT = 60


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def fail_after(path, message):
    wait_for_file(path)
    raise ValueError(message)


def raise_if_zero(x):
    if x == 0:
        raise RuntimeError("zero")
    return x


def test_map(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        assert list(exe.map(add, [1, 2, 3], [10, 20, 30], timeout=RESULT_TIMEOUT)) == [11, 22, 33]
        assert list(exe.map(add, [], [])) == []
        assert list(exe.map(add, range(50), range(50))) == [2 * i for i in range(50)]
        results = exe.map(fail, ["mapped failure"])
        with pytest.raises(ValueError, match="mapped failure"):
            next(results)


def test_map_over_a_future_of_the_arguments():
    with SingleNodeExecutor() as exe:
        arguments = exe.submit(list, [[1, 1], [2, 2]])
        assert list(exe.map(sum, arguments)) == [2, 4]


def test_batched_gives_lists_as_calls_finish_and_fails_what_only_errors_can_fill(make_gate):
    gate = make_gate()
    with SingleNodeExecutor(max_workers=2, block_allocation=True) as exe:
        late = exe.submit(fail_after, gate.path, "late and wrong")
        early = [exe.submit(add, i, 0) for i in range(4)]
        batches = exe.batched([late, *early], n=2)
        assert len(batches) == 3
        # The four early calls finish first, in some order, and fill two batches.
        done = [batches[0].result(RESULT_TIMEOUT), batches[1].result(RESULT_TIMEOUT)]
        assert sorted(done[0] + done[1]) == [0, 1, 2, 3] and [len(b) for b in done] == [2, 2]
        assert not batches[2].done()
        gate.open()
        with pytest.raises(ValueError, match="late and wrong"):
            batches[2].result(RESULT_TIMEOUT)


def test_a_batch_skips_cancelled_calls_and_the_last_one_may_be_shorter(make_gate):
    gate = make_gate()
    with SingleNodeExecutor(max_workers=1, block_allocation=True) as exe:
        running = exe.submit(wait_for_file, gate.path, 1)
        queued = exe.submit(add, 1, 1)
        (batch,) = exe.batched([running, queued], n=2)
        assert queued.cancel()
        gate.open()
        assert batch.result(RESULT_TIMEOUT) == [1]


def test_batched_fills_batches_with_successes_and_fails_the_rest_as_executorlib():
    # executorlib's own example (test_batched_error_future), as a user writes it.
    with SingleNodeExecutor() as exe:
        firsts = [exe.submit(raise_if_zero, 0 if i % 3 == 0 else i) for i in range(10)]
        sums = [exe.submit(sum, batch) for batch in exe.batched(firsts, n=3)]
        assert sums[0].result(RESULT_TIMEOUT) + sums[1].result(RESULT_TIMEOUT) == 27
        for failed in sums[2:]:
            with pytest.raises(RuntimeError, match="zero"):
                failed.result(RESULT_TIMEOUT)


def test_a_pending_batch_does_not_block_the_caller(make_gate):
    gate = make_gate()
    with SingleNodeExecutor() as exe:
        futures = [exe.submit(wait_for_file, gate.path, i) for i in range(2)]
        batches = exe.batched(futures, n=2)
        assert not batches[0].done()
        gate.open()
        assert sorted(batches[0].result(RESULT_TIMEOUT)) == [0, 1]
