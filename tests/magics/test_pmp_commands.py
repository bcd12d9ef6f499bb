"""The %pmp commands through real kernels, driven by jupyter_client as a
frontend: what `%pmp` and each command's `--help` say, Tab completion,
cancel, config, cache clear and resources, bad options as a cell error with
the usage text, a request no node can hold refused at submit, and
`%load_ext pmp` in ipykernel."""

import re

import pytest
from kernel_session import display_id_of, stream_text


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
def test_load_ext_pmp_in_ipykernel(ipykernel):
    reply, _ = ipykernel.run("%load_ext pmp")
    assert reply["status"] == "ok"
    reply, messages = ipykernel.run("%pmp submit --name s --block sum([1, 2])")
    assert reply["status"] == "ok"
    display_id_of(messages)
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "3"


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
def test_tab_completes_pmp_commands_options_and_their_values(kernel, kernel_name):
    if kernel_name == "python3":
        kernel.run("%load_ext pmp")
    # In pmp-kernel, before any %pmp has loaded the magics.
    assert complete(kernel, "%pmp ") == (COMMANDS, "")
    assert complete(kernel, "%pmp su") == (["submit"], "su")
    cell = "%%pmp submit --block --c\nx = 1"
    assert complete(kernel, cell, cell.index("\n")) == (["--cores", "--cwd"], "--c")
    matches, _ = complete(kernel, "%pmp submit --cores 2 --")
    assert matches == [
        "--help",
        "--gpus",
        "--threads",
        "--cwd",
        "--name",
        "--key",
        "--block",
        "--local",
    ]
    assert complete(kernel, "%pmp config --b") == (
        ["--backend", "--block-allocation"],
        "--b",
    )
    assert complete(kernel, "%pmp config --backend s") == (["slurm"], "s")
    assert complete(kernel, "%pmp cache ") == (["clear"], "")
    kernel.run("%pmp submit --name answer sum([40, 2])")
    assert complete(kernel, "%pmp cancel ") == (["answer", "all"], "")
    # Where %pmp has nothing to offer (the call of %pmp submit, any other
    # line), IPython's own completion answers, as before.
    matches, _ = complete(kernel, "%pmp submit --name s su")
    assert "submit" not in matches, matches
    matches, _ = complete(kernel, "su")
    assert "sum" in matches and "submit" not in matches, matches


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
