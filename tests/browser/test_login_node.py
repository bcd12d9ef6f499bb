"""A login-node session in JupyterLab (issue 22): JupyterLab and the pmp
kernel run outside any Slurm allocation (no SLURM_* variable), and the
notebook's `%%pmp submit` cells are batch jobs on the two-node test Slurm.
`login_node.mjs` drives headless Chromium through the notebook; at each step
this file checks what Slurm says and moves the story on.

1. Both nodes are reserved (a maintenance reservation of the test), so job
   x pends.
2. The reservation ends: x runs. The test lets it end: x is done with its
   result, and `%pmp status` lists it with its job.
3. Job y runs; Kernel > Restart Kernel (the dialog accepted). The job goes
   on in Slurm; re-running the config cell and y's cell attaches to the same
   job, which ends done with its result, and the new kernel's `%pmp status`
   lists it.

Screenshots, in target/artifacts/ (1280x1000 page, JupyterLab with the
notebook; listed at the end of the run):
- login-node-pending.png: x's cell in the middle of the page, its display
  queued, naming x's job waiting in Slurm's queue and why, in Slurm's words
  (ReqNodeNotAvail, Reserved for maintenance).
- login-node-running.png: the same cell, its display running, naming the
  job and the node it runs on, with a live elapsed time.
- login-node-done.png: from x's cell down: its display done with the result
  (the node the job ran on, as the job saw it) and where it ran, and below it `%pmp status`: the table's row for x
  (done, its job, its node, elapsed, the result), the counts and the task store's
  entry.
- login-node-restarted.png: y's cell right after the restart, before
  anything is re-run: the display of the kernel that ended, which can no
  longer change (it reads running, with the elapsed time it had then).
- login-node-reattached.png: y's cell re-run in the new kernel (prompt [2],
  after the config cell): its display running, naming the same job as
  before the restart, and under it `still running in Slurm as job N,
  submitted before the restart`.
- login-node-after-restart.png: from y's cell down: its display done with
  the result (the job's own id, so the job that computed it is the job
  attached to), and the new kernel's `%pmp status` listing y with its job.
- login-node-failed.png, only on failure: the page as it was.

The checks read the state (`data-state`), job ids, node names and results,
not the words and layout around them, which the unit and kernel tests of
tests/magics and tests/hpc pin down."""

import getpass
import json
import os
import re
import shutil
import subprocess
import time

import psutil
import pytest
from lab_server import ARTIFACTS, Driver, assert_screenshot

PREFIX = ARTIFACTS / "login-node"
SHOTS = ["pending", "running", "done", "restarted", "reattached", "after-restart"]
# The page's story, Slurm jobs included; pytest's timeout is above it.
SCRIPT_TIMEOUT_S = 480
# A job of the test Slurm starts or ends (it may wait for other tests' jobs).
JOB_TIMEOUT_S = 240
OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}

pytestmark = pytest.mark.timeout(SCRIPT_TIMEOUT_S + 120)

CONFIG = "%pmp config --backend slurm --cache-directory pmp_cache"
# Each job waits for a file the test writes, so the display is seen running.
X = """%%pmp submit --name x
import os, time

while not os.path.exists("x.go"):
    time.sleep(0.1)
"x ran on " + os.environ["SLURMD_NODENAME"]"""
Y = """%%pmp submit --name y
import os, time

while not os.path.exists("y.go"):
    time.sleep(0.1)
"computed by job " + os.environ["SLURM_JOB_ID"]"""
INTRO = (
    "# A login-node session\n"
    "This kernel runs outside any Slurm allocation: each `%%pmp submit` cell "
    "is one batch job (`sbatch`), which outlives the kernel."
)
AFTER_RESTART = (
    "After a kernel restart, run the config cell and this one again: "
    "the cell attaches to its job, still running in Slurm."
)
CELLS = [
    ("markdown", INTRO),
    ("code", CONFIG),
    ("code", X),
    ("code", "%pmp status"),
    ("markdown", AFTER_RESTART),
    ("code", Y),
    ("code", "%pmp status"),
]


