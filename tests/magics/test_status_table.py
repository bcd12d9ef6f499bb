"""`%pmp status` and `%pmp graph` as a person reads them, through a real
pmp kernel driven by jupyter_client: every task of the notebook (the
magics' of every executor `%pmp config` made, and the calls of the user's
own Executors), a part per executor, states as coloured badges with their
legend, cells left-aligned (JupyterLab's table style right-aligns them),
workers named by the task they run; the graph's boxes named as the
displays name them, with a legend of the state colours."""

import html
import re
import time

import pytest
from kernel_session import stream_text, table_rows
from pmp.client.registry import KEPT_ENDED
from pmp.notebook.state_style import COLOURS, STATES


def status_of(session):
    reply, messages = session.run("%pmp status")
    assert reply["status"] == "ok", reply
    (shown,) = [m for m in messages if m["msg_type"] == "display_data"]
    return shown


def last_of(session, shown, done):
    """The display's latest bundle once `done(bundle)` holds."""
    display_id = shown["content"]["transient"]["display_id"]
    deadline = time.monotonic() + 60
    while not done(session.displays[display_id][-1]):
        assert time.monotonic() < deadline, session.displays[display_id][-1]["text/plain"]
        session.drain(0.5)
    return session.displays[display_id][-1]


def part_rows(text, title):
    """The task rows of the part of the text table under the line starting with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return table_rows("\n".join(lines[start + 1 :]), "task")


@pytest.mark.timeout(120)
def test_a_users_own_executors_map_is_listed_by_function_with_its_workers(pmp_kernel):
    pmp_kernel.run(
        "import pmp\ndef square(x):\n    return x * x\n"
        "with pmp.Executor(max_workers=2, block_allocation=True) as exe:\n"
        "    squares = list(exe.map(square, [1, 2, 3]))"
    )
    text = status_of(pmp_kernel)["content"]["data"]["text/plain"]
    rows = part_rows(text, "an Executor made in the notebook (local backend, block allocation)")
    assert [row[:2] for row in rows] == [["square", "done"]] * 3, text
    assert sorted(row[-1] for row in rows) == ["1", "4", "9"], text
    assert re.search(r"^tasks: 3 done$", text, re.MULTILINE), text


@pytest.mark.timeout(120)
def test_the_tasks_of_every_executor_are_counted_and_workers_named_by_their_task(pmp_kernel):
    pmp_kernel.run("%pmp submit --name first abs(-1)")
    pmp_kernel.run("first.result(timeout=60)")
    # A second executor of the magics; the first one's task stays listed.
    pmp_kernel.run("%pmp config --max-workers 1 --block-allocation")
    pmp_kernel.run("%%pmp submit --name slow\nimport time\ntime.sleep(3)\n'slept'")
    pmp_kernel.run("import time\nwhile not slow.running():\n    time.sleep(0.05)")
    shown = status_of(pmp_kernel)
    text = shown["content"]["data"]["text/plain"]
    earlier = part_rows(text, "%pmp's earlier executor (local backend, replaced by %pmp config)")
    assert [row[:2] for row in earlier] == [["first", "done"]], text
    current = part_rows(text, "%pmp's executor (local backend, block allocation)")
    assert [row[:2] for row in current] == [["slow", "running"]], text
    assert re.search(r"^tasks: 1 running, 1 done$", text, re.MULTILINE), text
    # The worker is named by the task it runs, not by the scheduler's task id.
    assert re.search(r"^workers: worker 0 \(pid \d+\): busy: slow$", text, re.MULTILINE), text
    last = last_of(pmp_kernel, shown, lambda bundle: "tasks: 2 done" in bundle["text/plain"])
    assert re.search(r"^workers: worker 0 \(pid \d+\): idle$", last["text/plain"], re.MULTILINE)


@pytest.mark.timeout(120)
def test_the_html_table_is_left_aligned_with_state_badges_and_their_legend(pmp_kernel):
    pmp_kernel.run("def fails():\n    raise ValueError('no')")
    pmp_kernel.run("%pmp submit --name good abs(-2)")
    pmp_kernel.run("%pmp submit --name bad fails()")
    pmp_kernel.run("import concurrent.futures\nconcurrent.futures.wait([good, bad], timeout=60)")
    markup = status_of(pmp_kernel)["content"]["data"]["text/html"]
    cells = re.findall(r"<t[dh]\b[^>]*>", markup)
    assert cells and all("text-align: left" in cell for cell in cells), markup
    table, legend = markup.split('class="pmp-legend"')
    assert re.findall(r'class="pmp-badge" data-state="(\w+)"', table) == ["done", "failed"]
    # The legend: every state with how many tasks are in it, and what it means.
    shown = re.findall(r"</span> (\w+) (\d+)</span>", legend)
    assert shown == [(s, "1" if s in ("done", "failed") else "0") for s in STATES], legend
    assert html.escape("ended with an exception") in legend, legend


@pytest.mark.timeout(120)
def test_the_graph_names_boxes_by_their_name_and_has_a_legend_of_state_colours(pmp_kernel):

    pmp_kernel.run("def double(x):\n    return 2 * x")
    pmp_kernel.run("%pmp submit --name first double(2)")
    pmp_kernel.run("%pmp submit --name second double(first)")
    pmp_kernel.run("second.result(timeout=60)")
    reply, messages = pmp_kernel.run("%pmp graph")
    assert reply["status"] == "ok", reply
    (shown,) = [m for m in messages if m["msg_type"] == "display_data"]
    picture = shown["content"]["data"]["image/svg+xml"]
    boxes = re.findall(r">(\w+)</text>", picture)
    assert "first" in boxes and "second" in boxes and "double" not in boxes, picture
    legend = picture[picture.index("states:") :]
    for state, colour in COLOURS.items():
        assert state in legend and colour in legend, (state, picture)
    # Both done: filled with done's colour, as the legend says.
    assert picture[: picture.index("states:")].count(COLOURS["done"]) == 2, picture


@pytest.mark.timeout(120)
def test_an_executor_the_notebook_lets_go_is_not_kept_by_the_table(pmp_kernel, tmp_path):
    # The table keeps its latest calls, and a call with a task store leads back to it.
    reply, messages = pmp_kernel.run(
        "import gc, weakref\nimport pmp\n"
        f"exe = pmp.Executor(cache_directory={str(tmp_path)!r})\n"
        "exe.submit(abs, -1).result(timeout=60)\n"
        "let_go = weakref.ref(exe)\ndel exe\ngc.collect()\nlet_go() is None"
    )
    assert reply["status"] == "ok", reply
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["text/plain"] == "True"


@pytest.mark.timeout(120)
def test_a_long_map_keeps_its_latest_ended_calls_and_says_how_many_it_let_go(pmp_kernel):
    calls = KEPT_ENDED + 10
    pmp_kernel.run(
        "import pmp\nexe = pmp.Executor(max_workers=2, block_allocation=True)\n"
        f"results = list(exe.map(abs, range({calls})))"
    )
    text = status_of(pmp_kernel)["content"]["data"]["text/plain"]
    title = f"an Executor made in the notebook (local backend, block allocation): {KEPT_ENDED} done"
    assert f"{title} (and 10 earlier ended, no longer kept)" in text, text
    rows = part_rows(text, title)
    assert [row[-1] for row in rows] == [str(n) for n in range(10, calls)], text
    pmp_kernel.run("exe.shutdown()")


@pytest.mark.timeout(480)
def test_a_users_batch_job_calls_are_listed_with_their_job_and_node(kernel_outside_slurm, tmp_path):
    session = kernel_outside_slurm
    reply, messages = session.run(
        f"import pmp\nexe = pmp.Executor(backend='slurm', cache_directory={str(tmp_path)!r})\n"
        "job = exe.submit(abs, -5)\njob.result(timeout=400)\nprint(job.job, job.from_store.host)",
        timeout=420,  # the test Slurm is shared: the job may wait in its queue
    )
    assert reply["status"] == "ok", reply
    job, host = stream_text(messages).split()
    text = status_of(session)["content"]["data"]["text/plain"]
    (row,) = part_rows(text, "an Executor made in the notebook (slurm backend): 1 done")
    # Where it ran: the host its store entry names (it ended before it was seen running).
    assert row == ["abs", "done", job, host, row[4], "5"] and host, text
    assert "batch jobs (slurm, one per call): none queued or running" in text, text


# The status table's own state (its badges and legend have theirs).
TABLE_DONE = 'class="pmp-status-table" data-state="done"'


def every_task_row(text):
    """The task rows of every executor's part of the status table, in order."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.split()[:2] == ["task", "state"]]
    return [row for i in starts for row in table_rows("\n".join(lines[i:]), "task")]


