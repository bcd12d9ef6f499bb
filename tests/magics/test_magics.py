"""%pmp / %%pmp through real kernels, driven by jupyter_client as a frontend:
the IOPub sequence of a status display (display_data with a display_id, then
update_display_data up to done with the result), updates arriving while
another cell sleeps, failures, cancel, bad options, `%load_ext pmp` in
ipykernel, where a task's printed output goes, and Executor.map's progress."""

import re

import pytest
from kernel_session import (
    Session,
    display_id_of,
    kernel_available,
    stream_text,
)


@pytest.mark.timeout(120)
def test_a_pmp_cell_shows_a_display_that_updates_to_done_with_the_result(pmp_kernel):
    reply, messages = pmp_kernel.run("%%pmp submit --name f\nx = 20\nx + 22")
    assert reply["status"] == "ok"
    display_id = display_id_of(messages)
    pmp_kernel.drain(2)
    states = [bundle["text/plain"] for bundle in pmp_kernel.displays[display_id]]
    assert states[0].startswith("f: queued") or states[0].startswith("f: running")
    assert "done" in states[-1] and states[-1].endswith(": 42")
    assert 'data-state="done"' in pmp_kernel.displays[display_id][-1]["text/html"]
    reply, messages = pmp_kernel.run("f.result()")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "42"


def updates_of(display_id, messages):
    return [
        m["content"]["data"]
        for m in messages
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == display_id
    ]


@pytest.mark.timeout(120)
def test_a_final_state_published_between_cells_comes_again_with_the_next_cell(pmp_kernel):
    # nbconvert keeps only messages of the cell it runs: the task ends while
    # no cell runs, so its "done" is published again when the next one starts.
    _, messages = pmp_kernel.run("%%pmp submit --name quick\n6 * 7")
    display_id = display_id_of(messages)
    pmp_kernel.drain(1.5)
    assert pmp_kernel.displays[display_id][-1]["text/plain"].endswith(": 42")
    # This cell does not even look at the task.
    _, messages = pmp_kernel.run("1 + 1")
    (update,) = updates_of(display_id, messages)
    assert 'data-state="done"' in update["text/html"]
    assert update["text/plain"].endswith(": 42")
    # Once: the cell after that gets nothing.
    _, messages = pmp_kernel.run("quick.result()")
    assert updates_of(display_id, messages) == []


@pytest.mark.timeout(120)
def test_a_cell_that_reads_the_result_gets_the_final_state_before_it(pmp_kernel):
    # Done callbacks run after result() returns: the display must not wait
    # for them, or the reading cell could end before "done" is published.
    _, messages = pmp_kernel.run("%%pmp submit --name soon\nimport time\ntime.sleep(0.5)\n'late'")
    display_id = display_id_of(messages)
    _, messages = pmp_kernel.run("soon.result()")
    updates = updates_of(display_id, messages)
    assert updates and updates[-1]["text/plain"].endswith(": 'late'"), updates


