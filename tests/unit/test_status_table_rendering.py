"""`%pmp status`'s table (`pmp.notebook.status_table`) rendered from made-up
Futures: a row per task with its state, job, node and detail; a part per
Executor with its workers; the counts of every state; the store's entries."""

import re
import types
from concurrent.futures import Future

import pytest
from pmp.client import serialize, store
from pmp.notebook import state_style, status_table
from pmp.notebook.status_table import TASK_ROWS, NotebookTask, StatusTable


class FakeExecutor:
    """What the table asks of an Executor: its `info`, and the job system
    its engine follows batch jobs with (none: it submits no batch jobs)."""

    def __init__(self, workers=(), backend="local", block_allocation=True):
        self.info = {"backend": backend, "block_allocation": block_allocation, "workers": workers}
        self._engine = types.SimpleNamespace(job_system=None)


def queued():
    return Future()


def running(place=None):
    future = Future()
    future.set_running_or_notify_cancel()
    if place is not None:
        future.place = place
    return future


def done(value):
    future = running()
    future.set_result(value)
    return future


def failed(error):
    future = running()
    future.set_exception(error)
    return future


def cancelled():
    future = Future()
    future.cancel()
    return future


def text_of(table):
    return table.bundle()[1]["text/plain"]


def test_every_task_is_a_row_with_its_state_and_detail_and_the_states_are_counted():
    executor = FakeExecutor()
    tasks = [
        NotebookTask("prepare", done(41)),
        NotebookTask("fit", failed(ValueError("no data"))),
        NotebookTask("plot", running(place=(0, 4242, "node1"))),
        NotebookTask("later", queued()),
        NotebookTask("dropped", cancelled()),
    ]
    state, bundle = StatusTable(tasks, executor, None).bundle()
    assert state == "running"  # something is unfinished: the table stays live
    text = bundle["text/plain"]
    lines = text.splitlines()
    assert lines[0] == (
        "%pmp's executor (local backend, block allocation): "
        "1 queued, 1 running, 1 done, 1 failed, 1 cancelled"
    )
    row = {
        line.split()[0]: line
        for line in lines
        if line.split() and line.split()[0] in ("prepare", "fit", "plot", "later", "dropped")
    }
    assert row["prepare"].split()[1] == "done"
    assert row["prepare"].endswith("41")
    assert row["fit"].endswith("ValueError: no data")
    assert "node1" in row["plot"]
    assert row["plot"].endswith("pid 4242 (worker 0)")
    assert lines[-1] == "tasks: 1 queued, 1 running, 1 done, 1 failed, 1 cancelled"


def test_the_html_rows_show_state_badges_and_the_legend_counts_them():
    tasks = [NotebookTask("a", done(1)), NotebookTask("b", done(2)), NotebookTask("c", queued())]
    html = StatusTable(tasks, FakeExecutor(), None).bundle()[1]["text/html"]
    assert html.count(state_style.badge("done")) == 2
    assert html.count(state_style.badge("queued")) == 1
    assert state_style.legend({"done": 2, "queued": 1}) in html
    assert 'class="pmp-status-table" data-state="running"' in html


def test_a_table_of_ended_tasks_is_done_and_one_of_none_says_so():
    assert StatusTable([NotebookTask("a", done(1))], FakeExecutor(), None).bundle()[0] == "done"
    assert text_of(StatusTable([], FakeExecutor(), None)).splitlines()[0] == (
        "no tasks submitted from this notebook"
    )


def test_workers_are_named_by_the_task_they_run():
    future = running(place=(1, 77, "localhost"))
    future._pmp_task = 9
    workers = [
        {"id": 0, "pid": 76, "state": "idle"},
        {"id": 1, "pid": 77, "state": "busy", "task": 9},
        {"id": 2, "pid": None, "state": "starting", "task": 10},
    ]
    text = text_of(StatusTable([NotebookTask("solve", future)], FakeExecutor(workers), None))
    assert (
        "workers: worker 0 (pid 76): idle; worker 1 (pid 77): busy: solve; "
        "worker 2: starting: task 10"
    ) in text.splitlines()


def test_a_batch_job_row_says_why_it_waits_and_its_part_lists_the_jobs():
    future = queued()
    future.job = "83"
    future.job_status = types.SimpleNamespace(
        state="PENDING", reason="Priority", nodes="", system="Slurm"
    )
    executor = FakeExecutor(backend="slurm")
    executor.info["jobs"] = ["83"]
    text = text_of(StatusTable([NotebookTask("big", future)], executor, None))
    row = next(line for line in text.splitlines() if line.startswith("big"))
    assert row.split()[1:4] == ["queued:", "Priority", "83"]
    assert "batch jobs (slurm, one per call): 83" in text


def test_an_executor_shut_down_says_so():
    executor = FakeExecutor()
    executor.info = None
    text = text_of(StatusTable([NotebookTask("a", done(1))], executor, None))
    assert text.splitlines()[0].startswith("%pmp's executor (shut down): 1 done")
    assert "workers: none (shut down)" in text


def test_only_the_latest_rows_of_a_long_part_are_shown_but_all_are_counted():
    tasks = [NotebookTask(f"call{i}", done(i)) for i in range(TASK_ROWS + 1)]
    text = text_of(StatusTable(tasks, FakeExecutor(), None))
    assert text.splitlines()[0].endswith(f"{TASK_ROWS + 1} done; the latest {TASK_ROWS} shown")
    assert "call0 " not in text
    assert "call1 " in text
    assert f"call{TASK_ROWS} " in text


def test_a_result_too_long_for_a_cell_is_cut():
    text = text_of(StatusTable([NotebookTask("long", done("x" * 500))], FakeExecutor(), None))
    row = next(line for line in text.splitlines() if line.startswith("long"))
    assert row.endswith("…")
    assert len(row.split()[-1]) == status_table._SHORT + 1


@pytest.fixture
def store_root(tmp_path):
    root = str(tmp_path / "store")
    opened = store.open_store(root)
    for index in range(status_table.STORE_ROWS + 3):
        opened.write(
            f"key{index}",
            "square",
            "done",
            serialize.dumps_value(index),
            1000.0,
            1000.0 + index,
            1001.0 + index,
            "node2",
            1,
        )
    return root


def test_the_store_part_lists_its_newest_entries_and_counts_the_rest(store_root):
    text = text_of(StatusTable([], FakeExecutor(), store_root))
    total = status_table.STORE_ROWS + 3
    assert f"task store {store_root}: {total} entries (3 older not shown)" in text
    keys = [line.split()[0] for line in text.splitlines() if re.match(r"  key\d", line)]
    assert keys == [f"key{i}" for i in range(total - 1, 2, -1)]
