"""Requests beyond execute, where jupyter_kernel_test's checks stop."""


def test_kernel_info_matches_ipykernel_language_info(frontend):
    msg_id = frontend.client.kernel_info()
    content = frontend.reply(msg_id)["content"]
    assert content["implementation"] == "pmp"
    assert content["protocol_version"] == "5.3"
    info = content["language_info"]
    assert info["name"] == "python"
    assert info["codemirror_mode"] == {"name": "ipython", "version": 3}
    assert info["pygments_lexer"] == "ipython3"
    assert info["nbconvert_exporter"] == "python"
    assert "IPython" in content["banner"]


def test_kernel_info_on_control_while_a_cell_runs(frontend):
    client = frontend.client
    busy = client.execute("import time; time.sleep(1)")
    msg = client.session.msg("kernel_info_request")
    client.control_channel.send(msg)
    reply = client.get_control_msg(timeout=0.5)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["content"]["implementation"] == "pmp"
    assert frontend.reply(busy)["content"]["status"] == "ok"


def test_history_range_of_the_running_session(frontend):
    frontend.execute("range_marker = 'first'")
    frontend.execute("range_marker")
    msg_id = frontend.client.history(hist_access_type="tail", n=2, raw=True, output=False)
    tail = frontend.reply(msg_id)["content"]["history"]
    session, start = tail[0][0], tail[0][1]
    msg_id = frontend.client.history(
        hist_access_type="range", session=session, start=start, stop=start + 2, raw=True
    )
    history = frontend.reply(msg_id)["content"]["history"]
    assert [tuple(h) for h in history] == [tuple(h) for h in tail]


def test_completion_in_the_middle_of_a_line(frontend):
    frontend.execute("import os")
    code = "os.pa + 1"
    msg_id = frontend.client.complete(code, cursor_pos=5)
    content = frontend.reply(msg_id)["content"]
    assert "path" in content["matches"]
    assert (content["cursor_start"], content["cursor_end"]) == (3, 5)


def test_inspect_of_an_unknown_name(frontend):
    msg_id = frontend.client.inspect("no_such_name_anywhere")
    content = frontend.reply(msg_id)["content"]
    assert content["status"] == "ok"
    assert content["found"] is False


def test_an_unknown_request_is_answered_with_an_error(frontend):
    msg = frontend.client.session.msg("frobnicate_request", {})
    frontend.client.shell_channel.send(msg)
    reply = frontend.reply(msg["header"]["msg_id"])
    assert reply["msg_type"] == "frobnicate_reply"
    assert reply["content"]["status"] == "error"


def test_a_badly_signed_request_is_dropped(frontend):
    client = frontend.client
    key = client.session.key
    client.session.key = b"not the key"
    try:
        dropped = client.execute("signed_badly = 1")
    finally:
        client.session.key = key
    assert frontend.value("'signed_badly' in dir()") == "False"
    assert client.shell_channel.msg_ready() is False or all(
        m["parent_header"].get("msg_id") != dropped for m in client.shell_channel.get_msgs()
    )
