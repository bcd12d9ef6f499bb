"""Scripts run as on a login node (outside any allocation, no SLURM_
variables), for the tests of what pmp submits from there: pilot jobs and
elastic allocations. A script prints its executor's job name
(`exe._engine.pilot_job_name`) in a line of its own, so that what a failing
test left behind is cancelled by name, and that line is left out of what
the test reads."""

import contextlib
import os
import subprocess
import sys
import textwrap
import time

OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}


@contextlib.contextmanager
def login_node_scripts(tmp_path, header, job_prefix):
    """`run(body, env=None, timeout=200)` runs `header` + `body` in
    tmp_path; `run.script(body)` is the command that would; the jobs
    named in what ran are cancelled at the end."""
    names = []

    def script(body):
        path = tmp_path / f"script-{time.monotonic_ns()}.py"
        path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
        return [sys.executable, str(path)]

    def run(body, env=None, timeout=200):
        done = subprocess.run(
            script(body),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env={**OUTSIDE, **(env or {})},
            check=False,
        )
        names.extend(line.split()[-1] for line in done.stdout.splitlines() if job_prefix in line)
        return done

    run.script = script
    run.names = names
    try:
        yield run
    finally:
        for name in names:
            subprocess.run(["scancel", "-n", name], check=False, capture_output=True)


def printed_lines(done, job_prefix):
    """What a script that succeeded printed, but the lines naming its jobs."""
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return [line for line in done.stdout.strip().splitlines() if job_prefix not in line]
