"""Flux as the job system of batch mode (`batch.BatchJobs`): one `flux
submit` job per call to a Flux instance the client is not a job of (the
system instance of a Flux-run cluster, seen from a login node), states from
one `flux jobs` call for all jobs, `flux cancel`.

Flux's states are put in Slurm's words, which batch mode uses for every job
system: DEPEND, PRIORITY and SCHED are PENDING (with the Flux state as the
reason), RUN and CLEANUP are RUNNING, an inactive job is its result
(COMPLETED, FAILED, TIMEOUT; CANCELED is CANCELLED).
"""

import os
import subprocess

from pmp.client.errors import DependencyRefused

_PENDING = ("DEPEND", "PRIORITY", "SCHED", "NEW")
_RUNNING = ("RUN", "CLEANUP")
_RESULTS = {"CANCELED": "CANCELLED"}


def submit_options(name, resources, cwd, log, dependencies):
    """`flux submit`'s options for one call's job."""
    options = [
        f"--job-name={name}",
        f"--ntasks={resources['cores']}",
        f"--cores-per-task={resources['threads_per_core']}",
        f"--output={log}",  # stderr goes there too
        f"--cwd={cwd}",
    ]
    if resources["gpus_per_core"]:
        options.append(f"--gpus-per-task={resources['gpus_per_core']}")
    if resources.get("num_nodes"):
        options.append(f"--nodes={resources['num_nodes']}")
    if resources.get("exclusive"):
        options.append("--exclusive")
    if resources.get("run_time_max"):
        options.append(f"--time-limit={resources['run_time_max']}s")
    if resources.get("partition"):
        options.append(f"--queue={resources['partition']}")  # Flux calls them queues
    if resources.get("priority") is not None:
        options.append(f"--urgency={resources['priority']}")
    options += [f"--dependency=afterok:{job}" for job in dependencies]
    options.extend(resources["command_line_argument_lst"])
    from pmp.client.resources import check_plain

    for option in options:
        check_plain(f"the flux submit option {option.split('=', 1)[0]!r}", option)
    return options


def _plain(job):
    """A job id as compared here: Flux writes 'ƒ' only in a UTF-8 locale."""
    return job.replace("ƒ", "f")


def _names_unknown_jobs(stderr):
    """Whether `flux jobs` failed because it does not know an id (it
    answered), not because the instance could not be reached."""
    text = stderr.lower()
    return "unknown" in text or "no such" in text or "not found" in text


class FluxJobs:
    name = "flux"

    def __init__(self, flux, tool_dirs):
        self._flux = flux
        self._tool_dirs = tool_dirs

    def check(self, resources):
        for key, why in (
            ("memory_max", "Flux has no per-job memory limit"),
            ("slurm_cmd_args", "it holds sbatch options; use command_line_argument_lst"),
        ):
            if resources.get(key):
                raise ValueError(f"resource_dict key {key!r} cannot be honoured on Flux: {why}")

    def submit(self, name, resources, cwd, log, environment, worker, dependencies):
        """Submit one call's job; returns its id. Flux starts every rank
        itself (`--ntasks`), each with its rank in FLUX_TASK_RANK and PMI."""
        options = submit_options(name, resources, cwd, log, dependencies)
        # flux submit exports the submitting environment to the job.
        done = subprocess.run(
            [self._flux, "submit", *options, worker],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            # "dependency: afterok: job ... failed or was canceled"
            refused = DependencyRefused if dependencies and "afterok" in said else RuntimeError
            raise refused(f"flux submit refused the job of {name}: {said}")
        return done.stdout.strip().splitlines()[-1]

    def states(self, jobs):
        """{job id: (state, reason, nodes, started)} of the jobs Flux knows,
        in one `flux jobs` call (`started`: when a running job started, a
        `time.time()` value, else None); None when it did not answer."""
        command = [
            self._flux,
            "jobs",
            "--no-header",
            "--format={id.f58}|{state}|{result}|{nodelist}|{t_run}",
            *jobs,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        by_plain = {_plain(job): job for job in jobs}
        states = {}
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) != 5 or _plain(parts[0]) not in by_plain:
                continue
            job, (state, result, nodes, run) = by_plain[_plain(parts[0])], parts[1:]
            if state in _PENDING:
                states[job] = ("PENDING", state, "", None)
            elif state in _RUNNING:
                states[job] = ("RUNNING", "", nodes, _started(run))
            else:
                states[job] = (_RESULTS.get(result, result or "COMPLETED"), "", nodes, None)
        if done.returncode == 0 or states:
            return states
        if not _names_unknown_jobs(done.stderr):
            return None  # the instance did not answer: nothing is known
        if len(jobs) > 1:
            for job in jobs:  # one unknown id may fail the whole call
                one = self.states([job])
                if one is None:
                    return None
                states.update(one)
        return states

    def find(self, name):
        """The id of this user's pending or running job named `name`, if
        any, in one `flux jobs` call."""
        command = [
            self._flux,
            "jobs",
            "--no-header",
            "--filter=pending,running",
            f"--name={name}",
            "--format={id.f58}",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(_unanswered(name, error)) from None
        if done.returncode != 0:
            raise RuntimeError(_unanswered(name, done.stderr.strip()))
        jobs = done.stdout.split()
        return jobs[-1] if jobs else None  # listed newest first

    def ended_at(self, job):
        """When an ended job ended (`flux jobs`' t_inactive), a `time.time()`
        value, or None."""
        return _started(self._field(job, "t_inactive"))

    def accounted(self, job):
        """Always None: Flux keeps no accounting apart from `flux jobs`, so
        a job it no longer lists is lost."""

    def cancel(self, jobs):
        # Ids only (the store checked them), and after "--": never an option.
        subprocess.run(
            [self._flux, "cancel", "--", *jobs], capture_output=True, timeout=60, check=False
        )

    def exit_code(self, job):
        shown = self._field(job, "returncode")
        return int(shown) if shown.lstrip("-").isdigit() else None

    def _field(self, job, field):
        """One field of `flux jobs` for `job`, as text ("" if Flux does not answer)."""
        try:
            return subprocess.run(
                [self._flux, "jobs", "--no-header", f"--format={{{field}}}", job],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""


def _unanswered(name, why):
    return (
        f"flux jobs did not answer whether the job {name} is queued ({why}); a client "
        "that died while submitting it may have left it queued, so none is submitted "
        "now: submit again once Flux answers"
    )


def _started(text):
    """`flux jobs`' t_run or t_inactive (seconds since the epoch, 0 before
    that happened) as a `time.time()` value, or None."""
    try:
        started = float(text)
    except ValueError:
        return None
    return started if started > 0 else None
