"""Kernel subshells (JEP 91) through a real pmp-kernel: create, list and
delete them on the control channel; a request whose header names a subshell
runs in that subshell's thread while the main shell is busy, and everything
it causes carries its own parent."""

import time
import types

import pytest

TIMEOUT_S = 60


def control(frontend, msg_type, content=None):
    """Send `msg_type` on the control channel; returns the reply content."""
    client = frontend.client
    msg = client.session.msg(msg_type, content or {})
    client.control_channel.send(msg)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        reply = client.get_control_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["msg_type"] == msg_type.replace("_request", "_reply")
            return reply["content"]


def create_subshell(frontend):
    reply = control(frontend, "create_subshell_request")
    assert reply["status"] == "ok", reply
    return reply["subshell_id"]


def send(frontend, code, subshell_id=None):
    """Send an execute request (to `subshell_id`, or the main shell); returns its msg_id."""
    client = frontend.client
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = client.session.msg("execute_request", content)
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    client.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def replies(frontend, msg_ids):
    """The shell replies to `msg_ids`, in the order they arrived."""
    wanted, got = set(msg_ids), []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < len(wanted):
        msg = frontend.client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") in wanted:
            got.append(msg)
    return got


def iopub_until_idle(frontend, msg_ids):
    """Every IOPub message until each of `msg_ids` has gone idle."""
    waiting, messages = set(msg_ids), []
    deadline = time.monotonic() + TIMEOUT_S
    while waiting:
        msg = frontend.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        messages.append(msg)
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            waiting.discard(parent)
    return messages


def wait_busy(frontend, msg_id):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        msg = frontend.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "busy"
        ):
            return


def caused_by(messages, msg_id, msg_type=None):
    return [
        m
        for m in messages
        if m["parent_header"].get("msg_id") == msg_id
        and (msg_type is None or m["msg_type"] == msg_type)
    ]


def stream_text(messages):
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def test_kernel_info_says_subshells_are_supported(frontend):
    frontend.client.kernel_info()
    reply = frontend.client.get_shell_msg(timeout=TIMEOUT_S)
    assert "kernel subshells" in reply["content"]["supported_features"]


def test_subshells_are_created_listed_and_deleted(frontend):
    first = create_subshell(frontend)
    second = create_subshell(frontend)
    assert first != second
    listed = control(frontend, "list_subshell_request")
    assert listed == {"status": "ok", "subshell_id": [first, second]}

    assert control(frontend, "delete_subshell_request", {"subshell_id": first}) == {"status": "ok"}
    assert control(frontend, "list_subshell_request")["subshell_id"] == [second]

    again = control(frontend, "delete_subshell_request", {"subshell_id": first})
    assert again["status"] == "error"
    assert repr(first).replace("'", '"') in again["evalue"], again
    missing = control(frontend, "delete_subshell_request", {})
    assert missing["status"] == "error"
    assert "subshell_id" in missing["evalue"], missing

    # A request for a deleted subshell is answered with an error naming it.
    msg_id = send(frontend, "1", subshell_id=first)
    (reply,) = replies(frontend, [msg_id])
    assert reply["content"]["status"] == "error"
    assert first in reply["content"]["evalue"], reply["content"]

    assert control(frontend, "delete_subshell_request", {"subshell_id": second})["status"] == "ok"
    assert control(frontend, "list_subshell_request")["subshell_id"] == []


