"""The kernel's shortcuts through IPython give exactly IPython's results:
the text/plain-only display of builtin scalars, the skipped static input
transformations and async check, the history written when the kernel is
idle, and the kernel_info reply given before IPython is imported."""

import contextlib
import json
import sqlite3
import time

import pytest
from jupyter_client.manager import KernelManager


def results(outputs):
    return [m["content"] for m in outputs if m["msg_type"] == "execute_result"]


def ipython_format(frontend, expression):
    """What IPython's own DisplayFormatter makes of `expression` (the
    kernel's shortcut sits in the display hook, not in the formatter)."""
    code = (
        "import json as _json\n"
        f"_json.dumps(get_ipython().display_formatter.format({expression})[0])"
    )
    return json.loads(eval(frontend.value(code)))


SCALARS = [
    "1+1",
    "-7",
    "2**100",
    "3.5",
    "1e300*10",
    "float('nan')",
    "0.1+0.2",
    "True",
    "False",
    "'plain'",
    "'it\\'s \"quoted\"'",
    "'line\\nbreak'",
    "'\\u2028'",
    "''",
    "'é'",
]


@pytest.mark.parametrize("expression", SCALARS)
def test_scalars_display_as_ipython_formats_them(frontend, expression):
    reply, outputs = frontend.execute(expression)
    assert reply["status"] == "ok"
    (result,) = results(outputs)
    assert result["data"] == ipython_format(frontend, expression)
    assert result["metadata"] == {}
    assert result["execution_count"] == reply["execution_count"]


def test_an_int_too_long_to_print_is_ipythons_error(frontend):
    frontend.execute("import sys\nsys.set_int_max_str_digits(1000)")
    try:
        _, outputs = frontend.execute("10**2000")
    finally:
        frontend.execute("sys.set_int_max_str_digits(0)")
    # IPython's formatter reports the ValueError and shows nothing else.
    assert [m["msg_type"] for m in outputs] == ["execute_input", "error"]
    assert outputs[1]["content"]["ename"] == "ValueError"


def test_a_repr_html_is_still_asked_for(frontend):
    code = (
        "class Rich:\n"
        "    def _repr_html_(self):\n"
        "        return '<b>rich</b>'\n"
        "    def __repr__(self):\n"
        "        return 'Rich()'\n"
        "Rich()"
    )
    (result,) = results(frontend.execute(code)[1])
    assert result["data"] == {"text/plain": "Rich()", "text/html": "<b>rich</b>"}


def test_a_subclass_of_int_keeps_its_own_reprs(frontend):
    code = "class Fancy(int):\n    def _repr_markdown_(self):\n        return '**fancy**'\nFancy(3)"
    (result,) = results(frontend.execute(code)[1])
    assert result["data"] == {"text/plain": "3", "text/markdown": "**fancy**"}


def test_a_registered_text_formatter_for_int_is_honoured(frontend):
    plain = "get_ipython().display_formatter.formatters['text/plain']"
    frontend.execute(f"{plain}.for_type(int, lambda obj, p, cycle: p.text('int ' + repr(obj)))")
    try:
        assert frontend.value("41+1") == "int 42"
        # bool is an int: its singleton printer still comes first.
        assert frontend.value("True") == "True"
    finally:
        frontend.execute(f"{plain}.pop(int)")
    assert frontend.value("41+1") == "42"


def test_a_registered_html_formatter_for_int_is_honoured(frontend):
    html = "get_ipython().display_formatter.formatters['text/html']"
    frontend.execute(f"{html}.for_type(int, lambda obj: '<i>%d</i>' % obj)")
    try:
        (result,) = results(frontend.execute("6*7")[1])
        assert result["data"] == {"text/plain": "42", "text/html": "<i>42</i>"}
    finally:
        frontend.execute(f"{html}.pop(int)")
    (result,) = results(frontend.execute("6*7")[1])
    assert result["data"] == {"text/plain": "42"}


def test_a_formatter_registered_for_object_is_honoured(frontend):
    latex = "get_ipython().display_formatter.formatters['text/latex']"
    frontend.execute(f"{latex}.for_type(object, lambda obj: '$x$')")
    try:
        (result,) = results(frontend.execute("5")[1])
        assert result["data"] == {"text/plain": "5", "text/latex": "$x$"}
    finally:
        frontend.execute(f"{latex}.pop(object)")


def test_precision_magic_applies_to_floats(frontend):
    frontend.execute("%precision 3")
    try:
        assert frontend.value("3.14159265") == "3.142"
    finally:
        frontend.execute("%precision")
    assert frontend.value("3.14159265") == "3.14159265"


def test_plain_repr_without_pprint(frontend):
    frontend.execute("%pprint")  # toggles pretty printing off
    try:
        assert frontend.value("'x'") == "'x'"
        assert frontend.value("12") == "12"
    finally:
        frontend.execute("%pprint")


