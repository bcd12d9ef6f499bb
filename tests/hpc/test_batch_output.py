"""What a batch job prints reaches the notebook and the script (issue 22
item 7): its log in the task store is read as it grows into the Future's
output, which its status display shows while the job runs and keeps when it
ends, naming the log. Through a real pmp kernel (or a plain script) outside
any allocation, and the two-node test Slurm."""

import datetime
import os
import re
import subprocess
import sys
import textwrap

import pytest
from pmp.client.future import Future
from pmp.notebook.status_display import FutureStatus
from test_status_batch import OUTSIDE, Kernel, squeue


@pytest.fixture
def kernel(slurm, tmp_path):
    started = Kernel(tmp_path)
    yield started
    (tmp_path / "go").write_text("")  # a job a failed test left waiting ends
    started.close()


TALK = """%%pmp submit --name talk
import os, time
print("first line")
for _ in range(3000):  # 150 s at most: a failed test leaves no job running
    if os.path.exists("go"):
        break
    time.sleep(0.05)
print("last line")
7"""

# Waits (bounded) until the job's first line is in its Future, while it still runs.
FIRST_LINE_SEEN = """
import time
for _ in range(1200):
    if "first line" in talk.output:
        break
    time.sleep(0.1)
talk.running(), talk.done(), talk.output
"""


@pytest.mark.timeout(300)
def test_the_display_shows_what_a_batch_job_prints_while_it_runs_and_names_its_log(
    kernel, tmp_path
):
    kernel.run("%pmp config --backend slurm --cache-directory store")
    kernel.run(TALK)
    # Still running (it waits for "go"), and what it printed so far is here.
    assert kernel.value(FIRST_LINE_SEEN) == "(True, False, 'first line\\n')"
    log = str(tmp_path / "store" / "logs")
    path = kernel.value("talk.log_path").strip("'")
    assert path.startswith(log + os.sep) and path.endswith(".out"), path
    kernel.run("time.sleep(0.6)")  # a tick of the display
    assert re.fullmatch(
        rf"talk: running for .+: job \d+ on node\d\noutput: {re.escape(path)}\nfirst line",
        kernel.final("talk"),
    ), kernel.final("talk")

    (tmp_path / "go").write_text("")
    assert kernel.value("talk.result(timeout=120)") == "7"
    kernel.run("time.sleep(0.6)")
    # Ended, the display keeps all it printed, and where it is.
    text = kernel.final("talk")
    assert re.fullmatch(
        rf"talk: done in .+: 7\noutput: {re.escape(path)}\nfirst line\nlast line", text
    ), text
    (html,) = [b[-1]["text/html"] for b in kernel.displays.values() if b[-1]["text/plain"] == text]
    assert f"output: {path}" in html and "first line\nlast line" in html, html


SCRIPT = """
import os, time
from pmp import Executor

def talk(n):
    print("first line")
    for _ in range(3000):  # 150 s at most: a failed test leaves no job running
        if os.path.exists("go"):
            break
        time.sleep(0.05)
    for i in range(n):
        print(f"line {i:06d} " + "x" * 40)
    return n

with Executor(backend="slurm", cache_directory="store") as exe:
    f = exe.submit(talk, 4000)
    for _ in range(1200):
        if "first line" in f.output:
            break
        time.sleep(0.1)
    print("while running:", f.running(), f.done(), repr(f.output))
    open("go", "w").close()
    print("result:", f.result(timeout=120))
    output = f.output
    print("streams:", sorted({name for name, _ in f.output_chunks()}))
    print("kept:", len(output) <= 64 * 1024, f.output_truncated)
    print("last:", output.splitlines()[-1])
    print("first kept:", "first line" in output)
    with open(f.log_path) as log:
        print("log:", log.read().count("\\n"))
"""


@pytest.mark.timeout(300)
def test_a_scripts_batch_future_has_what_its_job_printed_its_last_64_kib(slurm, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=OUTSIDE,
        check=False,
    )
    assert done.stdout.splitlines() == [
        "while running: True False 'first line\\n'",
        "result: 4000",
        "streams: ['stdout']",
        "kept: True True",
        "last: line 003999 " + "x" * 40,
        "first kept: False",
        "log: 4001",
    ], done.stdout + done.stderr
    assert done.returncode == 0, done.stderr


def test_a_batch_futures_display_says_when_earlier_lines_are_only_in_its_log():
    future = Future()
    future.log_path = "/store/logs/k.out"
    future._pmp_add_output("stdout", "early\n" * 8000, echo=False)
    future._pmp_add_output("stdout", "late\n" * 8000, echo=False)
    text = FutureStatus(future, "f").bundle()[1]["text/plain"]
    lines = text.splitlines()
    assert lines[1] == (
        "output: /store/logs/k.out (the last 64 KiB below; earlier lines are in that file)"
    ), text
    assert set(lines[2:]) == {"late"}, text


HELD = """%%pmp submit --name held
import os, time
for _ in range(3000):  # 150 s at most: a failed test leaves no job running
    if os.path.exists("go"):
        break
    time.sleep(0.05)
1"""


@pytest.mark.timeout(300)
def test_cancelling_a_running_batch_job_counts_it_and_says_its_job_was_cancelled(kernel, tmp_path):
    kernel.run("%pmp config --backend slurm --cache-directory store")
    kernel.run(HELD)
    job = kernel.value("held.job").strip("'")
    kernel.run("import time\nwhile not held.running(): time.sleep(0.2)")
    said = "".join(
        m["content"]["text"] for m in kernel.run("%pmp cancel held") if m["msg_type"] == "stream"
    )
    assert said == (
        f"cancelled 1 of 1 (job {job} was running: Slurm cancelled it; its Future fails, "
        "as a running Future cannot be cancelled)\n"
    ), said
    # What the line says is so: Slurm cancelled the job, and its Future failed.
    error = kernel.value("str(held.exception(timeout=120))")
    assert f"batch job {job} ended without a result: it was cancelled" in error, error
    assert squeue(job, "%T") == "CANCELLED"


DIES = """
import os, time
from pmp import Executor

def die():
    os._exit(3)

with Executor(backend="slurm", cache_directory="store") as exe:
    f = exe.submit(die)
    print(repr(f.exception(timeout=120)).split(":")[0])
    print(f.job)
    # When it ended, as a time of day, on the clock of the Future's times.
    print(time.time() - (time.monotonic() - f.finished_at))
"""


@pytest.mark.timeout(300)
def test_a_batch_job_that_ends_without_an_entry_ends_when_slurm_says(slurm, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(DIES))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=OUTSIDE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    failed, job, ended = done.stdout.splitlines()
    assert failed == f"JobFailedError('batch job {job} ended without a result", done.stdout
    slurm_ended = datetime.datetime.fromisoformat(squeue(job, "%e")).timestamp()
    # Slurm counts whole seconds.
    assert slurm_ended - 1 <= float(ended) <= slurm_ended + 1, (ended, slurm_ended)
