"""After a kernel restart (issue 22, item 13), with per-call Slurm batch jobs
from outside any allocation (a login node): the jobs of the old kernel go
on in Slurm. `%pmp status` of the new kernel lists them from the store's
job records with their state in Slurm; a re-run cell attaches to its job
and says so ("still running in Slurm as job N, submitted before the
restart"), then follows it to its end; a job that ended while no kernel
followed it shows its stored result or failure. Through a real pmp kernel restarted
by jupyter_client, and the two-node test Slurm."""

import re

import pytest
from test_status_batch import Kernel


def cell(name, marker, go, value):
    return (
        f"%%pmp submit --name {name}\nimport os, time\nopen({marker!r}, 'w').close()\n"
        f"while not os.path.exists({go!r}):\n    time.sleep(0.05)\n{value}"
    )


def wait_for(kernel, condition):
    kernel.run(f"import time\nwhile not ({condition}): time.sleep(0.2)")


def note_of(kernel, label):
    """The display's second line: what became of the earlier run."""
    return kernel.final(label).splitlines()[1]


@pytest.mark.timeout(300)
def test_after_a_restart_a_batch_job_is_listed_attached_to_and_followed(slurm, tmp_path):
    held = cell("held", "held-started", "go", "6 * 7")
    over = cell("over", "over-started", "go-over", "'over'")
    bad = cell("bad", "bad-started", "go-bad", "raise ValueError('no')")
    config = "%pmp config --backend slurm --cache-directory store"
    kernel = Kernel(tmp_path)
    try:
        kernel.run(config)
        kernel.run(held)
        kernel.run(over)
        kernel.run(bad)
        job = kernel.value("held.job").strip("'")
        bad_job = kernel.value("bad.job").strip("'")
        wait_for(kernel, "held.running() and over.running() and bad.running()")
        kernel.manager.restart_kernel()
        kernel.client.wait_for_ready(timeout=60)

        kernel.run(config)
        text, _ = kernel.shown("%pmp status")
        assert "no tasks submitted from this notebook" in text, text
        lines = [line.strip() for line in text.splitlines()]
        assert "calls this kernel did not submit, from the task store: 3" in lines, text
        # Keyed by content: the job's line is found by its job id.
        (line,) = [line for line in lines if f" as job {job} " in line]
        assert re.fullmatch(
            rf"\S+: still running in Slurm as job {job} \(RUNNING on node\d\), "
            "submitted before the restart",
            line,
        ), line

        # Jobs that ended while no kernel followed them: their stored outcome.
        (tmp_path / "go-over").touch()
        (tmp_path / "go-bad").touch()
        kernel.run("import pmp, time\nwhile len(pmp.get_cache_data('store')) < 2: time.sleep(0.2)")
        kernel.run(over)
        assert re.fullmatch(
            r"over: done in .+, from the store \(computed .+\): 'over'", kernel.final("over")
        ), kernel.final("over")
        kernel.run(bad)
        summary, note = kernel.final("bad").splitlines()[:2]
        assert re.fullmatch(rf"bad: failed after .+ in job {bad_job}: ValueError: no", summary)
        assert note == (
            f"job {bad_job} in Slurm, submitted before the restart, failed while no kernel "
            "followed it: run the cell again to run it again"
        ), note
        # Once: run again, it is a new job (which fails again, as nothing changed).
        kernel.run(bad)
        assert kernel.value("str(bad.exception(timeout=120)), bad.job != " + repr(bad_job)) == (
            "('no', True)"
        )

        # The running one: attached to, and said so, at once and while it runs.
        (shown,) = [m for m in kernel.run(held) if m["msg_type"] == "display_data"]
        first = shown["content"]["data"]["text/plain"]
        assert first.splitlines()[1] == (
            f"still in Slurm as job {job}, submitted before the restart"
        ), first
        assert kernel.value("held.job").strip("'") == job, "it attached to the same job"
        wait_for(kernel, "held.running()")
        kernel.run("time.sleep(0.6)")  # a tick of the display
        assert note_of(kernel, "held") == (
            f"still running in Slurm as job {job}, submitted before the restart"
        ), kernel.final("held")
        (tmp_path / "go").touch()
        assert kernel.value("held.result(timeout=120)") == "42"
        kernel.run("time.sleep(0.6)")
        assert re.match(r"held: done in .+: 42$", kernel.final("held").splitlines()[0])
        assert note_of(kernel, "held") == (
            f"job {job} in Slurm, submitted before the restart, ran it"
        ), kernel.final("held")
        text, _ = kernel.shown("%pmp status")
        assert "did not submit" not in text, text
    finally:
        kernel.close()
        for go in ("go", "go-over", "go-bad"):  # a failed test leaves no job waiting
            (tmp_path / go).touch()
    for started in ("held-started", "over-started", "bad-started"):
        assert (tmp_path / started).exists()