@pytest.mark.timeout(120)
def test_status_is_one_live_table_of_tasks_workers_and_the_store(pmp_kernel, tmp_path):
    pmp_kernel.run(f"%pmp config --max-workers 1 --block-allocation --cache-directory {tmp_path}")
    pmp_kernel.run("%%pmp submit --name slow\nimport time\ntime.sleep(2)\n'slept'")
    pmp_kernel.run("%pmp submit --name quick abs(-3)")  # queued behind slow: one worker
    pmp_kernel.run("import time\nwhile not slow.running():\n    time.sleep(0.05)")
    reply, messages = pmp_kernel.run("%pmp status")
    assert reply["status"] == "ok"
    (first,) = [m for m in messages if m["msg_type"] == "display_data"]
    text = first["content"]["data"]["text/plain"]
    slow, quick = table_rows(text, "task")
    assert slow[:2] == ["slow", "running"] and re.fullmatch(r"pid \d+ \(worker 0\)", slow[-1]), text
    assert quick[:2] == ["quick", "queued"], text
    assert re.search(r"^workers: worker 0 \(pid \d+\): busy: slow$", text, re.MULTILINE), text
    assert re.search(r"^tasks: .*1 running", text, re.MULTILINE), text
    assert f"task store {tmp_path}: 0 entries" in text, text
    assert 'data-state="running"' in first["content"]["data"]["text/html"]
    # Live: it updates until both are done, and then shows their results
    # and their two store entries.
    display_id = first["content"]["transient"]["display_id"]
    deadline = time.monotonic() + 30
    while TABLE_DONE not in pmp_kernel.displays[display_id][-1]["text/html"]:
        assert time.monotonic() < deadline, pmp_kernel.displays[display_id][-1]
        pmp_kernel.drain(0.5)
    last = pmp_kernel.displays[display_id][-1]["text/plain"]
    slow, quick = table_rows(last, "task")
    assert slow[:2] == ["slow", "done"] and slow[-1] == "'slept'", last
    assert quick[:2] == ["quick", "done"] and quick[-1] == "3", last
    assert f"task store {tmp_path}: 2 entries" in last, last
    stored = table_rows(last, "key")
    assert sorted(row[1:3] for row in stored) == [["abs", "done"], ["slow", "done"]], last
    # In HTML a hashed key shows its start, whole in its tooltip, and no
    # store cell wraps (a date in three lines).
    markup = pmp_kernel.displays[display_id][-1]["text/html"]
    for key, *_ in stored:
        assert f"<span title='{key}'>{key[:16]}…</span>" in markup, markup
    assert markup.count("white-space: nowrap'>") >= 2 * 6, markup


