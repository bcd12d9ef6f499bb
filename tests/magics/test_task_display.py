"""A task's display and a group's progress display, through a real pmp
kernel driven by jupyter_client: one name per task (`--name`, else its
function, a cell without --name after its prompt number), the state as a
badge that says what it means, and what the display shows around it."""

import html
import re
import time

import pytest
from kernel_session import display_id_of, wait_for_file
from pmp.notebook.state_style import MEANINGS


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


def badge_of(markup):
    """The state badge's (state, tooltip) in a display's HTML."""
    found = re.search(r'class="pmp-badge" data-state="(\w+)" title="([^"]*)"', markup)
    assert found, markup
    return found.groups()


@pytest.mark.timeout(120)
def test_a_tasks_display_shows_its_state_as_a_badge_that_says_what_it_means(pmp_kernel):
    _, messages = pmp_kernel.run("%%pmp submit --name slow\nimport time\ntime.sleep(1)\n6 * 7")
    display_id = display_id_of(messages)
    first = pmp_kernel.displays[display_id][0]["text/html"]
    assert badge_of(first)[0] in ("queued", "running"), first
    pmp_kernel.run("slow.result()")
    shown = pmp_kernel.displays[display_id]
    running = [
        b["text/html"] for b in shown if 'class="pmp-status" data-state="running"' in b["text/html"]
    ]
    assert running, [b["text/plain"] for b in shown]
    # Running: its badge, the clock, and where (host, pid, worker).
    assert badge_of(running[-1]) == ("running", MEANINGS["running"])
    assert re.search(r'class="pmp-clock"[^>]*>\d', running[-1]), running[-1]
    assert re.search(r'class="pmp-where"[^>]*>on \S+, pid \d+ \(worker \d+\)<', running[-1])
    done = shown[-1]["text/html"]
    assert badge_of(done) == ("done", MEANINGS["done"])
    assert re.search(r'class="pmp-result"><span[^>]*>result:</span> 42</div>', done), done
    assert shown[-1]["text/plain"].startswith("slow: done in ")


@pytest.mark.timeout(120)
def test_a_failure_shows_its_error_with_the_traceback_folded_under_it(pmp_kernel):
    _, messages = pmp_kernel.run("%%pmp submit --name bad\nraise KeyError('missing')")
    display_id = display_id_of(messages)
    pmp_kernel.run("bad.exception()")
    failed = pmp_kernel.displays[display_id][-1]["text/html"]
    assert badge_of(failed) == ("failed", MEANINGS["failed"])
    # The error is the fold's title; the traceback opens under it.
    assert re.search(
        r"<details><summary>KeyError: &#x27;missing&#x27;</summary>"
        r'<pre class="pmp-traceback">[^<]*Traceback \(most recent call last\)',
        failed,
    ), failed


GROUP = """
import time
from pmp import Executor
from pmp.notebook import show_progress

def check(x):
    time.sleep(0.3)
    if x == 3:
        raise ValueError(f"{x} is odd")
    return x

exe = Executor(max_workers=2, block_allocation=True)
futures = [exe.submit(check, x) for x in (2, 4, 3, 6)]
show_progress(futures)
"""


@pytest.mark.timeout(120)
def test_a_group_of_futures_gets_one_progress_display_with_a_legend(pmp_kernel):
    reply, messages = pmp_kernel.run(GROUP)
    assert reply["status"] == "ok", reply
    display_id = display_id_of(messages)
    pmp_kernel.run("from concurrent.futures import wait\nwait(futures)\ntime.sleep(1)")
    last = pmp_kernel.displays[display_id][-1]
    # Named after its tasks' function; the text says how many ended how.
    assert last["text/plain"].startswith("check ×4: 3/4 done, 1 failed"), last["text/plain"]
    markup = last["text/html"]
    assert 'class="pmp-progress" data-state="failed" data-done="3" data-total="4"' in markup
    # The group's badge says how the group ended, and means it.
    assert badge_of(markup) == ("failed", "every task ended; some failed or were cancelled")
    assert ">ended with failures</span>" in markup, markup
    # The bar, a segment per state in its proportion.
    assert re.search(r'data-bar-state="done" title="3 done: [^"]+" style="width: 75.000%', markup)
    assert 'data-bar-state="failed" title="1 failed' in markup, markup
    # The legend: every state with its count and, as tooltip, its meaning.
    legend = re.search(r'<div class="pmp-legend".*?</div>', markup).group(0)
    for state, meaning in MEANINGS.items():
        assert f'title="{html.escape(meaning)}"' in legend, (state, legend)
    assert "done 3" in legend and "failed 1" in legend and "queued 0" in legend, legend
    # The failure folds open with its task's name and error.
    assert "<summary>1 failure</summary>" in markup, markup
    assert "check: ValueError: 3 is odd" in markup, markup
    pmp_kernel.run("exe.shutdown()")


@pytest.mark.timeout(120)
def test_map_shows_the_same_progress_display_named_after_its_function(pmp_kernel):
    pmp_kernel.run("from pmp import Executor\nexe = Executor(max_workers=2, block_allocation=True)")
    reply, messages = pmp_kernel.run("import time\nlist(exe.map(time.sleep, [0.1] * 4))")
    assert reply["status"] == "ok"
    last = pmp_kernel.displays[display_id_of(messages)][-1]
    assert last["text/plain"].startswith("map sleep: 4/4 done"), last["text/plain"]
    assert 'data-bar-state="done" title="4 done' in last["text/html"], last["text/html"]
    assert 'class="pmp-legend"' in last["text/html"]
    pmp_kernel.run("exe.shutdown()")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("call", "ename", "words"),
    [
        ("show_progress(one)", "TypeError", "got one Future: pass a list ([future])"),
        ("show_progress([])", "ValueError", "show_progress(futures) got no Futures"),
        ("show_progress([one, 7])", "TypeError", "one item is int 7"),
    ],
)
def test_show_progress_says_what_it_takes(pmp_kernel, call, ename, words):
    pmp_kernel.run(
        "from concurrent.futures import Future\nfrom pmp.notebook import show_progress\n"
        "one = Future()"
    )
    reply, _ = pmp_kernel.run(call)
    assert reply["status"] == "error" and reply["ename"] == ename, reply
    assert words in reply["evalue"], reply["evalue"]


@pytest.mark.timeout(240)
def test_a_batch_jobs_display_names_its_job_and_node_beside_the_badge(login_node_kernel, tmp_path):
    session, go = login_node_kernel, tmp_path / "go"
    reply, _ = session.run("%pmp config --backend slurm")
    assert reply["status"] == "ok", reply
    _, messages = session.run(f"%%pmp submit --name job\n{wait_for_file(go)}'ran'")
    display_id = display_id_of(messages)
    try:
        deadline = time.monotonic() + 180
        while (
            'class="pmp-status" data-state="running"'
            not in session.displays[display_id][-1]["text/html"]
        ):
            assert time.monotonic() < deadline, session.displays[display_id][-1]["text/plain"]
            session.drain(0.5)
        running = session.displays[display_id][-1]["text/html"]
        assert re.search(
            r'data-state="running" title="[^"]+"[^>]*>running</span> '
            r'<span class="pmp-clock"[^>]*>[^<]+</span> <span class="pmp-job">job \d+ on node\d</span>',
            running,
        ), running
    finally:
        go.touch()  # the job ends, whatever the display showed
    reply, messages = session.run("job.result(timeout=150)", timeout=170)
    assert reply["status"] == "ok", reply
