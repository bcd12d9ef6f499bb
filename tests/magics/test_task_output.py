"""Where what a task prints goes in a notebook, through real kernels driven
by jupyter_client: into its display (also what its subprocesses print),
and to the cell that submitted it when it is not displayed."""

import pytest
from kernel_session import display_id_of


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
def test_output_of_a_task_reaches_the_cell_that_submitted_it(kernel):
    kernel.run("from pmp import Executor\nexe = Executor(max_workers=1, block_allocation=True)")
    kernel.run(
        "import time\n"
        "def late(x):\n"
        "    time.sleep(1.5)\n"
        "    print('late output', x)\n"
        "    return x\n"
        "f = exe.submit(late, 5)"
    )
    submitting = kernel.last_msg_id
    # The task prints while this other cell runs; its output still
    # belongs to the cell that submitted it.
    kernel.run("time.sleep(3)")
    busy = kernel.last_msg_id
    kernel.drain(0.5)
    assert "late output 5" in kernel.streams.get(submitting, ""), kernel.streams
    assert "late output" not in kernel.streams.get(busy, "")
    _, messages = kernel.run("f.result(), f.output")
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "(5, 'late output 5\\n')"
    kernel.run("exe.shutdown()")