@pytest.mark.timeout(120)
def test_graph_draws_the_notebooks_tasks_live_coloured_by_state(pmp_kernel):
    pmp_kernel.run("%pmp config --max-workers 1 --block-allocation")
    pmp_kernel.run("def slow_double(x):\n    import time\n    time.sleep(1.5)\n    return 2 * x")
    pmp_kernel.run("%pmp submit --name first slow_double(2)")
    pmp_kernel.run("%pmp submit --name second slow_double(first)")
    reply, messages = pmp_kernel.run("%pmp graph")
    assert reply["status"] == "ok"
    (first,) = [m for m in messages if m["msg_type"] == "display_data"]
    picture = first["content"]["data"]["image/svg+xml"]
    assert "first" in picture and "second" in picture and "<svg" in picture
    graph = picture[: picture.index("states:")]  # without the legend
    assert COLOURS["done"] not in graph  # nothing done yet: no box of done's colour
    display_id = first["content"]["transient"]["display_id"]
    deadline = time.monotonic() + 30
    while "2 done" not in pmp_kernel.displays[display_id][-1]["text/plain"]:
        assert time.monotonic() < deadline, pmp_kernel.displays[display_id][-1]["text/plain"]
        pmp_kernel.drain(0.5)
    picture = pmp_kernel.displays[display_id][-1]["image/svg+xml"]
    assert picture[: picture.index("states:")].count(COLOURS["done"]) == 2, picture


@pytest.mark.timeout(120)
def test_status_times_stored_results_by_the_store_and_counts_every_row(pmp_kernel, tmp_path):
    cell = "%%pmp submit --name slow\nimport time\ntime.sleep(1)\n'slept'"
    pmp_kernel.run(f"%pmp config --cache-directory {tmp_path}")
    pmp_kernel.run(cell)
    pmp_kernel.run("slow.result(timeout=60)")
    # A new executor (as `%pmp config` makes), whose run of the same cell is the stored result.
    pmp_kernel.run(f"%pmp config --max-workers 1 --cache-directory {tmp_path}")
    pmp_kernel.run(cell)
    reply, messages = pmp_kernel.run(
        "import pmp\nfrom pmp.notebook.status_display import _duration\n"
        f"_duration(pmp.get_cache_data({str(tmp_path)!r})[0]['duration'])"
    )
    (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
    took = result["content"]["data"]["text/plain"].strip("'")
    reply, messages = pmp_kernel.run("%pmp status")
    assert reply["status"] == "ok", reply
    (shown,) = [m for m in messages if m["msg_type"] == "display_data"]
    text = shown["content"]["data"]["text/plain"]
    # A row in each executor's part of the table, the earlier one's first.
    computed, stored = every_task_row(text)
    assert computed[:2] == ["slow", "done"] and stored[:2] == ["slow", "done"], text
    # The stored row lasts as the run the store recorded, not a 0.0 ms read.
    assert took in stored and "from the store" in stored[-1], text
    # The counts are of the rows, whichever executor ran them.
    assert re.search(r"^tasks: 2 done$", text, re.MULTILINE), text
