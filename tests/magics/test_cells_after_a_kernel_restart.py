"""After a kernel restart, with the local backend and a task store: a
stored cell's result is found again (also in ipykernel, whose cell files
are named after its process); the restart ends the runs of the old kernel
(their workers die with it), and what became of each is said where it can
be: the re-run cell's display (an ended run runs again, a finished one
comes from the store) and `%pmp status` (a run that ended with its kernel).
Through a real pmp kernel, restarted by jupyter_client as a frontend
restarts it."""

import time

import pytest
from kernel_session import Session, display_id_of, kernel_available, table_rows, wait_for_file


def restart(session):
    session.manager.restart_kernel()
    session.client.wait_for_ready(timeout=60)


def status_text(session):
    _, messages = session.run("%pmp status")
    (table,) = [m for m in messages if m["msg_type"] == "display_data"]
    return table["content"]["data"]["text/plain"]


def ended_line(session, key, timeout=30):
    """The line `%pmp status` has for `key`, once its old worker is gone (it
    dies with the old kernel, an instant after it)."""
    deadline = time.monotonic() + timeout
    while True:
        text = status_text(session)
        lines = [line.strip() for line in text.splitlines() if line.strip().startswith(f"{key}:")]
        if lines or time.monotonic() > deadline:
            return lines, text
        time.sleep(0.3)


def held_cell(started, go):
    """A cell stored under the key `held`: each run adds a line to `started`,
    then waits until `go` exists, and gives 42."""
    return (
        "%%pmp submit --name held --key held\n"
        f"open({str(started)!r}, 'a').write('ran\\n')\n{wait_for_file(go)}6 * 7"
    )


@pytest.mark.timeout(180)
def test_a_restart_says_what_became_of_each_cell_when_it_runs_again(tmp_path):
    if not kernel_available("pmp"):
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    started, go = tmp_path / "started", tmp_path / "go"
    held = held_cell(started, go)
    quick = "%%pmp submit --name quick --key quick\n1 + 1"
    session = Session("pmp")
    try:
        config = f"%pmp config --cache-directory {tmp_path / 'store'}"
        session.run(config)
        session.run(quick)
        session.run("quick.result()")
        session.run(held)
        session.run(
            f"import os, time\nwhile not os.path.exists({str(started)!r}): time.sleep(0.05)"
        )
        restart(session)

        session.run(config)
        # The new kernel knows no task; the store tells of the one the restart ended.
        lines, text = ended_line(session, "held")
        assert "no tasks submitted from this notebook" in text, text
        assert len(lines) == 1, text
        assert lines[0].startswith("held: ended with its kernel (pid "), lines
        assert lines[0].endswith(", gone), without a result: run its cell again to run it again"), (
            lines
        )

        # The finished cell, run again, is its stored result.
        _, messages = session.run(quick)
        shown = messages[[m["msg_type"] for m in messages].index("display_data")]
        first = shown["content"]["data"]["text/plain"]
        assert first.startswith("quick: done in ") and ", from the store (computed " in first
        assert first.endswith(": 2"), first

        # The cell the restart ended says so at once, and runs again.
        _, messages = session.run(held)
        display_id = display_id_of(messages)
        first = session.displays[display_id][0]["text/plain"]
        summary, note = first.splitlines()[:2]
        assert summary.startswith("held: "), first
        assert note.startswith("the earlier run ended with its kernel (pid "), first
        assert note.endswith(", gone): this one runs it again"), first
        go.touch()
        reply, _ = session.run("held.result()")
        assert reply["status"] == "ok", reply
        session.drain(1)
        summary, note = session.displays[display_id][-1]["text/plain"].splitlines()[:2]
        assert summary.startswith("held: done in ") and summary.endswith(": 42"), summary
        assert note.endswith(": this one ran it again"), note
        # It is this kernel's task now; nothing is left ended.
        text = status_text(session)
        assert "did not submit" not in text, text
    finally:
        session.close()
        go.touch()  # a failed test leaves no worker waiting
    assert started.read_text() == "ran\nran\n", "the restart ended the first run"


