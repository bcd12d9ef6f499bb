"""Kernel tests run pmp-kernel the way Jupyter does: through the `pmp`
kernelspec. Nothing is built here; without a registered, built kernel every
test in this directory is skipped with the command that fixes it."""

import os
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TIMEOUT_S = 120
HOW = (
    "build and register it: PYO3_PYTHON=.venv/bin/python cargo build -p pmp-kernel && "
    "target/debug/pmp-kernel install --sys-prefix (or ./install.sh)"
)


def _kernel_problem():
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return "jupyter_client is not installed"
    try:
        spec = KernelSpecManager().get_kernel_spec("pmp")
    except NoSuchKernel:
        return f"no 'pmp' kernelspec: {HOW}"
    if not os.access(spec.argv[0], os.X_OK):
        return f"the pmp kernelspec runs {spec.argv[0]}, which does not exist: {HOW}"
    return None


def pytest_collection_modifyitems(config, items):
    problem = _kernel_problem()
    skip = pytest.mark.skip(reason=problem) if problem else None
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        if skip:
            item.add_marker(skip)
        elif item.get_closest_marker("timeout") is None:
            # A kernel that stops answering fails its test instead of hanging CI.
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


class Frontend:
    """A frontend talking to one pmp kernel through jupyter_client."""

    def __init__(self, manager, client):
        self.manager = manager
        self.client = client

    def reply(self, msg_id, timeout=30):
        """The shell reply to `msg_id` (replies to other requests are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def outputs(self, msg_id, timeout=30):
        """IOPub messages caused by `msg_id`, up to its idle status (excluded)."""
        deadline = time.monotonic() + timeout
        messages = []
        while True:
            msg = self.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    return messages
                continue
            messages.append(msg)

    def execute(self, code, timeout=30, **options):
        """Run `code`; returns (reply content, IOPub messages)."""
        msg_id = self.client.execute(code, **options)
        reply = self.reply(msg_id, timeout)
        return reply["content"], self.outputs(msg_id, timeout)

    def value(self, expression):
        """The text/plain repr of `expression` in the kernel."""
        reply, outputs = self.execute(expression)
        assert reply["status"] == "ok", reply
        results = [m for m in outputs if m["msg_type"] == "execute_result"]
        return results[-1]["content"]["data"]["text/plain"]

    @staticmethod
    def stream(outputs, name="stdout"):
        return "".join(
            m["content"]["text"]
            for m in outputs
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )


@pytest.fixture(scope="module")
def frontend():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="pmp", startup_timeout=60)
    try:
        yield Frontend(manager, client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel()
