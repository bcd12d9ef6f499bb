"""Large arguments and results move between the client and a worker on this
host through shared memory (scheduler/src/shared_memory.rs): the other side
maps them, and nothing is left behind, whatever happens to the task, the
worker or the client. With PMP_SHARED_MEMORY=0 in the client's environment,
they travel on the socket, as they do to and from workers on other hosts."""

import hashlib
import os
import signal
import sys

import numpy as np
import pytest
from gates import wait_for_file
from pmp import Executor
from pmp.client.errors import WorkerDiedError

RESULT_TIMEOUT = 60
MIB = 1 << 20
SEGMENT = "memfd:pmp-frame"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="shared memory frames are Linux's"
)


def digest(value):
    if isinstance(value, np.ndarray):
        return hashlib.sha256(value.tobytes()).hexdigest()
    return hashlib.sha256(bytes(value)).hexdigest()


def mapped_segments():
    """How many of the scheduler's segments this process maps now."""
    with open("/proc/self/maps") as maps:
        return sum(SEGMENT in line for line in maps)


def describe(*values, **named):
    """Each value's digest, and how many segments this worker maps while the
    task runs (the arguments' own, if they came through shared memory)."""
    return [digest(v) for v in values], {k: digest(v) for k, v in named.items()}, mapped_segments()


def zero_in_place_and_sum(array):
    total = float(array.sum())
    array[:] = 0
    return total, float(array.sum())


def first_and_nbytes(array):
    return float(array[0]), array.nbytes


