"""A failing task in a notebook, through a real pmp kernel driven by
jupyter_client: its display shows the exception and its traceback, and a
failing cell's traceback shows its lines numbered as the cell shows them,
also when the cell ran as a Slurm batch job (which it names)."""

import re

import pytest
from kernel_session import display_id_of


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
