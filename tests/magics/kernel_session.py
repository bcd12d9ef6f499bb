"""Driving a real kernel as a frontend does (jupyter_client), for the magics'
tests: a Session that runs cells and records every display's updates, and
what the tests read from its messages. The fixtures that start one are in
conftest.py."""

import contextlib
import queue
import re
import time

import jupyter_client
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel


def kernel_available(name):
    """Whether a kernelspec `name` is registered (pmp's: by ./install.sh)."""
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return False
    return True


class Session:
    """A kernel started by jupyter_client and driven as a frontend drives it;
    it keeps every display's bundles (`displays`) and every request's stream
    text (`streams`), whichever cell they arrive with."""

    def __init__(self, kernel_name, **options):
        self.manager, self.client = jupyter_client.manager.start_new_kernel(
            kernel_name=kernel_name, startup_timeout=60, **options
        )
        self.displays = {}  # display_id -> list of text/plain bundles, in order
        self.streams = {}  # parent msg_id -> stream text published for that request
        self.last_msg_id = None

    def run(self, code, timeout=60):
        """Execute; return (reply content, this cell's IOPub messages). Display
        updates from any cell are recorded in self.displays."""
        msg_id = self.last_msg_id = self.client.execute(code)
        mine = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            self._record(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mine.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        return reply["content"], mine

    def _record(self, msg):
        if msg["msg_type"] == "stream":
            parent = msg["parent_header"].get("msg_id")
            self.streams[parent] = self.streams.get(parent, "") + msg["content"]["text"]
        if msg["msg_type"] in ("display_data", "update_display_data"):
            display_id = msg["content"].get("transient", {}).get("display_id")
            if display_id:
                self.displays.setdefault(display_id, []).append(msg["content"]["data"])

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self._record(self.client.get_iopub_msg(timeout=0.1))

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def display_id_of(messages):
    (first,) = [m for m in messages if m["msg_type"] == "display_data"]
    assert "text/html" in first["content"]["data"]
    return first["content"]["transient"]["display_id"]


def table_rows(text, header):
    """The rows of the text table under `header` (its first column's name)
    as lists of cells: columns are two or more spaces apart."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith(" ") and ":" in line.split("  ")[0]:
            break  # "workers: ...", "tasks: ...", "task store ...": the table ended
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def stream_text(messages):
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def run_and_interrupt(session, code, ready, timeout=120):
    """Execute `code`, send an interrupt once `ready(what the cell's display
    shows last, or "")` holds; return (reply content, the cell's IOPub
    messages)."""
    msg_id = session.client.execute(code)
    mine, interrupted = [], False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            msg = session.client.get_iopub_msg(timeout=0.2)
            session._record(msg)
            if msg["parent_header"].get("msg_id") == msg_id:
                mine.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
        shown = [
            session.displays[m["content"]["transient"]["display_id"]][-1]["text/plain"]
            for m in mine
            if m["msg_type"] == "display_data"
        ]
        if not interrupted and ready(shown[-1] if shown else ""):
            session.manager.interrupt_kernel()
            interrupted = True
    assert interrupted, mine
    return session.client.get_shell_msg(timeout=60)["content"], mine


def wait_for_file(path):
    """The code of a cell's lines that wait until `path` exists."""
    return f"import os, time\nwhile not os.path.exists({str(path)!r}):\n    time.sleep(0.05)\n"