# The other cell keeps the kernel busy until the task is over, and a second
# longer (the last update can follow the end by one tick).
BUSY_CELLS = {
    "sleeping": "import time\nwhile not slow.done():\n    time.sleep(0.2)\ntime.sleep(1)",
    "looping": (
        "import time\nwhile not slow.done():\n    pass\n"
        "end = time.monotonic() + 1\nwhile time.monotonic() < end:\n    pass"
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("busy", BUSY_CELLS)
def test_updates_keep_arriving_while_another_cell_is_busy(pmp_kernel, busy):
    _, messages = pmp_kernel.run("%%pmp submit --name slow\nimport time\ntime.sleep(2)\n'slept'")
    display_id = display_id_of(messages)
    before = len(pmp_kernel.displays[display_id])
    pmp_kernel.run(BUSY_CELLS[busy])
    during = [b["text/plain"] for b in pmp_kernel.displays[display_id][before:]]
    assert any("running on" in text for text in during), during
    assert during[-1].endswith(": 'slept'"), during
    # Timed from when the worker took it, whenever the display looked.
    seconds = float(re.search(r"done in ([0-9.]+) s", during[-1]).group(1))
    assert seconds >= 2.0, during[-1]


@pytest.mark.timeout(120)
def test_a_failing_task_shows_its_exception_and_traceback(pmp_kernel):
    _, messages = pmp_kernel.run("%%pmp submit --name bad\nraise KeyError('missing')")
    display_id = display_id_of(messages)
    pmp_kernel.drain(2)
    last = pmp_kernel.displays[display_id][-1]
    assert "failed" in last["text/plain"] and "KeyError" in last["text/plain"]
    assert "<details>" in last["text/html"] and "missing" in last["text/html"]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.timeout(120)
def test_a_failing_cells_traceback_shows_its_lines_numbered_as_the_cell_shows_them(pmp_kernel):
    reply, messages = pmp_kernel.run("%%pmp submit --name bad\nx = {}\n\nx['missing']")
    cell = reply["execution_count"]
    display_id = display_id_of(messages)
    reply, _ = pmp_kernel.run("bad.result()")
    assert reply["status"] == "error" and reply["ename"] == "KeyError"
    shown = ANSI.sub("", "\n".join(reply["traceback"]))
    # The worker's part: the cell's fourth line as the user sees it (the
    # %%pmp line is the first), with its text, and no frame of pmp's runtime.
    remote = shown.split('"""')[1]
    assert f"File \"Cell In[{cell}]\", line 4, in bad\n    x['missing']" in remote, remote
    assert "pmp/worker" not in remote, remote
    assert remote.lstrip().startswith("Traceback (most recent call last):")
    pmp_kernel.drain(1)
    # Where it failed, as the running and done displays say where they ran.
    summary = pmp_kernel.displays[display_id][-1]["text/plain"]
    assert re.match(r"bad: failed after \S+ m?s on \S+, pid \d+ \(worker \d+\): KeyError", summary)
    failed = pmp_kernel.displays[display_id][-1]["text/html"]
    assert f"Cell In[{cell}]&quot;, line 4, in bad\n    x[&#x27;missing&#x27;]" in failed
    assert "runtime.py" not in failed


@pytest.mark.timeout(120)
def test_cancel_stops_a_queued_task(pmp_kernel):
    pmp_kernel.run("%pmp config --max-workers 1 --block-allocation")
    pmp_kernel.run("import time")
    pmp_kernel.run("%pmp submit --name busy time.sleep(3)")
    _, messages = pmp_kernel.run("%pmp submit --name waiting sum([1, 2])")
    display_id = display_id_of(messages)
    reply, messages = pmp_kernel.run("%pmp cancel waiting")
    assert reply["status"] == "ok"
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert "cancelled 1 of 1" in text
    pmp_kernel.drain(1.5)
    assert pmp_kernel.displays[display_id][-1]["text/plain"] == "waiting: cancelled"
    reply, messages = pmp_kernel.run("waiting.cancelled(), busy.result()")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "(True, None)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%pmp submit --cores two f(1)", "'two' is not a whole number"),
        ("%pmp submit --cores 0 f(1)", "must be at least 1, got 0"),
        ("%%pmp submit --name 1abc\n1 + 1", "'1abc' is not a Python variable name"),
        ("%pmp submit --name class f(1)", "'class' is not a Python variable name"),
        ("%pmp frobnicate", "invalid choice: 'frobnicate'"),
        ("%pmp submit 1 +", "not a call"),
        ("%pmp cancel nothing_here", "is not a Future"),
    ],
)
def test_bad_options_are_a_cell_error_with_usage_text(pmp_kernel, line, expected):
    reply, messages = pmp_kernel.run(line)
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert expected in text
    # The kernel is still there.
    reply, _ = pmp_kernel.run("1 + 1")
    assert reply["status"] == "ok"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%pmp config --max-workers -3", "must be at least 1, got -3"),
        ("%pmp config --backend nowhere", "backend must be one of"),
    ],
)
def test_a_bad_config_changes_nothing(pmp_kernel, line, expected):
    pmp_kernel.run("%pmp config --max-workers 1 --block-allocation")
    pmp_kernel.run("%%pmp submit --name before\nimport time\ntime.sleep(1)\n'kept'")
    reply, messages = pmp_kernel.run(line)
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert expected in text
    # The executor the magics had keeps its task and takes new ones.
    reply, _ = pmp_kernel.run("%%pmp submit --name after\n6 * 7")
    assert reply["status"] == "ok"
    reply, messages = pmp_kernel.run("before.result(), after.result()")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "('kept', 42)"
    # Still the one block-allocated worker: the same process ran both.
    reply, messages = pmp_kernel.run("before.place[1] == after.place[1]")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "True"


