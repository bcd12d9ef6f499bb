"""Interrupts stop the running cell (not after its sleep(100) or endless
loop) and keep the kernel's state."""

import signal
import time

import pytest

# Far below the cells' 100 s, far above how long an interrupt takes (well
# under a second; a loaded 2-core CI machine once took 2.6 s): this tells
# an interrupt that works from one that waits for the cell to end, without
# being a timing test, which bench/ is for.
DEADLINE = 10.0


def _start(frontend, code, **options):
    """Send `code` and return once it is running (its execute_input is out)."""
    msg_id = frontend.client.execute(code, **options)
    while True:
        msg = frontend.client.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.2)
    return msg_id


def _interrupted(frontend, msg_id, interrupt):
    started = time.monotonic()
    interrupt()
    reply = frontend.reply(msg_id, timeout=10)["content"]
    elapsed = time.monotonic() - started
    frontend.outputs(msg_id)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert elapsed < DEADLINE, f"interrupt took {elapsed:.2f} s"


@pytest.mark.parametrize("code", ["while True: pass", "import time; time.sleep(100)"])
def test_interrupt_request(frontend, code):
    frontend.execute("survivor = 42")
    msg_id = _start(frontend, code)
    _interrupted(frontend, msg_id, frontend.manager.interrupt_kernel)
    assert frontend.value("survivor") == "42"


@pytest.mark.parametrize("code", ["while True: pass", "import time; time.sleep(100)"])
def test_sigint(frontend, code):
    msg_id = _start(frontend, code)
    _interrupted(frontend, msg_id, lambda: frontend.manager.signal_kernel(signal.SIGINT))
    assert frontend.value("1 + 1") == "2"


def test_interrupt_while_idle_is_harmless(frontend):
    frontend.execute("kept = 'yes'")
    frontend.manager.interrupt_kernel()
    frontend.manager.signal_kernel(signal.SIGINT)
    time.sleep(0.3)
    reply, _ = frontend.execute("kept")
    assert reply["status"] == "ok"
    assert frontend.value("kept") == "'yes'"


def test_interrupt_while_waiting_for_input(frontend):
    msg_id = frontend.client.execute("input('waiting: ')", allow_stdin=True)
    frontend.client.get_stdin_msg(timeout=30)
    _interrupted(frontend, msg_id, frontend.manager.interrupt_kernel)


def test_interrupt_of_a_subprocess_run(frontend):
    msg_id = _start(frontend, "import subprocess; subprocess.run(['sleep', '100'])")
    _interrupted(frontend, msg_id, frontend.manager.interrupt_kernel)


def test_interrupt_keeps_executor_workers(frontend):
    pytest.importorskip("pmp")
    reply, _ = frontend.execute(
        "from pmp import Executor\n"
        "import time\n"
        "exe = Executor(max_workers=1, block_allocation=True)\n"
        "exe.submit(sum, [1, 2]).result()"
    )
    assert reply["status"] == "ok"
    msg_id = _start(frontend, "exe.submit(time.sleep, 3).result()")
    _interrupted(frontend, msg_id, frontend.manager.interrupt_kernel)
    # The worker finishes its sleep and takes the next task.
    assert frontend.value("exe.submit(sum, [3, 4]).result(timeout=60)") == "7"
    frontend.execute("exe.shutdown(wait=False, cancel_futures=True)")


def test_interrupts_during_start_up_are_ignored():
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="pmp")
    manager.start_kernel()
    try:
        for _ in range(5):
            manager.interrupt_kernel()
            manager.signal_kernel(signal.SIGINT)
            time.sleep(0.02)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive("1+1", timeout=30, allow_stdin=False)
        assert reply["content"]["status"] == "ok"
        client.stop_channels()
    finally:
        manager.shutdown_kernel()