def test_a_subshell_answers_while_the_main_shell_sleeps_and_outputs_keep_their_parents(
    frontend,
):
    subshell = create_subshell(frontend)
    main = send(
        frontend,
        "import time\nprint('main before', flush=True)\ntime.sleep(8)\nprint('main after')\n'main'",
    )
    wait_busy(frontend, main)
    sub = send(
        frontend,
        "import sys\nprint('sub out')\nprint('sub err', file=sys.stderr)\n"
        "from IPython.display import display\ndisplay('sub shown')\n6 * 7",
        subshell_id=subshell,
    )
    order = replies(frontend, [main, sub])
    assert [r["parent_header"]["msg_id"] for r in order] == [sub, main]
    assert [r["content"]["status"] for r in order] == ["ok", "ok"]

    messages = iopub_until_idle(frontend, [main, sub])
    sub_messages = caused_by(messages, sub)
    assert stream_text(caused_by(messages, sub, "stream")) == "sub out\nsub err\n"
    (shown,) = caused_by(messages, sub, "display_data")
    assert shown["content"]["data"]["text/plain"] == "'sub shown'"
    (result,) = caused_by(messages, sub, "execute_result")
    assert result["content"]["data"]["text/plain"] == "42"
    states = [m["content"]["execution_state"] for m in sub_messages if m["msg_type"] == "status"]
    assert states == ["busy", "idle"]

    assert stream_text(caused_by(messages, main, "stream")) == "main before\nmain after\n"
    (result,) = caused_by(messages, main, "execute_result")
    assert result["content"]["data"]["text/plain"] == "'main'"
    # Nothing of one cell went to the other, nor to no cell at all.
    for m in messages:
        if m["msg_type"] in ("stream", "display_data", "execute_result"):
            assert m["parent_header"].get("msg_id") in (main, sub), m

    # The subshell shares the main shell's namespace.
    sub = send(frontend, "time.sleep(0) or 'shared'", subshell_id=subshell)
    (reply,) = replies(frontend, [sub])
    assert reply["content"]["status"] == "ok"
    assert control(frontend, "delete_subshell_request", {"subshell_id": subshell})["status"] == "ok"


def test_an_interrupt_reaches_the_main_shell_only(frontend):
    subshell = create_subshell(frontend)
    sub = send(frontend, "import time\ntime.sleep(3)\n'sub slept'", subshell_id=subshell)
    main = send(frontend, "import time\ntime.sleep(60)")
    wait_busy(frontend, main)
    assert control(frontend, "interrupt_request")["status"] == "ok"
    by_id = {r["parent_header"]["msg_id"]: r["content"] for r in replies(frontend, [main, sub])}
    assert by_id[main]["status"] == "error"
    assert by_id[main]["ename"] == "KeyboardInterrupt"
    assert by_id[sub]["status"] == "ok", by_id[sub]
    iopub_until_idle(frontend, [main, sub])
    control(frontend, "delete_subshell_request", {"subshell_id": subshell})


def test_an_error_in_a_subshell_aborts_its_own_queue_only(frontend):
    subshell = create_subshell(frontend)
    failing = send(frontend, "raise ValueError('in the subshell')", subshell_id=subshell)
    queued = send(frontend, "'never runs'", subshell_id=subshell)
    main = send(frontend, "'main runs'")
    by_id = {
        r["parent_header"]["msg_id"]: r["content"]
        for r in replies(frontend, [failing, queued, main])
    }
    assert by_id[failing]["ename"] == "ValueError"
    assert by_id[queued]["status"] == "aborted"
    assert by_id[main]["status"] == "ok"
    iopub_until_idle(frontend, [failing, queued, main])
    # Aborting stopped with the queue it was in.
    again = send(frontend, "'runs again'", subshell_id=subshell)
    (reply,) = replies(frontend, [again])
    assert reply["content"]["status"] == "ok"
    iopub_until_idle(frontend, [again])
    control(frontend, "delete_subshell_request", {"subshell_id": subshell})


