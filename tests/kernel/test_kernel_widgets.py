"""Comms as ipywidgets use them: widgets open comms, frontend updates reach
Python, and the Output widget captures a cell's output."""

import pytest

pytest.importorskip("ipywidgets")


def _comm_msg(frontend, comm_id, data):
    msg = frontend.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    frontend.client.shell_channel.send(msg)
    return frontend.outputs(msg["header"]["msg_id"])


def _slider(frontend, name, value):
    reply, outputs = frontend.execute(
        f"import ipywidgets\n{name} = ipywidgets.IntSlider(value={value})\n{name}"
    )
    assert reply["status"] == "ok"
    opens = [m for m in outputs if m["msg_type"] == "comm_open"]
    assert {m["content"]["target_name"] for m in opens} == {"jupyter.widget"}
    slider = [
        m for m in opens if m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"
    ]
    assert len(slider) == 1
    view = next(m for m in outputs if m["msg_type"] == "execute_result")["content"]["data"]
    comm_id = slider[0]["content"]["comm_id"]
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == comm_id
    return comm_id


def test_frontend_update_reaches_python(frontend):
    comm_id = _slider(frontend, "slider", 3)
    echoed = _comm_msg(
        frontend, comm_id, {"method": "update", "state": {"value": 7}, "buffer_paths": []}
    )
    assert frontend.value("slider.value") == "7"
    assert [m["content"]["data"]["method"] for m in echoed] == ["echo_update"]


def test_python_update_reaches_the_frontend(frontend):
    comm_id = _slider(frontend, "other", 1)
    reply, outputs = frontend.execute("other.value = 9")
    assert reply["status"] == "ok"
    updates = [m["content"] for m in outputs if m["msg_type"] == "comm_msg"]
    assert {
        "comm_id": comm_id,
        "data": {"method": "update", "state": {"value": 9}, "buffer_paths": []},
    } in updates


def test_comm_info_lists_widget_comms(frontend):
    comm_id = _slider(frontend, "listed", 0)
    msg_id = frontend.client.comm_info(target_name="jupyter.widget")
    comms = frontend.reply(msg_id)["content"]["comms"]
    assert comms[comm_id] == {"target_name": "jupyter.widget"}


def test_output_widget_tags_captured_output_with_the_cell(frontend):
    code = "import ipywidgets\nout = ipywidgets.Output()\nwith out:\n    print('captured')"
    msg_id = frontend.client.execute(code)
    assert frontend.reply(msg_id)["content"]["status"] == "ok"
    outputs = frontend.outputs(msg_id)
    states = [
        m["content"]["data"]["state"]
        for m in outputs
        if m["msg_type"] == "comm_msg" and "msg_id" in m["content"]["data"].get("state", {})
    ]
    assert states[0]["msg_id"] == msg_id
    assert states[-1]["msg_id"] == ""
    assert frontend.stream(outputs) == "captured\n"


def test_unknown_comm_target_is_closed(frontend):
    msg = frontend.client.session.msg(
        "comm_open", {"comm_id": "c0ffee", "target_name": "no.such.target", "data": {}}
    )
    frontend.client.shell_channel.send(msg)
    outputs = frontend.outputs(msg["header"]["msg_id"])
    closes = [m["content"] for m in outputs if m["msg_type"] == "comm_close"]
    assert closes == [{"comm_id": "c0ffee", "data": {}}]
