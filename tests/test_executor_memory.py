"""memory_max on the local backend: the scheduler keeps each call's GB of
the host's memory (its cgroup's limit, else MemTotal) free for it while it
runs, so calls that together need more than the host has run one after
the other; a call that needs more than the host has is refused, naming
the key. A reservation, not a limit: pmp does not stop a call using more."""

import os
import time

import pytest
from pmp import Executor, SingleNodeExecutor

RESULT_TIMEOUT = 60


def host_gb():
    """The host's memory as the local backend counts it: its cgroup's
    memory.max (cgroup v2) where it sets one, else /proc/meminfo's MemTotal."""
    with open("/proc/meminfo") as meminfo:
        kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    mb = kb // 1024
    try:
        with open("/proc/self/cgroup") as cgroup:
            path = next(line[3:].strip() for line in cgroup if line.startswith("0::"))
        with open(f"/sys/fs/cgroup{path.rstrip('/')}/memory.max") as limit:
            text = limit.read().strip()
        if text != "max":
            mb = min(mb, int(text) // (1024 * 1024))
    except (OSError, StopIteration):
        pass
    return mb / 1024


def running_with_others(directory, timeout):
    """Mark this call as running in `directory`, wait up to `timeout` for
    a second one, and say how many ran at once at most."""
    marker = os.path.join(directory, f"running-{os.getpid()}")
    open(marker, "w").close()
    seen = 1
    deadline = time.monotonic() + timeout
    try:
        while seen < 2 and time.monotonic() < deadline:
            seen = max(seen, sum(n.startswith("running-") for n in os.listdir(directory)))
            time.sleep(0.02)
        return seen
    finally:
        os.remove(marker)


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="reads Linux's /proc/meminfo")
def test_two_calls_of_60_percent_of_the_hosts_memory_run_one_after_the_other(tmp_path):
    share = round(host_gb() * 0.6, 3)
    with Executor(max_cores=2) as exe:
        # Two calls that fit together do run together here: what holds the
        # next two apart is their memory, not the CPUs.
        small = [
            exe.submit(running_with_others, str(tmp_path), 30, resource_dict={"memory_max": 0.1})
            for _ in range(2)
        ]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in small] == [2, 2]
        large = [
            exe.submit(running_with_others, str(tmp_path), 2, resource_dict={"memory_max": share})
            for _ in range(2)
        ]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in large] == [1, 1]


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="reads Linux's /proc/meminfo")
def test_a_call_needing_more_memory_than_the_host_has_is_refused_naming_the_key():
    with Executor(max_cores=1) as exe:
        future = exe.submit(sum, [1, 2], resource_dict={"memory_max": host_gb() * 2})
        with pytest.raises(ValueError) as raised:
            future.result(timeout=RESULT_TIMEOUT)
        message = str(raised.value)
        assert "resource_dict key 'memory_max' asks for" in message, message
        assert "more than the" in message and "largest node" in message, message
        assert "does not limit what the call uses" in message, message
        # The refusal is the call's own: the next one runs.
        assert exe.submit(sum, [1, 2]).result(timeout=RESULT_TIMEOUT) == 3


@pytest.mark.parametrize("bad", [0, -1, "1G", True, float("inf")])
def test_a_memory_max_that_is_not_a_positive_number_of_gb_is_a_value_error_naming_it(bad):
    named = "resource_dict key 'memory_max' must be a"
    with Executor(max_cores=1) as exe, pytest.raises(ValueError, match=named):
        exe.submit(sum, [1], resource_dict={"memory_max": bad})
    with pytest.raises(ValueError, match="^memory_max must be a"):
        Executor(max_cores=1, memory_max=bad)


def test_single_node_executor_takes_memory_max_per_call_and_as_the_executors_default(tmp_path):
    share = round(host_gb() * 0.6, 3)
    with SingleNodeExecutor(max_cores=2, resource_dict={"memory_max": share}) as exe:
        futures = [exe.submit(running_with_others, str(tmp_path), 2) for _ in range(2)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [1, 1]
        per_call = exe.submit(sum, [1, 2], resource_dict={"memory_max": 0.1})
        assert per_call.result(timeout=RESULT_TIMEOUT) == 3


def test_a_pools_workers_keep_memory_max_for_life_so_only_those_that_fit_start(tmp_path):
    share = round(host_gb() * 0.6, 3)
    with SingleNodeExecutor(
        max_workers=2, block_allocation=True, resource_dict={"memory_max": share}
    ) as exe:
        futures = [exe.submit(running_with_others, str(tmp_path), 2) for _ in range(2)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [1, 1]
        assert len(exe.info["workers"]) == 1, "60% of the host twice does not fit"
