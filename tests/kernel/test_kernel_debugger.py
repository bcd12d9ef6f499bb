"""The Jupyter debugger on pmp-kernel, driven as JupyterLab drives it:
debug_request on the control channel, debug_event on IOPub, debugpy in the
kernel (ipykernel's tests/test_debugger.py is the model)."""

import itertools
import os
import time

import pytest

pytest.importorskip("debugpy", reason="the debugger needs debugpy in the kernel's environment")

CELL = """def f(a, b):
    c = a + b
    return c

f(2, 3)
"""

_seq = itertools.count(1)


def debug(frontend, command, arguments=None, timeout=30):
    """Send one DAP request as a debug_request; returns the debug_reply content."""
    client = frontend.client
    msg = client.session.msg(
        "debug_request",
        {
            "type": "request",
            "seq": next(_seq),
            "command": command,
            "arguments": {} if arguments is None else arguments,
        },
    )
    client.control_channel.send(msg)
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get_control_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["msg_type"] == "debug_reply"
            return reply["content"]


def debug_event(frontend, event, timeout=30):
    """The next debug_event `event` on IOPub (other messages are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = frontend.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["msg_type"] == "debug_event" and msg["content"].get("event") == event:
            return msg["content"]


def names(reply):
    return {v["name"]: v["value"] for v in reply["body"]["variables"]}


def test_nothing_of_the_debugger_is_loaded_until_it_is_used(frontend):
    # Runs first in this module's kernel: no debug request has been sent yet.
    loaded = frontend.value(
        "import sys; sorted(m for m in ('debugpy', '_pmp_kernel.debugger') if m in sys.modules)"
    )
    assert loaded == "[]"


def test_kernel_info_offers_the_debugger(frontend):
    content = frontend.reply(frontend.client.kernel_info())["content"]
    assert content["debugger"] is True
    assert "debugger" in content["supported_features"]


def test_variables_of_a_plain_cell_without_a_debugging_session(frontend):
    reply, _ = frontend.execute("answer = 41 + 1\nwords = ['a', 'b']")
    assert reply["status"] == "ok"
    variables = debug(frontend, "inspectVariables")
    assert variables["success"], variables
    found = names(variables)
    assert found["answer"] == "42"
    assert "words" in found
    # IPython's bookkeeping stays out of the variables panel.
    assert not {"In", "Out", "get_ipython", "_i1", "__name__"} & set(found)

    words = next(v for v in variables["body"]["variables"] if v["name"] == "words")
    children = debug(frontend, "variables", {"variablesReference": words["variablesReference"]})
    assert children["success"], children
    assert {"'a'", "'b'"} <= set(names(children).values())

    rich = debug(frontend, "richInspectVariables", {"variableName": "answer"})
    assert rich["success"], rich
    assert rich["body"]["data"]["text/plain"] == "42"

    frontend.execute(
        "class Table:\n    def _repr_html_(self):\n        return '<b>rows</b>'\ntable = Table()"
    )
    rich = debug(frontend, "richInspectVariables", {"variableName": "table"})
    assert rich["body"]["data"]["text/html"] == "<b>rows</b>"


def test_a_debug_request_that_is_not_a_dap_request_is_refused_with_what_to_do(frontend):
    msg = frontend.client.session.msg("debug_request", {"seq": 1})
    frontend.client.control_channel.send(msg)
    reply = frontend.client.get_control_msg(timeout=30)
    assert reply["content"]["success"] is False
    assert '"command"' in reply["content"]["message"]


def test_a_request_before_initialize_is_refused_with_what_to_do(frontend):
    reply = debug(frontend, "setBreakpoints", {"source": {"path": "x.py"}, "breakpoints": []})
    assert reply["success"] is False
    assert "initialize" in reply["message"]


def test_the_debugger_does_not_start_behind_a_running_cell(frontend):
    msg_id = frontend.client.execute("import time; time.sleep(6)")
    time.sleep(0.5)
    refused = debug(frontend, "initialize", {"clientID": "test", "adapterID": ""})
    assert refused["success"] is False
    assert "a cell is running" in refused["message"]
    # The control channel is free again while the cell still runs.
    assert debug(frontend, "debugInfo")["body"]["isStarted"] is False
    assert frontend.reply(msg_id)["content"]["status"] == "ok"


def test_a_breakpoint_in_a_cell_stops_there_and_continue_finishes_the_cell(frontend):
    initialized = debug(
        frontend,
        "initialize",
        {
            "clientID": "test-client",
            "clientName": "testClient",
            "adapterID": "",
            "pathFormat": "path",
            "linesStartAt1": True,
            "columnsStartAt1": True,
            "supportsVariableType": True,
            "supportsVariablePaging": True,
            "supportsRunInTerminalRequest": True,
            "locale": "en",
        },
    )
    assert initialized["success"], initialized
    attached = debug(frontend, "attach")
    assert attached["success"], attached

    dumped = debug(frontend, "dumpCell", {"code": CELL})
    assert dumped["success"], dumped
    source = dumped["body"]["sourcePath"]
    with open(source, encoding="utf-8") as f:
        assert f.read() == CELL
    shown = debug(frontend, "source", {"source": {"path": source}})
    assert shown["success"] and shown["body"]["content"] == CELL

    placed = debug(
        frontend,
        "setBreakpoints",
        {"breakpoints": [{"line": 2}], "source": {"path": source}, "sourceModified": False},
    )
    assert placed["success"], placed
    assert placed["body"]["breakpoints"][0]["verified"]

    info = debug(frontend, "debugInfo")
    assert info["success"] and info["body"]["isStarted"]
    body = info["body"]
    # The frontend finds a cell's file from these, as it does with ipykernel.
    assert source.startswith(body["tmpFilePrefix"]) and source.endswith(body["tmpFileSuffix"])
    assert body["hashMethod"] == "Murmur2"
    assert {"source": source, "breakpoints": [{"line": 2}]} in body["breakpoints"]
    assert debug(frontend, "configurationDone")["success"]

    msg_id = frontend.client.execute(CELL)
    stopped = debug_event(frontend, "stopped")
    assert stopped["body"]["reason"] == "breakpoint"
    thread = stopped["body"]["threadId"]

    # The control channel answers while the cell's thread is stopped.
    kernel_info = frontend.client.session.msg("kernel_info_request")
    frontend.client.control_channel.send(kernel_info)
    assert frontend.client.get_control_msg(timeout=10)["msg_type"] == "kernel_info_reply"

    assert thread in debug(frontend, "debugInfo")["body"]["stoppedThreads"]
    stack = debug(frontend, "stackTrace", {"threadId": thread})
    assert stack["success"], stack
    top = stack["body"]["stackFrames"][0]
    assert (top["name"], top["line"], top["source"]["path"]) == ("f", 2, source)

    # One step: the frame moves to the next line and stops there.
    assert debug(frontend, "next", {"threadId": thread})["success"]
    assert debug_event(frontend, "stopped")["body"]["reason"] == "step"
    stack = debug(frontend, "stackTrace", {"threadId": thread})
    top = stack["body"]["stackFrames"][0]
    assert (top["name"], top["line"]) == ("f", 3)

    scopes = debug(frontend, "scopes", {"frameId": top["id"]})
    local = next(s for s in scopes["body"]["scopes"] if s["name"] == "Locals")
    variables = debug(frontend, "variables", {"variablesReference": local["variablesReference"]})
    assert names(variables) == {"a": "2", "b": "3", "c": "5"}

    evaluated = debug(
        frontend, "evaluate", {"expression": "a * 10 + b", "frameId": top["id"], "context": "repl"}
    )
    assert evaluated["success"] and evaluated["body"]["result"] == "23"

    rich = debug(frontend, "richInspectVariables", {"variableName": "b", "frameId": top["id"]})
    assert rich["success"] and rich["body"]["data"]["text/plain"] == "3"

    copied = debug(
        frontend,
        "copyToGlobals",
        {"srcVariableName": "a", "dstVariableName": "copied_a", "srcFrameId": top["id"]},
    )
    assert copied["success"], copied

    assert debug(frontend, "continue", {"threadId": thread})["success"]
    reply = frontend.reply(msg_id)["content"]
    assert reply["status"] == "ok"
    results = [m for m in frontend.outputs(msg_id) if m["msg_type"] == "execute_result"]
    assert results[-1]["content"]["data"]["text/plain"] == "5"
    assert frontend.value("copied_a") == "2"

    disconnected = debug(frontend, "disconnect", {"restart": False, "terminateDebuggee": False})
    assert disconnected["success"], disconnected
    assert debug(frontend, "debugInfo")["body"]["breakpoints"] == []
    # Without the debugger the same cell runs through, and so does the kernel.
    assert frontend.value("f(4, 5)") == "9"


LOCAL_CELL = """%%pmp submit --local --name local_task
x = 20
x + 1
"""


def test_a_pmp_submit_cell_run_locally_stops_at_its_breakpoint(frontend):
    assert debug(frontend, "initialize", {"clientID": "test", "adapterID": ""})["success"]
    assert debug(frontend, "attach")["success"]
    source = debug(frontend, "dumpCell", {"code": LOCAL_CELL})["body"]["sourcePath"]
    placed = debug(
        frontend, "setBreakpoints", {"breakpoints": [{"line": 3}], "source": {"path": source}}
    )
    assert placed["body"]["breakpoints"][0]["verified"]
    assert debug(frontend, "configurationDone")["success"]

    msg_id = frontend.client.execute(LOCAL_CELL)
    thread = debug_event(frontend, "stopped")["body"]["threadId"]
    top = debug(frontend, "stackTrace", {"threadId": thread})["body"]["stackFrames"][0]
    assert (top["line"], top["source"]["path"]) == (3, source)
    scopes = debug(frontend, "scopes", {"frameId": top["id"]})
    local = next(s for s in scopes["body"]["scopes"] if s["name"] == "Locals")
    variables = debug(frontend, "variables", {"variablesReference": local["variablesReference"]})
    assert names(variables)["x"] == "20"

    assert debug(frontend, "continue", {"threadId": thread})["success"]
    assert frontend.reply(msg_id)["content"]["status"] == "ok"
    results = [m for m in frontend.outputs(msg_id) if m["msg_type"] == "execute_result"]
    assert results[-1]["content"]["data"]["text/plain"] == "21"
    assert frontend.value("local_task.result()") == "21"
    assert debug(frontend, "disconnect", {"restart": False})["success"]


def test_pmp_submit_local_refuses_worker_resources_saying_why(frontend):
    reply, _ = frontend.execute("%%pmp submit --local --cores 2\n1")
    assert reply["status"] == "error"
    assert "--local runs in the kernel, where --cores cannot apply" in reply["evalue"]


def test_the_debugger_can_be_enabled_again_after_it_was_disabled(frontend):
    for _ in range(2):
        assert debug(frontend, "initialize", {"clientID": "test", "adapterID": ""})["success"]
        # Arguments that are not an object are read as none (the kernel
        # fills in some of attach's).
        assert debug(frontend, "attach", [1, 2])["success"]
        assert debug(frontend, "debugInfo")["body"]["isStarted"]
        assert debug(frontend, "disconnect", {"restart": False})["success"]
        assert not debug(frontend, "debugInfo")["body"]["isStarted"]
    assert frontend.value("1 + 1") == "2"

    # Enabled again, it stops at breakpoints as the first time.
    cell = "def h(n):\n    return n * 2\n\nh(21)\n"
    assert debug(frontend, "initialize", {"clientID": "test", "adapterID": ""})["success"]
    assert debug(frontend, "attach")["success"]
    source = debug(frontend, "dumpCell", {"code": cell})["body"]["sourcePath"]
    debug(frontend, "setBreakpoints", {"breakpoints": [{"line": 2}], "source": {"path": source}})
    assert debug(frontend, "configurationDone")["success"]
    msg_id = frontend.client.execute(cell)
    thread = debug_event(frontend, "stopped")["body"]["threadId"]
    assert debug(frontend, "continue", {"threadId": thread})["success"]
    assert frontend.reply(msg_id)["content"]["status"] == "ok"
    assert debug(frontend, "disconnect", {"restart": False})["success"]


def test_cell_files_are_in_a_folder_that_jupyterlab_shows_as_cells(frontend):
    # JupyterLab 4 shows a frame or breakpoint in a cell's file as `Cell [n]`
    # only where the path holds `ipykernel_` (the browser test sees it);
    # elsewhere the call stack and breakpoints show the file's path.
    prefix = debug(frontend, "debugInfo")["body"]["tmpFilePrefix"]
    assert "ipykernel_" in os.path.basename(os.path.dirname(prefix)), prefix
