"""A task's display and a group's progress display, through a real pmp
kernel driven by jupyter_client: one name per task (`--name`, else its
function, a cell without --name after its prompt number), the state as a
badge that says what it means, and what the display shows around it."""

import pytest
from test_magics import Session, _available, display_id_of


@pytest.fixture
def pmp_kernel():
    if not _available("pmp"):
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    session = Session("pmp")
    yield session
    session.close()


def final(session, display_id, seconds=1.5):
    """The display's last bundle once the task had time to end."""
    session.drain(seconds)
    return session.displays[display_id][-1]


@pytest.mark.timeout(120)
def test_a_future_as_a_cells_last_expression_is_named_after_its_function(pmp_kernel):
    pmp_kernel.run("from pmp import Executor\nexe = Executor(max_workers=1, block_allocation=True)")
    _, messages = pmp_kernel.run("future = exe.submit(sum, [40, 2])\nfuture")
    last = final(pmp_kernel, display_id_of(messages))
    assert last["text/plain"].startswith("sum: done"), last["text/plain"]
    pmp_kernel.run("exe.shutdown()")


@pytest.mark.timeout(120)
def test_a_call_is_named_after_its_function_and_a_cell_after_its_prompt(pmp_kernel):
    _, messages = pmp_kernel.run("%pmp submit abs(-3)")
    last = final(pmp_kernel, display_id_of(messages))
    assert last["text/plain"].startswith("abs: done"), last["text/plain"]
    reply, messages = pmp_kernel.run("%%pmp submit\n6 * 7")
    last = final(pmp_kernel, display_id_of(messages))
    cell = reply["execution_count"]
    assert last["text/plain"].startswith(f"cell [{cell}]: done"), last["text/plain"]
    # --name wins over both.
    _, messages = pmp_kernel.run("%pmp submit --name absolute abs(-3)")
    last = final(pmp_kernel, display_id_of(messages))
    assert last["text/plain"].startswith("absolute: done"), last["text/plain"]
