"""Aborts after errors, exit, restart and shutdown."""

import subprocess
import sys
import textwrap
import time

import pytest
from jupyter_client.manager import start_new_kernel


def _gone(pid, timeout=10):
    """Whether process `pid` ends (or is only a zombie) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def own_kernel():
    manager, client = start_new_kernel(kernel_name="pmp", startup_timeout=60)
    yield manager, client
    client.stop_channels()
    if manager.is_alive():
        manager.shutdown_kernel(now=True)


def test_queued_cells_are_aborted_after_an_error(frontend):
    client = frontend.client
    failing = client.execute("1/0")
    queued = [client.execute("aborted_a = 1"), client.execute("aborted_b = 2")]
    assert frontend.reply(failing)["content"]["status"] == "error"
    for msg_id in queued:
        assert frontend.reply(msg_id)["content"]["status"] == "aborted"
    assert frontend.value("'aborted_a' in dir() or 'aborted_b' in dir()") == "False"


def test_no_abort_without_stop_on_error(frontend):
    client = frontend.client
    failing = client.execute("1/0", stop_on_error=False)
    queued = client.execute("not_aborted = 1")
    assert frontend.reply(failing)["content"]["status"] == "error"
    assert frontend.reply(queued)["content"]["status"] == "ok"


def test_restart_gives_a_fresh_kernel(own_kernel):
    manager, client = own_kernel
    client.execute_interactive("forgotten = 1", timeout=30, allow_stdin=False)
    old_pid = manager.provisioner.process.pid
    manager.restart_kernel()
    client.wait_for_ready(timeout=60)
    assert _gone(old_pid)
    reply = client.execute_interactive("'forgotten' in dir()", timeout=30, allow_stdin=False)
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["execution_count"] == 1


def test_shutdown_leaves_no_process_behind(own_kernel):
    manager, client = own_kernel
    code = "import subprocess; child = subprocess.Popen(['sleep', '100']); print(child.pid)"
    outputs = []
    client.execute_interactive(code, timeout=30, allow_stdin=False, output_hook=outputs.append)
    child = int("".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream"))
    kernel = manager.provisioner.process.pid
    started = time.monotonic()
    manager.shutdown_kernel()
    assert time.monotonic() - started < 5
    assert _gone(kernel)
    assert _gone(child)


def test_exit_in_a_cell_stops_the_kernel(own_kernel):
    manager, client = own_kernel
    reply = client.execute_interactive("exit()", timeout=30, allow_stdin=False)
    assert reply["content"]["payload"] == [{"source": "ask_exit", "keepkernel": False}]
    assert _gone(manager.provisioner.process.pid)


def test_kernel_stops_when_its_parent_dies():
    script = textwrap.dedent(
        """
        import os
        from jupyter_client.manager import start_new_kernel
        manager, client = start_new_kernel(kernel_name="pmp", startup_timeout=60)
        print(manager.provisioner.process.pid, flush=True)
        os._exit(0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    kernel = int(out.stdout.split()[-1])
    assert _gone(kernel, timeout=15)