@pytest.mark.timeout(180)
def test_a_cell_another_kernel_runs_is_followed_and_run_again_when_that_one_restarts(tmp_path):
    if not kernel_available("pmp"):
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    started, go = tmp_path / "started", tmp_path / "go"
    held = held_cell(started, go)
    config = f"%pmp config --cache-directory {tmp_path / 'store'}"
    first, second = Session("pmp"), Session("pmp")
    try:
        for session in (first, second):
            session.run(config)
        first.run(held)
        first.run(f"import os, time\nwhile not os.path.exists({str(started)!r}): time.sleep(0.05)")
        # The same cell in a second notebook: the run of the first holds the key.
        _, messages = second.run(held)
        display_id = display_id_of(messages)
        second.run("import time\nwhile held.earlier_run is None: time.sleep(0.05)")
        second.drain(1)
        note = second.displays[display_id][-1]["text/plain"].splitlines()[1]
        assert note.startswith("followed: another process (pid "), note
        assert note.endswith(") is running it"), note
        # Its kernel restarts: that run ends, and the follower runs it again.
        restart(first)
        second.run(f"while open({str(started)!r}).read().count('ran') < 2: time.sleep(0.05)")
        go.touch()
        reply, _ = second.run("held.result()")
        assert reply["status"] == "ok", reply
        second.drain(1)
        summary, note = second.displays[display_id][-1]["text/plain"].splitlines()[:2]
        assert summary.startswith("held: done in ") and summary.endswith(": 42"), summary
        assert note.startswith("the earlier run ended with its kernel (pid "), note
        assert note.endswith(", gone): this one ran it again"), note
    finally:
        first.close()
        second.close()
        go.touch()  # a failed test leaves no worker waiting
    assert started.read_text() == "ran\nran\n", "the restart ended the first run"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kernel_name", ["pmp", "python3"])
def test_a_stored_cell_result_survives_a_kernel_restart(tmp_path, kernel_name):
    # ipykernel names a cell's file after its process: the key must not.
    if not kernel_available(kernel_name):
        pytest.skip(f"the {kernel_name} kernelspec is not registered")
    ran = tmp_path / "ran.txt"
    cell = f"%%pmp submit --name answer\nopen({str(ran)!r}, 'a').write('ran\\n')\n6 * 7"
    double = f"def double(x):\n    open({str(ran)!r}, 'a').write('double\\n')\n    return 2 * x"
    shown = []
    for attempt in range(2):  # the second kernel is the restarted one
        session = Session(kernel_name)
        try:
            if kernel_name == "python3":
                session.run("%load_ext pmp")
            if attempt:  # other cell numbers, as after editing the notebook
                session.run("pass")
            reply, _ = session.run(f"%pmp config --cache-directory {tmp_path / 'store'}")
            assert reply["status"] == "ok"
            session.run(double)
            session.run("%pmp submit --name twice double(21)")
            reply, messages = session.run("twice.result(), twice.from_store is not None")
            (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
            assert result["content"]["data"]["text/plain"] == f"(42, {bool(attempt)})"
            _, messages = session.run(cell)
            (first,) = [m for m in messages if m["msg_type"] == "display_data"]
            display_id = first["content"]["transient"]["display_id"]
            session.drain(1.5)
            shown.append((first["content"]["data"]["text/plain"], session.displays[display_id]))
            reply, messages = session.run("answer.result()")
            (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
            assert result["content"]["data"]["text/plain"] == "42"
            _, messages = session.run("%pmp status")
            (table,) = [m for m in messages if m["msg_type"] == "display_data"]
            status = table["content"]["data"]["text/plain"]
            assert ["answer", "done"] in [row[1:3] for row in table_rows(status, "key")], status
        finally:
            session.close()
    assert sorted(ran.read_text().splitlines()) == ["double", "ran"], "each ran once"
    assert "from the store" not in shown[0][1][-1]["text/plain"]
    # At once: the first display of the re-run cell already says where it came from.
    assert "from the store (computed " in shown[1][0] and shown[1][0].endswith(": 42"), shown[1][0]
