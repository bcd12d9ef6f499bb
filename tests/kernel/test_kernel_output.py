"""Cell output at every level reaches the frontend, in order."""


def test_python_and_c_level_output_in_program_order(frontend):
    code = (
        "import os, sys\n"
        "print('a')\n"
        "os.write(1, b'b\\n')\n"
        "print('c')\n"
        "os.system('echo d')\n"
        "sys.stdout.write('e\\n')"
    )
    reply, outputs = frontend.execute(code)
    assert reply["status"] == "ok"
    assert frontend.stream(outputs) == "a\nb\nc\nd\ne\n"


def test_stderr_of_python_c_and_subprocesses(frontend):
    code = (
        "import os, subprocess, sys\n"
        "print('py-err', file=sys.stderr)\n"
        "os.write(2, b'fd-err\\n')\n"
        "subprocess.run(['sh', '-c', 'echo child-out; echo child-err >&2'])"
    )
    reply, outputs = frontend.execute(code)
    assert reply["status"] == "ok"
    assert frontend.stream(outputs, "stderr") == "py-err\nfd-err\nchild-err\n"
    assert frontend.stream(outputs) == "child-out\n"


def test_output_shows_while_the_cell_runs(frontend):
    msg_id = frontend.client.execute("import time\nprint('early', flush=False)\ntime.sleep(3)")
    while True:
        msg = frontend.client.get_iopub_msg(timeout=2.5)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    assert msg["content"]["text"] == "early\n"
    assert frontend.reply(msg_id)["content"]["status"] == "ok"


def test_errors_are_one_error_message_and_an_error_reply(frontend):
    reply, outputs = frontend.execute("print('before')\n1/0")
    assert reply["status"] == "error"
    assert reply["ename"] == "ZeroDivisionError"
    assert [m["msg_type"] for m in outputs] == ["execute_input", "stream", "error"]
    assert outputs[-1]["content"]["ename"] == "ZeroDivisionError"


def test_display_update_by_display_id(frontend):
    reply, outputs = frontend.execute(
        "from IPython.display import display\nh = display('first', display_id=True)\nh.update('second')"
    )
    assert reply["status"] == "ok"
    kinds = [m["msg_type"] for m in outputs]
    assert kinds == ["execute_input", "display_data", "update_display_data"]
    first, second = outputs[1]["content"], outputs[2]["content"]
    assert first["transient"]["display_id"] == second["transient"]["display_id"]
    assert second["data"]["text/plain"] == "'second'"


def test_images_are_base64(frontend):
    code = (
        "import base64\n"
        "from IPython.display import Image, display\n"
        "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
        "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')\n"
        "display(Image(png))"
    )
    reply, outputs = frontend.execute(code)
    assert reply["status"] == "ok"
    data = next(m for m in outputs if m["msg_type"] == "display_data")["content"]["data"]
    assert data["image/png"].startswith("iVBORw0KGgo")


def test_silent_execution_has_no_input_and_no_count(frontend):
    count = frontend.execute("1")[0]["execution_count"]
    reply, outputs = frontend.execute("x_silent = 41\nx_silent", silent=True)
    assert reply["status"] == "ok"
    assert outputs == []
    assert frontend.execute("2")[0]["execution_count"] == count + 1


def test_user_expressions(frontend):
    reply, _ = frontend.execute("q = 5", user_expressions={"ok": "q * 2", "bad": "1/0"})
    expressions = reply["user_expressions"]
    assert expressions["ok"]["status"] == "ok"
    assert expressions["ok"]["data"]["text/plain"] == "10"
    assert expressions["bad"]["status"] == "error"
    assert expressions["bad"]["ename"] == "ZeroDivisionError"


def test_set_next_input_payload(frontend):
    reply, _ = frontend.execute("get_ipython().set_next_input('next cell')")
    assert reply["payload"] == [{"source": "set_next_input", "text": "next cell", "replace": False}]
