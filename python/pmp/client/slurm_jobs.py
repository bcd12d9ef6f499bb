"""Slurm as the job system of batch mode (`batch.BatchJobs`): one `sbatch`
job per call, states from one `squeue` call for all jobs, `scancel`.

States are Slurm's own words (PENDING, RUNNING, COMPLETED, TIMEOUT, ...),
which batch mode uses for every job system.
"""

import os
import shlex
import shutil
import subprocess

from pmp.client.errors import DependencyRefused


def sbatch_options(name, resources, cwd, log, dependencies):
    """The `#SBATCH` options of one call's job."""
    cores = resources["cores"]
    options = [
        f"--job-name={name}",
        f"--ntasks={cores}",
        f"--cpus-per-task={resources['threads_per_core']}",
        # Slurm expands %-patterns in the path: a key part "run/a" is "run%a" there.
        f"--output={log.replace('%', '%%')}",
        f"--chdir={cwd}",
        # A requeued job would run its call again (a node failure, `scontrol
        # requeue`); the job refuses to, but Slurm would still hold the
        # allocation. A user's --requeue comes later, and the last one wins.
        "--no-requeue",
    ]
    if resources["gpus_per_core"]:
        options.append(f"--gpus-per-task={resources['gpus_per_core']}")
    if resources.get("num_nodes"):
        options.append(f"--nodes={resources['num_nodes']}")
    if resources.get("exclusive"):
        options.append("--exclusive")
    if resources.get("run_time_max"):
        minutes = -(-resources["run_time_max"] // 60)  # Slurm counts whole minutes
        options.append(f"--time={minutes}")
    if resources.get("memory_max"):
        options.append(f"--mem={int(resources['memory_max'] * 1024)}M")
    if resources.get("partition"):
        options.append(f"--partition={resources['partition']}")
    if dependencies:
        options.append("--dependency=afterok:" + ":".join(dependencies))
        # A dependency that can never be met cancels the job instead of
        # leaving it pending forever.
        options.append("--kill-on-invalid-dep=yes")
    options.extend(resources["command_line_argument_lst"])
    options.extend(resources.get("slurm_cmd_args") or ())
    return options


def job_script(options, environment, command):
    from pmp.client.resources import check_plain

    for option in options:
        # A newline would end the #SBATCH line: the rest would run as a
        # command, and the options after it would be lost.
        check_plain(f"the sbatch option {option.split('=', 1)[0]!r}", option)
    lines = ["#!/bin/sh"]
    lines += [f"#SBATCH {option}" for option in options]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in environment.items()]
    lines.append("exec " + " ".join(shlex.quote(part) for part in command))
    return "\n".join(lines) + "\n"


