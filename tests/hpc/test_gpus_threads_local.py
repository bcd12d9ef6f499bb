"""GPUs and threads on the local backend: pmp hands out distinct devices from
the parent's CUDA_VISIBLE_DEVICES, queues tasks while none is free, and sets
the thread variables from threads_per_core. (No GPU is needed: only the
assignment is checked, as a job scheduler would do it.)"""

import pytest
from thread_variables import THREAD_VARIABLES
from thread_variables import read as read_thread_variables


def lines(done):
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(120)
def test_block_workers_get_distinct_devices(run_script):
    done = run_script(
        """
        import os, time
        from pmp import Executor

        def device():
            time.sleep(0.5)
            return os.environ["CUDA_VISIBLE_DEVICES"]

        with Executor(max_workers=2, gpus_per_worker=1, block_allocation=True) as exe:
            print(sorted(f.result() for f in [exe.submit(device) for _ in range(2)]))
            print(sorted(w["gpus"][0] for w in exe.info["workers"]))
        """,
        env={"CUDA_VISIBLE_DEVICES": "3,5"},
    )
    assert lines(done) == ["['3', '5']", "['3', '5']"]


@pytest.mark.timeout(120)
def test_tasks_wait_for_a_free_device_and_never_share_one(run_script):
    done = run_script(
        """
        import os, time
        from pmp import Executor

        def hold(path):
            device = os.environ["CUDA_VISIBLE_DEVICES"]
            lock = f"{path}-{device}"
            fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # fails if the device is in use
            time.sleep(0.3)
            os.close(fd)
            os.remove(lock)
            return device

        with Executor(max_cores=4) as exe:
            futures = [exe.submit(hold, "gpu", resource_dict={"gpus_per_core": 1})
                       for _ in range(6)]
            print(sorted(set(f.result(timeout=60) for f in futures)))
        """,
        env={"CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert lines(done) == ["['0', '1']"]


def test_asking_for_more_gpus_than_detected_is_refused(run_script):
    done = run_script(
        """
        from pmp import Executor
        try:
            Executor(max_workers=2, gpus_per_worker=1, block_allocation=True)
        except ValueError as error:
            print(error)
        """,
        env={"CUDA_VISIBLE_DEVICES": "0"},
    )
    (message,) = lines(done)
    assert "2 GPU(s) requested but 1 detected" in message


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", [False, True])
def test_threads_per_core_sets_the_thread_variables(block):
    from pmp import Executor

    with Executor(max_cores=4, threads_per_core=2, block_allocation=block) as exe:
        assert exe.submit(read_thread_variables).result(timeout=60) == dict.fromkeys(
            THREAD_VARIABLES, "2"
        )
