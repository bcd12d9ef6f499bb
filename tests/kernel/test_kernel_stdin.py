"""input() and getpass() are answered by the frontend."""


def _answer(frontend, code, answer):
    msg_id = frontend.client.execute(code, allow_stdin=True)
    request = frontend.client.get_stdin_msg(timeout=30)
    assert request["parent_header"]["msg_id"] == msg_id
    frontend.client.input(answer)
    return request["content"], frontend.reply(msg_id)["content"]


def test_input_round_trip(frontend):
    request, reply = _answer(frontend, "name = input('Who? ')", "Ada")
    assert request == {"prompt": "Who? ", "password": False}
    assert reply["status"] == "ok"
    assert frontend.value("name") == "'Ada'"


def test_getpass_asks_for_a_password(frontend):
    request, reply = _answer(frontend, "import getpass; secret = getpass.getpass()", "s3cret")
    assert request["password"] is True
    assert reply["status"] == "ok"
    assert frontend.value("secret") == "'s3cret'"


def test_input_without_stdin_is_an_error(frontend):
    reply, _ = frontend.execute("input()", allow_stdin=False)
    assert reply["status"] == "error"
    assert reply["ename"] == "StdinNotImplementedError"