@pytest.mark.timeout(180)
def test_pmp_status_cancel_and_futures_from_a_subshell_while_a_cell_waits(frontend):
    pytest.importorskip("pmp")
    for code in (
        "%pmp config --max-workers 1 --block-allocation",
        "%%pmp submit --name slow\nimport time\ntime.sleep(6)\n'slept'",
        "%pmp submit --name queued abs(-2)",
    ):
        reply, _ = frontend.execute(code, timeout=TIMEOUT_S)
        assert reply["status"] == "ok", reply
    subshell = create_subshell(frontend)
    main = send(frontend, "slow.result()")
    wait_busy(frontend, main)

    status = send(frontend, "%pmp status", subshell_id=subshell)
    done = send(frontend, "slow.done(), queued.done()", subshell_id=subshell)
    cancel = send(frontend, "%pmp cancel queued", subshell_id=subshell)
    # Last: its error aborts what the subshell has queued behind it.
    now = send(frontend, "slow.result(timeout=0)", subshell_id=subshell)
    order = replies(frontend, [status, done, cancel, now, main])
    # The subshell answered all four while the main shell still waited.
    assert order[-1]["parent_header"]["msg_id"] == main
    by_id = {r["parent_header"]["msg_id"]: r["content"] for r in order}
    assert by_id[status]["status"] == "ok", by_id[status]
    assert by_id[done]["status"] == "ok", by_id[done]
    assert by_id[now]["ename"] == "TimeoutError", by_id[now]
    assert by_id[cancel]["status"] == "ok", by_id[cancel]
    assert by_id[main]["status"] == "ok", by_id[main]

    messages = iopub_until_idle(frontend, [status, done, cancel, main])
    (table,) = caused_by(messages, status, "display_data")
    text = table["content"]["data"]["text/plain"]
    assert "slow" in text and "queued" in text, text
    (result,) = caused_by(messages, done, "execute_result")
    assert result["content"]["data"]["text/plain"] == "(False, False)"
    assert "cancelled 1 of 1" in stream_text(caused_by(messages, cancel, "stream"))
    (result,) = caused_by(messages, main, "execute_result")
    assert result["content"]["data"]["text/plain"] == "'slept'"
    assert frontend.value("queued.cancelled()") == "True"
    control(frontend, "delete_subshell_request", {"subshell_id": subshell})


def test_input_in_a_subshell_asks_for_the_subshells_request(frontend):
    subshell = create_subshell(frontend)
    main = send(frontend, "import time\ntime.sleep(5)")
    wait_busy(frontend, main)
    client = frontend.client
    msg = client.session.msg(
        "execute_request",
        {"code": "input('name? ')", "silent": False, "allow_stdin": True},
    )
    msg["header"]["subshell_id"] = subshell
    client.shell_channel.send(msg)
    sub = msg["header"]["msg_id"]
    asked = client.get_stdin_msg(timeout=TIMEOUT_S)
    assert asked["parent_header"]["msg_id"] == sub
    assert asked["content"]["prompt"] == "name? "
    client.input("pmp")
    order = replies(frontend, [main, sub])
    assert [r["parent_header"]["msg_id"] for r in order] == [sub, main]
    messages = iopub_until_idle(frontend, [main, sub])
    (result,) = caused_by(messages, sub, "execute_result")
    assert result["content"]["data"]["text/plain"] == "'pmp'"
    control(frontend, "delete_subshell_request", {"subshell_id": subshell})


def test_a_kernel_with_a_busy_subshell_shuts_down():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="pmp", startup_timeout=60)
    try:
        # The helpers above need only the client.
        frontend = types.SimpleNamespace(client=client)
        subshell = create_subshell(frontend)
        sub = send(frontend, "import time\ntime.sleep(600)", subshell_id=subshell)
        wait_busy(frontend, sub)
        assert control(frontend, "shutdown_request", {"restart": False})["status"] == "ok"
        # The process ends on its own, without waiting for the subshell's cell.
        assert manager.provisioner.process.wait(timeout=TIMEOUT_S) is not None
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.timeout(180)
def test_what_a_task_prints_goes_to_the_subshell_cell_that_submitted_it(frontend):
    pytest.importorskip("pmp")
    subshell = create_subshell(frontend)
    main = send(frontend, "import time\ntime.sleep(8)")
    wait_busy(frontend, main)
    sub = send(
        frontend,
        "import pmp\nwith pmp.Executor(max_workers=1) as exe:\n"
        "    exe.submit(print, 'the task says hi').result()",
        subshell_id=subshell,
    )
    order = replies(frontend, [main, sub])
    assert [r["parent_header"]["msg_id"] for r in order] == [sub, main]
    assert order[0]["content"]["status"] == "ok", order[0]["content"]
    messages = iopub_until_idle(frontend, [main, sub])
    assert "the task says hi" in stream_text(caused_by(messages, sub, "stream"))
    assert "the task says hi" not in stream_text(caused_by(messages, main, "stream"))
    control(frontend, "delete_subshell_request", {"subshell_id": subshell})