@pytest.mark.timeout(120)
def test_cache_clear_empties_the_magics_store(pmp_kernel, tmp_path):
    pmp_kernel.run(f"%pmp config --cache-directory {tmp_path / 'store'}")
    pmp_kernel.run("%%pmp submit --name one --key one --block\n1")
    pmp_kernel.run("%%pmp submit --name two --key two --block\n2")
    reply, messages = pmp_kernel.run("%pmp cache clear one")
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert reply["status"] == "ok" and "removed 1 entry" in text, text
    _, messages = pmp_kernel.run("%pmp cache clear")
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert "removed 1 entry" in text, text


@pytest.mark.timeout(120)
def test_load_ext_pmp_in_ipykernel():
    if not kernel_available("python3"):
        pytest.skip("ipykernel's python3 kernelspec is not registered")
    session = Session("python3")
    try:
        reply, _ = session.run("%load_ext pmp")
        assert reply["status"] == "ok"
        reply, messages = session.run("%pmp submit --name s --block sum([1, 2])")
        assert reply["status"] == "ok"
        display_id_of(messages)
        (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
        assert result["content"]["data"]["text/plain"] == "3"
    finally:
        session.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kernel_name", ["pmp", "python3"])
def test_a_future_as_a_cells_last_expression_renders_the_live_display(kernel_name):
    # No `%load_ext pmp` in ipykernel: `import pmp` alone gives a Future its display.
    if not kernel_available(kernel_name):
        pytest.skip(f"the {kernel_name} kernelspec is not registered")
    session = Session(kernel_name)
    try:
        session.run(
            "from pmp import Executor\nexe = Executor(max_workers=1, block_allocation=True)"
        )
        reply, messages = session.run("future = exe.submit(sum, [40, 2])\nfuture")
        assert reply["status"] == "ok"
        display_id = display_id_of(messages)
        session.drain(1.5)
        assert session.displays[display_id][-1]["text/plain"].endswith(": 42")
        session.run("exe.shutdown()")
    finally:
        session.close()


@pytest.mark.timeout(120)
def test_what_a_task_prints_appears_in_its_display(pmp_kernel):
    cell = (
        "%%pmp submit --name p\nimport sys\nprint('from the task')\n"
        "print('oops', file=sys.stderr)\n"
        "for i in (10, 50, 100):\n    print(f'\\r{i}%', end='', file=sys.stderr)\n"
        "print(file=sys.stderr)\n7"
    )
    _, messages = pmp_kernel.run(cell)
    display_id = display_id_of(messages)
    pmp_kernel.drain(1.5)
    last = pmp_kernel.displays[display_id][-1]
    assert last["text/plain"].startswith("p: done")
    # A progress line redrawn with \r shows as a terminal would show it.
    assert last["text/plain"].endswith("from the task\noops\n100%"), last["text/plain"]
    assert 'class="pmp-output"' in last["text/html"] and "from the task" in last["text/html"]
    # Shown in the display, so not also as the cell's stream output.
    assert "from the task" not in "".join(pmp_kernel.streams.values())


@pytest.mark.timeout(120)
def test_what_a_tasks_subprocess_prints_appears_in_its_display(pmp_kernel):
    _, messages = pmp_kernel.run(
        "%%pmp submit --name sub\nimport subprocess\n"
        "subprocess.run(['echo', 'from a subprocess'], check=True).returncode"
    )
    display_id = display_id_of(messages)
    pmp_kernel.drain(1.5)
    last = pmp_kernel.displays[display_id][-1]
    assert last["text/plain"].startswith("sub: done"), last["text/plain"]
    assert last["text/plain"].endswith(": 0\nfrom a subprocess"), last["text/plain"]
    assert "from a subprocess" not in "".join(pmp_kernel.streams.values())


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kernel_name", ["pmp", "python3"])
def test_output_of_a_task_reaches_the_cell_that_submitted_it(kernel_name):
    if not kernel_available(kernel_name):
        pytest.skip(f"the {kernel_name} kernelspec is not registered")
    session = Session(kernel_name)
    try:
        session.run(
            "from pmp import Executor\nexe = Executor(max_workers=1, block_allocation=True)"
        )
        session.run(
            "import time\n"
            "def late(x):\n"
            "    time.sleep(1.5)\n"
            "    print('late output', x)\n"
            "    return x\n"
            "f = exe.submit(late, 5)"
        )
        submitting = session.last_msg_id
        # The task prints while this other cell runs; its output still
        # belongs to the cell that submitted it.
        session.run("time.sleep(3)")
        busy = session.last_msg_id
        session.drain(0.5)
        assert "late output 5" in session.streams.get(submitting, ""), session.streams
        assert "late output" not in session.streams.get(busy, "")
        _, messages = session.run("f.result(), f.output")
        (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
        assert result["content"]["data"]["text/plain"] == "(5, 'late output 5\\n')"
        session.run("exe.shutdown()")
    finally:
        session.close()


@pytest.mark.timeout(120)
def test_executor_map_shows_one_progress_display(pmp_kernel):
    pmp_kernel.run("from pmp import Executor\nexe = Executor(max_workers=2, block_allocation=True)")
    reply, messages = pmp_kernel.run("import time\nlist(exe.map(time.sleep, [0.2] * 6))")
    assert reply["status"] == "ok"
    displays = [m for m in messages if m["msg_type"] == "display_data"]
    assert len(displays) == 1, displays
    display_id = display_id_of(messages)
    assert "map sleep" in displays[0]["content"]["data"]["text/plain"]
    # The end is shown before the cell is over (nbconvert keeps only that).
    updates = updates_of(display_id, messages)
    assert updates and updates[-1] == pmp_kernel.displays[display_id][-1]
    last = updates[-1]
    assert last["text/plain"].startswith("map sleep: 6/6 done"), last
    assert 'data-state="done"' in last["text/html"] and 'data-total="6"' in last["text/html"]
    pmp_kernel.run("exe.shutdown()")


COMMANDS = ["submit", "status", "graph", "cancel", "resources", "config", "cache"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("line", ["%pmp", "%pmp --help"])
def test_pmp_alone_or_with_help_lists_the_commands(pmp_kernel, line):
    # What a new user types first: the commands, not an error.
    reply, messages = pmp_kernel.run(line)
    assert reply["status"] == "ok", reply
    assert [m for m in messages if m["msg_type"] == "error"] == []
    text = stream_text(messages)
    listed = re.findall(r"^ {4}(\w+)", text, re.MULTILINE)
    assert listed == COMMANDS, text
    assert "%pmp COMMAND --help" in text, text


def option_help(text):
    """{option: its help text} from the options section of argparse's help."""
    helps, option = {}, None
    for line in text.split("options:\n", 1)[1].splitlines():
        found = re.match(r"^  (-\S+(?:, --\S+)?)(?: [A-Z|a-z]+)?(?:\s{2,}(.*))?$", line)
        if found:
            option = found.group(1).split(", ")[-1]
            helps[option] = found.group(2) or ""
        elif line.startswith("      ") and option:
            helps[option] = f"{helps[option]} {line.strip()}".strip()
        else:
            option = None
    return helps


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_commands_help_is_printed_once_and_explains_each_option(pmp_kernel, command):
    reply, messages = pmp_kernel.run(f"%pmp {command} --help")
    assert reply["status"] == "ok", reply
    assert [m for m in messages if m["msg_type"] == "error"] == []
    text = stream_text(messages)
    assert text.count(f"usage: %pmp {command}") == 1, text
    helps = option_help(text)
    assert "--help" in helps, text
    assert all(helps.values()), helps
    if command == "config":
        assert set(helps) == {
            "--help",
            "--max-workers",
            "--max-cores",
            "--backend",
            "--block-allocation",
            "--cache-directory",
        }, helps
        assert "auto, local, mpi, slurm, flux" in helps["--backend"], helps


@pytest.mark.timeout(120)
def test_resources_on_a_login_node_describe_what_a_slurm_job_can_get(login_node_kernel):
    reply, _ = login_node_kernel.run("%pmp config --backend slurm")
    assert reply["status"] == "ok", reply
    reply, messages = login_node_kernel.run("%pmp resources")
    assert reply["status"] == "ok", reply
    shown = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    # The test Slurm: partition debug, node1 and node2 of 4 CPUs and 2 GPUs each.
    assert (
        "debug: 2 nodes, 8 CPUs (at most 4 on a node), 4 GPUs (at most 2 on a node) "
        "(the default)" in shown
    ), shown
    assert "allocation" not in shown.split("\n", 1)[1] and "max_cores: None" not in shown, shown


def complete(session, code, cursor_pos=None):
    """A complete_request as JupyterLab sends at Tab: (matches, the text they replace)."""
    cursor_pos = len(code) if cursor_pos is None else cursor_pos
    session.client.complete(code, cursor_pos)
    reply = session.client.get_shell_msg(timeout=60)["content"]
    assert reply["status"] == "ok" and reply["cursor_end"] == cursor_pos, reply
    return reply["matches"], code[reply["cursor_start"] : reply["cursor_end"]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kernel_name", ["pmp", "python3"])
def test_tab_completes_pmp_commands_options_and_their_values(kernel_name):
    if not kernel_available(kernel_name):
        pytest.skip(f"the {kernel_name} kernelspec is not registered")
    session = Session(kernel_name)
    try:
        if kernel_name == "python3":
            session.run("%load_ext pmp")
        # In pmp-kernel, before any %pmp has loaded the magics.
        assert complete(session, "%pmp ") == (COMMANDS, "")
        assert complete(session, "%pmp su") == (["submit"], "su")
        cell = "%%pmp submit --block --c\nx = 1"
        assert complete(session, cell, cell.index("\n")) == (["--cores", "--cwd"], "--c")
        matches, _ = complete(session, "%pmp submit --cores 2 --")
        assert matches == ["--help", "--gpus", "--threads", "--cwd", "--name", "--key", "--block"]
        assert complete(session, "%pmp config --b") == (
            ["--backend", "--block-allocation"],
            "--b",
        )
        assert complete(session, "%pmp config --backend s") == (["slurm"], "s")
        assert complete(session, "%pmp cache ") == (["clear"], "")
        session.run("%pmp submit --name answer sum([40, 2])")
        assert complete(session, "%pmp cancel ") == (["answer", "all"], "")
        # Where %pmp has nothing to offer (the call of %pmp submit, any other
        # line), IPython's own completion answers, as before.
        matches, _ = complete(session, "%pmp submit --name s su")
        assert "submit" not in matches, matches
        matches, _ = complete(session, "su")
        assert "sum" in matches and "submit" not in matches, matches
    finally:
        session.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("config", "submit", "expected"),
    [
        ("", "--cores 16", "its 16 CPUs are more than all the nodes have"),
        ("", "--gpus 3", "a task's 3 GPUs are more than any node has"),
        # Pilot jobs: each worker is one pilot of the Executor's size.
        (
            "--block-allocation --max-workers 2",
            "--cores 16",
            "resource_dict key 'cores': with block_allocation=True",
        ),
    ],
    ids=["batch-cores", "batch-gpus", "pilots-cores"],
)
def test_a_request_no_node_can_hold_is_refused_at_submit_in_one_line(
    login_node_kernel, config, submit, expected
):
    reply, _ = login_node_kernel.run(f"%pmp config --backend slurm {config}")
    assert reply["status"] == "ok", reply
    reply, _ = login_node_kernel.run(f"%%pmp submit {submit} --name never\n1")
    assert reply["status"] == "error" and reply["ename"] == "UsageError", reply
    assert "\n" not in reply["evalue"] and expected in reply["evalue"], reply["evalue"]
    # Nothing was submitted: no Future, no job.
    reply, _ = login_node_kernel.run("never")
    assert reply["ename"] == "NameError", reply


@pytest.mark.timeout(180)
def test_a_failing_cell_run_as_a_slurm_job_shows_its_lines_and_its_job(login_node_kernel):
    reply, _ = login_node_kernel.run("%pmp config --backend slurm")
    assert reply["status"] == "ok", reply
    reply, messages = login_node_kernel.run("%%pmp submit --name bad\nx = {}\n\nx['missing']")
    cell = reply["execution_count"]
    display_id = display_id_of(messages)
    reply, _ = login_node_kernel.run("bad.exception(timeout=150) is not None", timeout=170)
    reply, _ = login_node_kernel.run("bad.result()")
    assert reply["ename"] == "KeyError", reply
    remote = ANSI.sub("", "\n".join(reply["traceback"])).split('"""')[1]
    assert f"File \"Cell In[{cell}]\", line 4, in bad\n    x['missing']" in remote, remote
    assert "pmp/worker" not in remote, remote
    login_node_kernel.drain(1)
    summary = login_node_kernel.displays[display_id][-1]["text/plain"]
    assert re.match(r"bad: failed after .* (in job \d+|\(worker job \d+\)): KeyError", summary)