def test_output_history_variables_are_set(frontend):
    reply, _ = frontend.execute("40+2")
    count = reply["execution_count"]
    assert frontend.value("_") == "42"
    assert frontend.value(f"Out[{count}]") == "42"
    assert frontend.value(f"_{count}") == "42"
    assert frontend.value(f"_i{count}") == "'40+2'"


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        ("1+1;", False),
        ("1+1 ;  # comment", False),
        ("'a;b'", True),
        ("x_semi = 3; x_semi", True),
    ],
)
def test_a_semicolon_at_the_end_suppresses_output(frontend, code, shown):
    reply, outputs = frontend.execute(code)
    assert reply["status"] == "ok"
    assert bool(results(outputs)) == shown


# Cells around every case IPython's static transformations handle, and
# plain Python next to them.
CELLS = [
    "1+1",
    "x = 1\ny = 2\n",
    "if True:\n    z = 1\nelse:\n    z = 2",
    "x = 1\n   \ny = 2",
    "  indented = 1",
    "\n\nafter_blank = 1",
    ">>> 1+1",
    "In [3]: 1+1",
    "   ...: 1",
    "...",
    "%time 1",
    "%%time\n1",
    "!echo hi",
    "files = !ls",
    "t = %time 1",
    "len?",
    "len??",
    ",print a b",
    ";print a",
    "/print 1",
    "f(1,\n, 2)",
    "'%d' % 1",
    "a != b",
    "s = '''\n>>> not a prompt\n'''",
    "x = 1\x0cy = 2",
    "x = 1\r\ny = 2",
    "\tx = 1",
    "",
]


@pytest.mark.parametrize("cell", CELLS)
def test_static_transformations_are_ipythons(frontend, cell):
    code = (
        "from IPython.core.inputtransformer2 import TransformerManager as _TM\n"
        f"_cell = {cell!r}\n"
        "(get_ipython().input_transformer_manager.transform_cell(_cell),"
        " _TM().transform_cell(_cell))"
    )
    quick, stock = eval(frontend.value(code))
    assert quick == stock


def test_an_added_transformation_still_runs(frontend):
    frontend.execute(
        "def _shout(lines):\n"
        "    return [line.replace('whisper', 'SHOUT') for line in lines]\n"
        "get_ipython().input_transformers_cleanup.append(_shout)"
    )
    try:
        assert frontend.value("'whisper'") == "'SHOUT'"
    finally:
        frontend.execute("get_ipython().input_transformers_cleanup.remove(_shout)")
    assert frontend.value("'whisper'") == "'whisper'"


def test_history_reaches_the_database_once_the_kernel_is_idle(frontend):
    hist_file = eval(frontend.value("str(get_ipython().history_manager.hist_file)"))
    session = int(frontend.value("get_ipython().history_manager.session_number"))
    frontend.execute("history_marker = 'stored'")
    # No further cell: the kernel writes it while idle. Read the database
    # from here, as another IPython would.
    deadline = time.monotonic() + 30
    stored = []
    while "history_marker = 'stored'" not in stored and time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.closing(sqlite3.connect(hist_file)) as db:
            rows = db.execute("SELECT source_raw FROM history WHERE session = ?", (session,))
            stored = [row[0] for row in rows]
    assert "history_marker = 'stored'" in stored


def test_early_kernel_info_is_ipythons(frontend):
    msg_id = frontend.client.kernel_info()
    content = frontend.reply(msg_id)["content"]
    again = frontend.reply(frontend.client.kernel_info())["content"]
    assert again == content
    banner = eval(frontend.value("get_ipython().banner"))
    # The last line is a tip IPython picks at random.
    assert content["banner"].splitlines()[:-1] == banner.splitlines()[:-1]
    assert content["banner"].splitlines()[-1].startswith("Tip: ")
    assert banner.splitlines()[-1].startswith("Tip: ")
    version = eval(frontend.value("__import__('platform').python_version()"))
    assert content["language_info"]["version"] == version


def test_a_cell_sent_with_the_first_kernel_info_waits_for_ipython():
    # Straight after the launch, without waiting for the kernel to be ready.
    manager = KernelManager(kernel_name="pmp")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        info = client.kernel_info()
        execute = client.execute("get_ipython().__class__.__name__")
        replies = {}
        while len(replies) < 2:
            msg = client.get_shell_msg(timeout=60)
            replies[msg["parent_header"]["msg_id"]] = msg
        assert replies[info]["content"]["status"] == "ok"
        assert replies[execute]["content"]["status"] == "ok"
        while True:
            msg = client.get_iopub_msg(timeout=60)
            if (
                msg["parent_header"].get("msg_id") == execute
                and msg["msg_type"] == "execute_result"
            ):
                break
        assert msg["content"]["data"]["text/plain"] == "'PmpShell'"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_top_level_await_still_runs(frontend):
    assert frontend.value("import asyncio\nawait asyncio.sleep(0, 'awaited')") == "'awaited'"
    code = "async def _gen():\n    yield 1\n[x async for x in _gen()]"
    assert frontend.value(code) == "[1]"