class SlurmJobs:
    name = "slurm"

    def __init__(self, sbatch, tool_dirs):
        self._sbatch = sbatch
        here = os.path.dirname(sbatch)
        self._srun = shutil.which("srun", path=here) or "srun"
        self._squeue = shutil.which("squeue", path=here) or "squeue"
        self._scancel = shutil.which("scancel", path=here) or "scancel"
        self._scontrol = shutil.which("scontrol", path=here) or "scontrol"
        self._sacct = shutil.which("sacct", path=here) or "sacct"
        self._tool_dirs = tool_dirs

    pmi_mode = None  # srun's --mpi for the ranks inside the job; None: pmp's choice

    def check(self, resources):
        if resources.get("priority") is not None:
            raise ValueError(
                "resource_dict key 'priority' cannot be honoured by Slurm: only its "
                "administrators set a job's priority (pass --nice through slurm_cmd_args to "
                "lower it)"
            )

    def submit(self, name, resources, cwd, log, environment, worker, dependencies):
        """Submit one call's job; returns its id."""
        from pmp import _pmp

        cores = resources["cores"]
        if cores > 1:
            if self.pmi_mode:
                mpi = [f"--mpi={self.pmi_mode}"]
            else:
                mpi = _pmp.srun_mpi_options(self._tool_dirs)
            command = [self._srun, f"--ntasks={cores}", *mpi, worker]
        else:
            command = [worker]
        options = sbatch_options(name, resources, cwd, log, dependencies)
        done = subprocess.run(
            [self._sbatch, "--parsable"],
            input=job_script(options, environment, command),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            # "Job dependency problem": an afterok job already failed.
            refused = DependencyRefused if dependencies and "dependency" in said else RuntimeError
            raise refused(f"sbatch refused the job of {name}: {said}")
        return done.stdout.strip().split(";")[0]

    def states(self, jobs):
        """{job id: (state, reason, nodes, started)} of the jobs Slurm knows,
        in one squeue call (`started`: when a running job started, a
        `time.time()` value, else None); None when squeue did not answer
        (slurmctld down or restarting), which says nothing about the jobs."""
        command = [self._squeue, "-h", "-t", "all", "-o", "%i|%T|%r|%N|%S", "-j", ",".join(jobs)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        states = {}
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 5:
                started = _started(parts[4]) if parts[1] == "RUNNING" else None
                states[parts[0]] = (parts[1], parts[2], parts[3], started)
        if done.returncode == 0:
            return states
        if "Invalid job id" not in done.stderr:
            return None
        if not states and len(jobs) > 1:
            for job in jobs:  # one unknown id fails the whole call
                one = self.states([job])
                if one is None:
                    return None
                states.update(one)
        return states

    def find(self, name):
        """The id of this user's queued or running job named `name`, if any
        (the lowest, should there be several), in one squeue call."""
        command = [self._squeue, "-h", "--me", f"--name={name}", "-o", "%i"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(_unanswered(name, error)) from None
        if done.returncode != 0:
            raise RuntimeError(_unanswered(name, done.stderr.strip()))
        jobs = sorted(done.stdout.split(), key=lambda job: (len(job), job))
        return jobs[0] if jobs else None

    def ended_at(self, job):
        """When an ended job ended, a `time.time()` value: from squeue while
        it still lists the job (a few minutes after its end), else from the
        accounting (sacct's End); None when neither knows."""
        for command in (
            [self._squeue, "-h", "-t", "all", "-o", "%e", "-j", job],
            [self._sacct, "-n", "-X", "-P", "-o", "End", "-j", job],
        ):
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=30, check=False
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            for line in done.stdout.splitlines():
                ended = _started(line.strip())
                if ended is not None:
                    return ended
        return None

    def accounted(self, job):
        """(state, exit code) of a job squeue no longer shows, from Slurm's
        accounting (`sacct`), or None where it has no record (or none is kept)."""
        command = [self._sacct, "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in done.stdout.splitlines():
            state, _, code = line.partition("|")
            if state.strip():
                # "CANCELLED by 1000"; an exit code is "code:signal".
                code = code.split(":")[0]
                return state.split()[0], int(code) if code.isdigit() else None
        return None

    def cancel(self, jobs):
        # Ids only (the store checked them), and after "--": never an option.
        subprocess.run([self._scancel, "--", *jobs], capture_output=True, timeout=60, check=False)

    def exit_code(self, job):
        """The exit code of an ended job, from `scontrol show job` (kept a few
        minutes after it ends), or None."""
        try:
            shown = subprocess.run(
                [self._scontrol, "show", "job", "-o", job],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for field in shown.split():
            if field.startswith("ExitCode="):
                code = field.split("=", 1)[1].split(":")[0]
                return int(code) if code.isdigit() else None
        return None


def _started(text):
    """squeue's or sacct's start or end time (local time,
    `2026-12-06T02:30:00`) as a `time.time()` value; None for `N/A` or
    `Unknown`."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _unanswered(name, why):
    return (
        f"squeue did not answer whether the job {name} is queued ({why}); a client "
        "that died while submitting it may have left it queued, so none is submitted "
        "now: submit again once Slurm answers"
    )
