"""executorlib's log_obj_size in a notebook: the sizes show under the cell
without any logging set up, as executorlib's records do."""


def test_log_obj_size_shows_the_call_sizes_under_the_cell(frontend):
    code = (
        "from pmp import SingleNodeExecutor\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "with SingleNodeExecutor(log_obj_size=True) as exe:\n"
        "    print(exe.submit(add, 1, b=2).result(60))\n"
    )
    reply, outputs = frontend.execute(code, timeout=90)
    assert reply["status"] == "ok", reply
    assert frontend.stream(outputs) == "3\n"
    # The call's sizes are logged by the cell's own thread, so under this
    # cell; the result's come from the thread that resolves the Future.
    assert "submit add: function " in frontend.stream(outputs, "stderr"), outputs