def make_array(size, seed):
    return np.random.default_rng(seed).random(size // 8)


def scaled(array, factor):
    return array * factor


def raise_with(array):
    raise ValueError(f"refused {array.nbytes} bytes")


def exit_hard(array):
    os._exit(3)


def kill_myself(array):
    os.kill(os.getpid(), signal.SIGKILL)


def client_holdings():
    """This (client) process's segments: open descriptors and mappings."""
    fds = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{name}").startswith(f"/{SEGMENT}")
        except OSError:
            continue
    return fds + mapped_segments()


def pmp_names_in_dev_shm():
    return sorted(name for name in os.listdir("/dev/shm") if "pmp" in name.lower())


@pytest.fixture(autouse=True)
def nothing_left_behind(wait_until):
    """After each test: no segment open or mapped in this process (the
    executor is shut down, its pool closed), and no pmp file in /dev/shm."""
    before = pmp_names_in_dev_shm()
    yield
    wait_until(
        lambda: client_holdings() == 0,
        message=f"segments still held by the client: {client_holdings()}",
    )
    assert pmp_names_in_dev_shm() == before


def arguments():
    return {
        "large": make_array(100_000_000, 1),
        "bytearray": bytearray(os.urandom(2 * MIB + 3)),
        "other": make_array(3 * MIB, 2),
        "exactly_the_threshold": np.frombuffer(os.urandom(MIB), dtype=np.uint8),
        "small": make_array(1000, 3),
        "bytes": os.urandom(2 * MIB),  # in-band: bytes pickle inside the pickle
    }


# Out-of-band buffers of at least 1 MiB are shared; of those, the arrays are
# still mapped while the task runs (a bytearray is copied out of its buffer
# when it is unpickled, and the mapping let go of at once).
SHARED = 3


def test_large_arguments_arrive_intact_through_shared_memory(block_allocation):
    values = arguments()
    names = list(values)
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        positional, named, mapped = exe.submit(
            describe, values["large"], values["small"], **values
        ).result(timeout=RESULT_TIMEOUT)
        assert positional == [digest(values["large"]), digest(values["small"])]
        assert named == {name: digest(values[name]) for name in names}
        assert mapped == SHARED  # the large array, passed twice, is pickled once
        # Again on the same worker (or a new one): the segments are reused.
        again = exe.submit(describe, values["large"]).result(timeout=RESULT_TIMEOUT)
        assert again[0] == [digest(values["large"])]
        assert again[2] == 1


def test_a_worker_changes_only_its_own_copy_and_reused_segments_hold_the_new_bytes():
    first = make_array(8 * MIB, 4)
    second = make_array(8 * MIB, 5)
    expected = float(first.sum())
    with Executor(max_workers=1, block_allocation=True) as exe:
        total, after = exe.submit(zero_in_place_and_sum, first).result(timeout=RESULT_TIMEOUT)
        assert (total, after) == (expected, 0.0)
        assert float(first.sum()) == expected
        # The next argument of the same size goes into the same segment.
        digests, _, _ = exe.submit(describe, second).result(timeout=RESULT_TIMEOUT)
        assert digests == [digest(second)]
        digests, _, _ = exe.submit(describe, first).result(timeout=RESULT_TIMEOUT)
        assert digests == [digest(first)]


def test_results_feed_other_tasks_and_shared_arguments_mix_with_them(block_allocation):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        made = exe.submit(make_array, 16 * MIB, 6)
        argument = make_array(4 * MIB, 7)
        scaled_twice = exe.submit(scaled, made, 2.0)
        digests, _, mapped = exe.submit(describe, scaled_twice, argument).result(
            timeout=RESULT_TIMEOUT
        )
        expected = make_array(16 * MIB, 6) * 2.0
        assert digests == [digest(expected), digest(argument)]
        # The argument; a result that feeds another task is forwarded to it
        # on the socket.
        assert mapped == 1
        assert digest(made.result(timeout=RESULT_TIMEOUT)) == digest(make_array(16 * MIB, 6))


def make_results(seed):
    return {
        "large": make_array(100_000_000, seed),
        "bytearray": bytearray(np.random.default_rng(seed).bytes(2 * MIB + 3)),
        "small": make_array(1000, seed),
    }


def test_large_results_come_back_intact_through_shared_memory(block_allocation):
    expected = make_results(12)
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(make_results, 12)
        result = future.result(timeout=RESULT_TIMEOUT)
        assert {k: digest(v) for k, v in result.items()} == {
            k: digest(v) for k, v in expected.items()
        }
        # The scheduler (in this process) maps the result the worker left in
        # its segment, even after a fresh worker has exited.
        assert mapped_segments() >= 1
        again = exe.submit(make_results, 13).result(timeout=RESULT_TIMEOUT)
        assert digest(again["large"]) == digest(make_array(100_000_000, 13))


def test_a_raising_function_leaves_nothing(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises(ValueError, match="refused 8388608 bytes"):
            exe.submit(raise_with, make_array(8 * MIB, 8)).result(timeout=RESULT_TIMEOUT)
        argument = make_array(8 * MIB, 9)
        digests, _, _ = exe.submit(describe, argument).result(timeout=RESULT_TIMEOUT)
        assert digests == [digest(argument)]


@pytest.mark.parametrize("death", [exit_hard, kill_myself], ids=["os._exit", "SIGKILL"])
def test_a_worker_that_dies_with_a_shared_argument_leaves_nothing(block_allocation, death):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises(WorkerDiedError):
            exe.submit(death, make_array(8 * MIB, 10)).result(timeout=RESULT_TIMEOUT)
        argument = make_array(8 * MIB, 11)
        digests, _, mapped = exe.submit(describe, argument).result(timeout=RESULT_TIMEOUT)
        assert (digests, mapped) == ([digest(argument)], 1)


def test_a_client_killed_with_tasks_in_flight_leaves_nothing(
    start_script, make_gate, wait_until, process_gone, tmp_path
):
    gate = make_gate()
    client = start_script(
        f"""
        import os, sys
        import numpy as np
        from pmp import Executor
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from gates import wait_for_file

        def hold(array, gate):
            with open("/proc/self/maps") as maps:
                mapped = sum("{SEGMENT}" in line for line in maps)
            print(os.getpid(), mapped, flush=True)
            return wait_for_file(gate, array.nbytes)

        exe = Executor(max_workers=1, block_allocation=True)
        running = exe.submit(hold, np.ones(8 << 17), {gate.path!r})
        queued = [exe.submit(hold, np.ones(8 << 17), {gate.path!r}) for _ in range(3)]
        running.result()
        """
    )
    worker_pid, mapped = (int(word) for word in client.stdout.readline().split())
    assert mapped == 1
    client.kill()
    client.wait(timeout=RESULT_TIMEOUT)
    # The worker notices its client is gone and exits; its mapping and the
    # client's segments (no name anywhere) go with the two processes.
    wait_until(lambda: process_gone(worker_pid), timeout=30, message="the worker outlived it")
    assert pmp_names_in_dev_shm() == []


_HELD = []  # in the worker: descriptors held open by exhaust_descriptors


def exhaust_descriptors():
    """Leave this worker no file descriptor to open anything with."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    while True:
        try:
            _HELD.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            break
    _HELD.append(soft)
    return True


def restore_descriptors():
    import resource

    soft = _HELD.pop()
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


def digest_only(value):
    return digest(value)


def test_a_worker_that_cannot_map_gets_the_task_again_on_the_socket(capfd):
    argument = make_array(8 * MIB, 15)
    with Executor(max_workers=1, block_allocation=True) as exe:
        assert exe.submit(exhaust_descriptors).result(timeout=RESULT_TIMEOUT)
        # It cannot open the scheduler's segment: the scheduler sends the
        # task again with the array in the message, and it runs once.
        assert exe.submit(digest_only, argument).result(timeout=RESULT_TIMEOUT) == digest(argument)
        exe.submit(restore_descriptors).result(timeout=RESULT_TIMEOUT)
        # That worker gets large buffers on the socket from now on.
        digests, _, mapped = exe.submit(describe, argument).result(timeout=RESULT_TIMEOUT)
        assert (digests, mapped) == ([digest(argument)], 0)
    assert "cannot map shared memory" in capfd.readouterr().err


def client_descriptors():
    return len(os.listdir("/proc/self/fd"))


def test_many_queued_large_arguments_hold_a_bounded_number_of_descriptors(make_gate):
    gate = make_gate()
    arrays = [np.full(MIB // 8, i, dtype=np.float64) for i in range(200)]
    before = client_descriptors()
    with Executor(max_workers=1, block_allocation=True) as exe:
        blocker = exe.submit(wait_for_file, gate.path)
        queued = [exe.submit(first_and_nbytes, array) for array in arrays]
        # 128 segments at most (shared_memory::IN_USE); the rest of the
        # buffers wait in ordinary memory and go on the socket.
        assert client_descriptors() - before <= 128 + 16
        gate.open()
        blocker.result(timeout=RESULT_TIMEOUT)
        assert [f.result(timeout=RESULT_TIMEOUT) for f in queued] == [
            (float(i), MIB) for i in range(200)
        ]


def test_with_shared_memory_off_large_frames_travel_on_the_socket(monkeypatch):
    monkeypatch.setenv("PMP_SHARED_MEMORY", "0")
    values = arguments()
    with Executor(max_workers=1, block_allocation=True) as exe:
        _, named, mapped = exe.submit(describe, **values).result(timeout=RESULT_TIMEOUT)
        assert named == {name: digest(value) for name, value in values.items()}
        assert mapped == 0
        result = exe.submit(make_results, 14).result(timeout=RESULT_TIMEOUT)
        assert digest(result["large"]) == digest(make_array(100_000_000, 14))
        assert mapped_segments() == 0


def client_segment_descriptors():
    return sum(
        os.readlink(f"/proc/self/fd/{name}").startswith(f"/{SEGMENT}")
        for name in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{name}")
    )


def test_one_array_passed_to_many_calls_is_held_once_and_a_changed_one_apart(make_gate):
    gate = make_gate()
    array = make_array(8 * MIB, 5)
    with Executor(max_workers=1, block_allocation=True) as exe:
        blocker = exe.submit(wait_for_file, gate.path)
        before = client_segment_descriptors()
        same = [exe.submit(first_and_nbytes, array) for _ in range(20)]
        # Twenty queued calls, one copy of the array in shared memory.
        assert client_segment_descriptors() - before == 1
        # Changed after those submits: the queued calls keep the bytes
        # they were given, the new one gets its own copy.
        array[0] = -1.0
        changed = exe.submit(first_and_nbytes, array)
        assert client_segment_descriptors() - before == 2
        gate.open()
        blocker.result(timeout=RESULT_TIMEOUT)
        first = float(make_array(8 * MIB, 5)[0])
        assert [f.result(timeout=RESULT_TIMEOUT) for f in same] == [(first, 8 * MIB)] * 20
        assert changed.result(timeout=RESULT_TIMEOUT) == (-1.0, 8 * MIB)
