"""`%pmp status` and the status displays of batch jobs (issue 22), through a
real pmp kernel outside any allocation (no SLURM_* variable, as on a login
node) and the two-node test Slurm: the table renders, a pending job's state
reads as words, a result says "from the store" only when it was reused,
every elapsed time is the job's own, and a done Future's job state is its
job's end."""

import ast
import datetime
import html
import os
import re
import subprocess
import time

import pytest
from pmp.client.future import Future
from pmp.client.job_states import JobStatus
from pmp.notebook.status_display import JOB_REASONS, FutureStatus

OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}


class Kernel:
    """A pmp-kernel outside any allocation; keeps every display's bundles."""

    def __init__(self, cwd):
        import jupyter_client
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            KernelSpecManager().get_kernel_spec("pmp")
        except NoSuchKernel:
            pytest.skip("the pmp kernelspec is not registered (./install.sh)")
        self.manager, self.client = jupyter_client.manager.start_new_kernel(
            kernel_name="pmp", startup_timeout=60, cwd=str(cwd), env=OUTSIDE
        )
        self.displays = {}  # display_id -> [data bundle], in order

    def run(self, code, timeout=180):
        msg_id = self.client.execute(code)
        mine = []
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            if msg["msg_type"] in ("display_data", "update_display_data"):
                display_id = msg["content"].get("transient", {}).get("display_id")
                self.displays.setdefault(display_id, []).append(msg["content"]["data"])
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mine.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=timeout)
        assert reply["content"]["status"] == "ok", reply["content"]
        return mine

    def shown(self, code):
        """The display a cell made, as it last read (text/plain, text/html)."""
        (display,) = [m for m in self.run(code) if m["msg_type"] == "display_data"]
        last = self.displays[display["content"]["transient"]["display_id"]][-1]
        return last["text/plain"], last["text/html"]

    def final(self, label):
        """The last text of the display whose text starts with `label`."""
        texts = [
            bundles[-1]["text/plain"]
            for bundles in self.displays.values()
            if bundles[-1]["text/plain"].startswith(f"{label}: ")
        ]
        return texts[-1]

    def value(self, code):
        (result,) = [m for m in self.run(code) if m["msg_type"] == "execute_result"]
        return result["content"]["data"]["text/plain"]

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(slurm, tmp_path):
    started = Kernel(tmp_path)
    yield started
    started.close()


def squeue(job, field):
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", field],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


SLOW = "%%pmp submit --name slow\nimport time\ntime.sleep(3)\n6 * 7"
BAD = "%%pmp submit --name bad\nimport time\ntime.sleep(3)\nraise ValueError('no')"


@pytest.mark.timeout(300)
def test_status_display_and_future_tell_one_story_of_batch_jobs(kernel, tmp_path):
    kernel.run("%pmp config --backend slurm --cache-directory store")
    # A job that waits for its upstream reads as words, its state first.
    kernel.run(
        "import pathlib, time\ndef gate(x):\n    import os, time\n"
        "    while not os.path.exists('go'):\n        time.sleep(0.05)\n    return x"
    )
    kernel.run("%pmp submit --name first gate(1)")
    kernel.run("%pmp submit --name second gate(first)")
    job = kernel.value("second.job").strip("'")
    kernel.run("while 'Dependency' not in (second.job_state or ''): time.sleep(0.2)")
    kernel.run("time.sleep(0.6)")  # a tick of the display
    text = kernel.final("second")
    assert re.fullmatch(
        rf"second: queued for .+: job {job} waiting in Slurm's queue: Dependency "
        rf"\({re.escape(JOB_REASONS['Dependency'])}\)",
        text,
    ), text
    (tmp_path / "go").write_text("")
    kernel.run(SLOW)
    kernel.run(BAD)
    assert kernel.value("second.result(timeout=180), slow.result(timeout=180)") == "(1, 42)"
    assert kernel.value("str(bad.exception(timeout=180))") == "'no'"

    # Item 6: a done Future's job state is how its job ended.
    assert kernel.value("slow.job_state, bad.job_state") == "('COMPLETED', 'FAILED')"

    # Item 5: one clock, the job's own start and end as the store has them.
    took = kernel.value(
        "import pmp\nfrom pmp.notebook.status_display import _duration\n"
        "{r['function']: _duration(r['duration']) for r in pmp.get_cache_data('store')}"
    )
    took = ast.literal_eval(took)
    kernel.run("time.sleep(0.6)")
    # Where it failed, too (item 12): its node and job.
    assert re.fullmatch(
        rf"bad: failed after {re.escape(took['bad'])} on node\d \(job \d+\): ValueError: no",
        kernel.final("bad"),
    ), kernel.final("bad")
    # Item 4: computed by its job, not "from the store".
    assert re.fullmatch(
        rf"slow: done in {took['slow']}(?: on node\d \(job \d+\))?: 42", kernel.final("slow")
    ), kernel.final("slow")

    # Item 1: the table renders for per-call batch jobs, and counts its rows.
    text, markup = kernel.shown("%pmp status")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["task", "state"])
    rows = {line.split()[0]: line for line in lines[header + 1 : header + 5]}
    assert set(rows) == {"first", "second", "slow", "bad"}, text
    assert f" {took['slow']} " in rows["slow"] and f" {took['bad']} " in rows["bad"], text
    assert "from the store" not in text
    assert "tasks: 3 done, 1 failed" in text
    assert "batch jobs (slurm, one per call): none queued or running" in text
    # In HTML the legend gives the counts, state by state.
    assert "</span> done 3</span>" in markup and "</span> failed 1</span>" in markup, markup

    # Item 4: the same call again is the stored result, and says so.
    kernel.run(SLOW)
    kernel.run("time.sleep(0.6)")
    assert re.fullmatch(
        rf"slow: done in {took['slow']}, from the store \(computed .+\): 42", kernel.final("slow")
    ), kernel.final("slow")