def _notebook(path):
    cells = [
        {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source}
        | ({"execution_count": None, "outputs": []} if kind == "code" else {})
        for i, (kind, source) in enumerate(CELLS)
    ]
    path.write_text(
        json.dumps(
            {
                "cells": cells,
                "metadata": {
                    "kernelspec": {"name": "pmp", "display_name": "Python 3 (pmp)"},
                    "language_info": {"name": "python"},
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            },
            indent=1,
        )
    )


def _slurm(*command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr.strip()}"
    return done.stdout.strip()


def _slurm_problem():
    """Why Slurm cannot run this test (a skip), or None. Installed but
    unusable fails instead: CI must not go green without having run it."""
    if not all(map(shutil.which, ("sbatch", "squeue", "sinfo", "scancel"))):
        return "Slurm is not installed (CI starts one with shared/ci/slurm-up.sh)"
    if os.geteuid() != 0:
        return "making a job pend takes a reservation of the nodes: run as root (Slurm's admin)"
    state = subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30, check=False
    )
    said = state.stdout.strip() or state.stderr.strip()
    if not any(ok in said for ok in ("idle", "mix", "alloc", "comp")):
        pytest.fail(f"the Slurm nodes are not usable: sinfo says {said!r}")
    return None


class Jobs:
    """The kernel's jobs in the shared test Slurm (those run in `workdir`,
    the notebook's folder) and the test's reservation of the nodes."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.reservation = None

    def pmp(self):
        """{job id: (state, reason, nodes)} of the kernel's jobs, finished ones too."""
        lines = _slurm("squeue", "-h", "-t", "all", "-o", "%i|%T|%r|%N|%Z").splitlines()
        return {
            job: (state, reason, nodes)
            for job, state, reason, nodes, workdir in (line.split("|") for line in lines)
            if workdir == self.workdir
        }

    def wait(self, what, predicate):
        """Poll squeue until `predicate(jobs)` is truthy; returns that."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not (found := predicate(self.pmp())):
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not within {JOB_TIMEOUT_S} s; squeue: {self.pmp()}")
            time.sleep(0.2)
        return found

    def reserve_nodes(self):
        """Reserve both nodes (a maintenance reservation, for at most a few
        minutes should the test die), so that the kernel's next job pends.
        Jobs already running go on: on a Slurm shared with other tests, the
        nodes need not be free first, as they would for a job filling them."""
        self.reservation = f"pmp-browser-{os.getpid()}"
        _slurm(
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={self.reservation}",
            "StartTime=now",
            "Duration=5",
            "Nodes=ALL",
            f"Users={getpass.getuser()}",
            "Flags=IGNORE_JOBS",
        )

    def release_nodes(self):
        if self.reservation:
            _slurm("scontrol", "delete", f"ReservationName={self.reservation}")
            self.reservation = None

    def cancel_all(self):
        """Nothing of this test stays in the shared Slurm."""
        self.release_nodes()
        mine = [job for job, (state, _, _) in self.pmp().items() if state in ("PENDING", "RUNNING")]
        if mine:
            subprocess.run(["scancel", *mine], timeout=60, check=False)


@pytest.fixture
def session(tmp_path, serve_lab, record_artifact):
    """The notebook in JupyterLab outside any allocation, and the test's view
    of Slurm; every job left is cancelled at the end."""
    reason = _slurm_problem()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "notebooks"
    root.mkdir()
    _notebook(root / "login-node.ipynb")
    for shot in [*SHOTS, "failed"]:
        (ARTIFACTS / f"login-node-{shot}.png").unlink(missing_ok=True)
    lab = serve_lab(root, "login-node-lab.log", env=OUTSIDE)
    jobs = Jobs(root)
    try:
        yield lab, root, jobs
    finally:
        jobs.cancel_all()
        for shot in [*SHOTS, "failed"]:
            if (path := ARTIFACTS / f"login-node-{shot}.png").exists():
                record_artifact(path)


def _kernel(lab):
    """The one pmp kernel process of the server."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while len(kernels := lab.kernels()) != 1:
        if time.monotonic() > deadline:
            pytest.fail(f"JupyterLab runs {len(kernels)} pmp kernels, not 1")
        time.sleep(0.2)
    return kernels[0]


