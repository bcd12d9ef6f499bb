"""What a task prints travels with the task: in a script it reaches the
client's own sys.stdout/sys.stderr (once, in order), and `Future.output`
keeps it; output of ranks above 0 is marked with their rank (tests/hpc)."""

import pytest
from pmp import Executor

RESULT_TIMEOUT = 60


def chatty(x):
    import sys

    print("out", x)
    print("err", x, file=sys.stderr)
    print("out again", x)
    return x


def prints_a_lot(lines):
    for i in range(lines):
        print(f"line {i:06d}")
    return lines


def leaves_a_thread_printing():
    import threading
    import time

    def later():
        time.sleep(0.3)
        print("after the task")

    threading.Thread(target=later).start()
    return "returned"


def test_output_reaches_the_scripts_streams_once_and_in_order(run_script):
    completed = run_script(
        """
        import sys
        from pmp import Executor

        def chatty(x):
            print("out", x)
            print("err", x, file=sys.stderr)
            return x

        with Executor(max_workers=1, block_allocation=True) as exe:
            for x in range(3):
                assert exe.submit(chatty, x).result(timeout=60) == x
                sys.stdout.flush()
        print("end")
        """
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "out 0\nout 1\nout 2\nend\n"
    assert completed.stderr.splitlines() == ["err 0", "err 1", "err 2"]


def test_future_output_keeps_stdout_and_stderr_as_written(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(chatty, 4)
        assert future.result(timeout=RESULT_TIMEOUT) == 4
        assert future.output == "out 4\nerr 4\nout again 4\n"
        assert [name for name, _ in future.output_chunks()] == ["stdout", "stderr", "stdout"]


def test_a_flood_of_output_arrives_whole_in_chunks_and_the_future_keeps_its_tail(capsys):
    lines = 50_000
    with Executor(max_workers=1, block_allocation=True) as exe:
        future = exe.submit(prints_a_lot, lines)
        assert future.result(timeout=RESULT_TIMEOUT) == lines
    printed = capsys.readouterr().out
    assert printed == "".join(f"line {i:06d}\n" for i in range(lines))
    # Coalesced: far fewer messages than lines, and a bounded tail kept.
    assert len(future.output_chunks()) < lines / 10
    assert future.output.endswith(f"line {lines - 1:06d}\n")
    assert len(future.output) <= 64 * 1024 + 64 * 1024


def test_output_of_a_thread_the_task_left_behind_does_not_break_the_worker(capfd):
    with Executor(max_workers=1, block_allocation=True) as exe:
        assert exe.submit(leaves_a_thread_printing).result(timeout=RESULT_TIMEOUT) == "returned"
        import time

        time.sleep(0.6)
        # The worker still works, and the late text went to its own stdout
        # (forwarded by the scheduler), not into another task's output.
        follow_up = exe.submit(chatty, 1)
        assert follow_up.result(timeout=RESULT_TIMEOUT) == 1
        assert "after the task" not in follow_up.output
    assert "after the task" in capfd.readouterr().out


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_bytes_written_to_a_task_stream_are_a_type_error(stream):
    def write_bytes(name):
        import sys

        getattr(sys, name).write(b"raw")

    with Executor(max_workers=1) as exe, pytest.raises(TypeError, match="must be str, not bytes"):
        exe.submit(write_bytes, stream).result(timeout=RESULT_TIMEOUT)


def forks_a_printing_child():
    import os

    pid = os.fork()
    if pid == 0:
        print("from the forked child", flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child exited with", os.waitstatus_to_exitcode(status))
    return "parent"


def test_a_forked_child_printing_does_not_hang_or_break_the_worker(capfd):
    with Executor(max_workers=1, block_allocation=True) as exe:
        future = exe.submit(forks_a_printing_child)
        assert future.result(timeout=RESULT_TIMEOUT) == "parent"
        # The child wrote to the worker's stdout file descriptor, which the
        # scheduler reads and gives to the running task.
        assert "from the forked child\n" in future.output
        assert "child exited with 0\n" in future.output
        assert exe.submit(chatty, 2).result(timeout=RESULT_TIMEOUT) == 2
    assert "from the forked child" in capfd.readouterr().out


def writes_to_file_descriptors(tag):
    """Output that bypasses sys.stdout: a subprocess, os.system, C's printf
    (buffered by C's stdio, as the worker's stdout is a pipe) and os.write."""
    import ctypes
    import os
    import subprocess

    subprocess.run(["echo", f"subprocess {tag}"], check=True)
    os.system(f"echo 'shell stderr {tag}' >&2")
    ctypes.CDLL(None).printf(f"printf {tag} ü\n".encode())
    os.write(2, f"os.write {tag}\n".encode())
    return tag


@pytest.mark.parametrize("block_allocation", [False, True])
def test_what_a_task_writes_to_file_descriptors_is_its_output(block_allocation, capfd):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        futures = [exe.submit(writes_to_file_descriptors, tag) for tag in ("a", "b", "c", "d")]
        for future, tag in zip(futures, "abcd"):
            # All of it is in the Future when result() returns: the worker
            # waits until the scheduler has read its pipes before it reports.
            assert future.result(timeout=RESULT_TIMEOUT) == tag
            chunks = future.output_chunks()
            stdout = "".join(text for name, text in chunks if name == "stdout")
            stderr = "".join(text for name, text in chunks if name == "stderr")
            assert stdout == f"subprocess {tag}\nprintf {tag} ü\n", chunks
            assert stderr == f"shell stderr {tag}\nos.write {tag}\n", chunks
    # In a script the text reaches the client's own streams, once.
    captured = capfd.readouterr()
    for tag in "abcd":
        assert captured.out.count(f"subprocess {tag}\n") == 1
        assert captured.err.count(f"os.write {tag}\n") == 1


def test_what_a_worker_writes_between_tasks_is_nobodys_output(capfd):
    def init_function():
        import os

        os.write(1, b"written by init_function\n")
        return {}

    with Executor(max_workers=1, block_allocation=True, init_function=init_function) as exe:
        future = exe.submit(writes_to_file_descriptors, "x")
        assert future.result(timeout=RESULT_TIMEOUT) == "x"
        assert "init_function" not in future.output
    # The scheduler passed it on to the client's own stdout.
    assert "written by init_function\n" in capfd.readouterr().out