CELL = """%%pmp submit --name held
import os, time
while not os.path.exists("go"):
    time.sleep(0.05)
raise ValueError("no")"""


@pytest.mark.timeout(300)
def test_a_job_attached_to_after_a_restart_is_timed_by_slurm_and_the_store(slurm, tmp_path):
    first = Kernel(tmp_path)
    try:
        first.run("%pmp config --backend slurm --cache-directory store")
        first.run(CELL)
        job = first.value("held.job").strip("'")
        first.run(
            "import time\nwhile not (held.job_state or '').startswith('RUNNING'): time.sleep(0.2)"
        )
    finally:
        first.close()  # the job goes on
    slurm_began = datetime.datetime.fromisoformat(squeue(job, "%S")).timestamp()
    # Attach when the job has run a while: a clock started at the attach is then seen wrong.
    time.sleep(max(0.0, slurm_began + 3 - time.time()))
    second = Kernel(tmp_path)
    try:
        second.run("%pmp config --backend slurm --cache-directory store")
        second.run(CELL)
        assert second.value("held.job").strip("'") == job, "it attached to the same job"
        second.run("import time\nwhile not held.running(): time.sleep(0.2)")
        # When the display says the job started, as a time of day.
        began = float(second.value("time.time() - (time.monotonic() - held.started_at)"))
        # Slurm counts whole seconds; the kernel restart took longer than that.
        assert slurm_began - 1 <= began <= slurm_began + 1, (began, slurm_began)
        second.run("time.sleep(0.6)")  # a tick of the display
        text = second.final("held")
        assert re.fullmatch(
            rf"held: running for .+: job {job} on node\d\n"
            rf"still running in Slurm as job {job}, submitted before the restart",
            text,
        ), text

        (tmp_path / "go").write_text("")
        assert (
            second.value("str(held.exception(timeout=120)), held.job_state") == "('no', 'FAILED')"
        )
        took = second.value(
            "import pmp\nfrom pmp.notebook.status_display import _duration\n"
            "_duration(pmp.get_cache_data('store')[0]['duration'])"
        ).strip("'")
        second.run("time.sleep(0.6)")
        # The display and the table time it as the store does, from the call's start.
        assert re.fullmatch(
            rf"held: failed after {re.escape(took)} on node\d \(job \d+\): ValueError: no\n"
            rf"job {job} in Slurm, submitted before the restart, ran it",
            second.final("held"),
        ), second.final("held")
        text, _ = second.shown("%pmp status")
        (row,) = [line for line in text.splitlines() if line.startswith("held ")]
        assert f" {took} " in row, text
    finally:
        second.close()
        (tmp_path / "go").write_text("")  # a failed test leaves no job waiting


@pytest.mark.parametrize("reason", sorted(JOB_REASONS))
def test_each_reason_a_pending_job_waits_for_reads_as_words(reason):
    # The display of a real Future whose follower heard `reason` from squeue.
    future = Future()
    future.job = "83"
    future.job_status = JobStatus("Slurm", "PENDING", reason, "")
    text, markup = FutureStatus(future, "f").bundle()[1].values()
    assert re.fullmatch(
        rf"f: queued for .+: job 83 waiting in Slurm's queue: {reason} "
        rf"\({re.escape(JOB_REASONS[reason])}\)",
        text,
    ), text
    # The HTML shows the state as its badge and the job's words whole.
    assert 'class="pmp-badge" data-state="queued"' in markup, markup
    assert html.escape(f"job 83 waiting in Slurm's queue: {reason} (") in markup, markup


def test_a_reason_with_slurms_details_still_reads_as_words():
    # squeue adds details after the reason's word, as for a reserved node.
    future = Future()
    future.job = "83"
    future.job_status = JobStatus(
        "Slurm", "PENDING", "ReqNodeNotAvail, Reserved for maintenance", ""
    )
    text = FutureStatus(future, "f").bundle()[1]["text/plain"]
    assert text.endswith(
        f"ReqNodeNotAvail, Reserved for maintenance ({JOB_REASONS['ReqNodeNotAvail']})"
    ), text
