"""A task's live display through real kernels, driven by jupyter_client as a
frontend: the IOPub sequence (display_data with a display_id, then
update_display_data up to done with the result), a final state published
between cells coming again with the next one, updates arriving while
another cell is busy, a Future as a cell's last expression (in ipykernel
too), and one progress display for Executor.map."""

import re

import pytest
from kernel_session import display_id_of


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
@pytest.mark.parametrize("kernel_name", ["pmp", "python3"])
def test_a_future_as_a_cells_last_expression_renders_the_live_display(kernel):
    # No `%load_ext pmp` in ipykernel: `import pmp` alone gives a Future its display.
    kernel.run("from pmp import Executor\nexe = Executor(max_workers=1, block_allocation=True)")
    reply, messages = kernel.run("future = exe.submit(sum, [40, 2])\nfuture")
    assert reply["status"] == "ok"
    display_id = display_id_of(messages)
    kernel.drain(1.5)
    assert kernel.displays[display_id][-1]["text/plain"].endswith(": 42")
    kernel.run("exe.shutdown()")


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