def _row(table, task, job, result):
    """A row of the `%pmp status` table (its text, a line a row) naming
    `task`, its job and its result (the table's words may change)."""
    rows = [line for line in table.splitlines() if line.split()[:1] == [task]]
    return any(job in row.split() and result in row for row in rows)


def _story(driver, lab, root, jobs):
    driver.expect("kernel-idle")
    kernel = _kernel(lab)
    slurm_vars = [key for key in kernel.environ() if key.startswith("SLURM_")]
    assert not slurm_vars, f"the kernel is inside an allocation: {slurm_vars}"
    jobs.reserve_nodes()
    driver.proceed()

    # x is queued: its job pends, the nodes reserved (Slurm's reason:
    # ReqNodeNotAvail, Reserved for maintenance).
    driver.expect("x-queued")
    ((x, (state, reason, _)),) = jobs.wait(
        "x's job pending with Slurm's reason",
        lambda found: [(job, s) for job, s in found.items() if s[1] not in ("", "None")],
    )
    assert state == "PENDING", (state, reason)
    # The display names the job and says why it waits in Slurm's word.
    driver.proceed(job=x, reason=reason)
    shown = driver.expect("x-pending")
    assert reason in shown["text"], shown
    assert jobs.pmp()[x][0] == "PENDING", "x's job was pending when the picture was taken"
    jobs.release_nodes()
    driver.proceed()

    # x runs: the display names its node.
    shown = driver.expect("x-running")
    state, _, node = jobs.pmp()[x]
    assert state == "RUNNING" and node in shown["text"], (state, node, shown)
    (root / "x.go").write_text("")
    driver.proceed()

    # x is done with its result; `%pmp status` lists it with its job and node.
    shown = driver.expect("x-done")
    assert f"x ran on {node}" in shown["text"], shown
    jobs.wait("x's job completed", lambda found: found.get(x, ("",))[0] == "COMPLETED")
    assert _row(shown["table"], "x", x, f"x ran on {node}"), shown["table"]
    driver.proceed()

    # y runs when the kernel restarts; its job goes on.
    driver.expect("y-submitted")
    ((y, _),) = jobs.wait(
        "y's job running",
        lambda found: [(job, s) for job, s in found.items() if job != x and s[0] == "RUNNING"],
    )
    driver.proceed(job=y)
    driver.expect("restarted")
    try:
        kernel.wait(timeout=JOB_TIMEOUT_S)
    except psutil.TimeoutExpired:
        pytest.fail(f"the kernel (pid {kernel.pid}) still runs after the restart")
    _kernel(lab)  # the new one
    assert jobs.pmp()[y][0] == "RUNNING", "y's job ended with the kernel"
    driver.proceed()

    # y's cell re-run attaches to the same job: no other job was submitted.
    shown = driver.expect("y-attached")
    assert re.search(rf"\b{y}\b", shown["text"]), shown
    assert set(jobs.pmp()) == {x, y}, jobs.pmp()
    (root / "y.go").write_text("")
    driver.proceed()

    shown = driver.expect("y-done")
    assert f"computed by job {y}" in shown["text"], shown
    assert _row(shown["table"], "y", y, f"computed by job {y}"), shown["table"]
    jobs.wait("y's job completed", lambda found: found.get(y, ("",))[0] == "COMPLETED")
    driver.proceed()


def test_login_node_session_in_jupyterlab(session):
    lab, root, jobs = session
    driver = Driver(
        "login_node.mjs", [lab.url("/lab/tree/login-node.ipynb"), PREFIX], SCRIPT_TIMEOUT_S
    )
    returncode = driver.run_story(lambda: _story(driver, lab, root, jobs), lab)
    assert returncode == 0, f"login_node.mjs failed:\n{driver}\n{lab.log_tail()}"
    for shot in SHOTS:
        assert_screenshot(ARTIFACTS / f"login-node-{shot}.png")
