"""Which backend starts the workers, where pmp-worker lives and what it
imports from, which GPUs exist."""

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig

from pmp import _pmp

BACKENDS = ("auto", "local", "mpi", "slurm", "flux")


class Backend:
    """Where workers run: ``name`` (local, slurm, flux), why, and the program
    that starts them (srun or flux; None for local)."""

    def __init__(self, name, reason, launcher=None, batch=False):
        self.name = name
        self.reason = reason
        self.launcher = launcher
        # Outside any allocation: calls are batch jobs (launcher is sbatch).
        self.batch = batch


def choose_backend(backend, executor=None, cluster=None):
    """The backend for `backend` here. `cluster` True: calls are batch jobs
    of the cluster's job system (sbatch, flux submit) even inside an
    allocation, as executorlib's *ClusterExecutor classes submit them;
    False: never (executorlib's SlurmJobExecutor runs srun even outside an
    allocation, where each worker's srun gets a job of its own); None: batch
    jobs only outside any allocation."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
        )
    flux = shutil.which("flux")
    srun = shutil.which("srun")
    if backend == "auto" and executor is not None:
        backend = "flux"
    if backend in ("local", "mpi"):
        return Backend("local", f"backend={backend!r} was asked for: processes on this machine")
    if backend == "flux":
        return _flux_backend(flux, executor, cluster)
    sbatch = shutil.which("sbatch")
    if backend == "slurm":
        if cluster or (cluster is None and not os.environ.get("SLURM_JOB_ID")):
            where = (
                "as cluster jobs"
                if cluster
                else "outside any Slurm allocation (SLURM_JOB_ID is not set)"
            )
            if not sbatch:
                raise ValueError(
                    f"backend='slurm' {where} submits batch jobs with sbatch, which is not on PATH"
                )
            return Backend(
                "slurm",
                f"backend='slurm' was asked for {where}: each call is submitted as a batch "
                "job with sbatch",
                sbatch,
                batch=True,
            )
        if not srun:
            raise ValueError("backend='slurm' needs srun, which is not on PATH")
        if not os.environ.get("SLURM_JOB_ID"):
            return Backend(
                "slurm",
                "srun steps were asked for outside any Slurm allocation: each worker's srun "
                "is a job of its own",
                srun,
            )
        return Backend("slurm", "backend='slurm' was asked for", srun)
    if flux and os.environ.get("FLUX_URI"):
        return Backend("flux", "inside a Flux instance (FLUX_URI is set, flux is on PATH)", flux)
    if srun and os.environ.get("SLURM_JOB_ID"):
        return Backend(
            "slurm",
            f"inside Slurm allocation {os.environ['SLURM_JOB_ID']} (srun is on PATH)",
            srun,
        )
    reason = "no Flux instance (FLUX_URI) or Slurm allocation (SLURM_JOB_ID) found"
    if sbatch:
        reason += "; backend='slurm' would submit each call as a batch job with sbatch"
    if flux:
        reason += (
            "; backend='flux' would submit each call with flux submit to the Flux instance "
            "the flux command reaches"
        )
    return Backend("local", reason)


def _flux_backend(flux, executor, cluster):
    """Inside a Flux instance (FLUX_URI is set: `flux start`, `flux alloc`),
    workers are `flux run` jobs of it; outside one, or as cluster jobs, each
    call is a `flux submit` job of the instance the flux command reaches (a
    Flux-run cluster's system instance), which outlives the client."""
    inside = bool(os.environ.get("FLUX_URI"))
    if not flux:
        raise ValueError(
            "backend='flux' (or executor=) needs a Flux instance and the flux command, "
            "which is not on PATH"
        )
    if executor is not None or (inside and not cluster):
        if not inside:
            raise ValueError(
                "executor= (a flux.job.FluxExecutor) needs a Flux instance: run inside "
                "`flux start` (FLUX_URI is not set)"
            )
        return Backend("flux", "backend='flux' was asked for", flux)
    if not inside and not _flux_answers(flux):
        raise ValueError(
            "backend='flux' outside any Flux instance (FLUX_URI is not set) submits each call "
            "to the Flux instance the flux command reaches, but none answered `flux getattr "
            "size`: run inside `flux start`, or on a cluster that Flux runs"
        )
    where = "as cluster jobs" if cluster else "outside any Flux job (FLUX_URI is not set)"
    return Backend(
        "flux",
        f"backend='flux' was asked for {where}: each call is submitted as a job with flux submit",
        flux,
        batch=True,
    )


def _flux_answers(flux):
    try:
        return (
            subprocess.run(
                [flux, "getattr", "size"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def allocation_cores(backend):
    """CPUs the backend's allocation holds, or None where it does not say."""
    if backend.name != "slurm":
        return None
    env = os.environ
    if env.get("SLURM_NTASKS"):
        return int(env["SLURM_NTASKS"]) * int(env.get("SLURM_CPUS_PER_TASK", "1"))
    if env.get("SLURM_CPUS_ON_NODE"):
        return int(env["SLURM_CPUS_ON_NODE"])
    return None


def allocation_nodes(backend):
    """The nodes of the Slurm allocation or Flux instance workers start in,
    or None where it does not say (or calls are batch jobs)."""
    if not inside_allocation(backend):
        return None
    if backend.name == "flux":
        found = re.search(r"(\d+) Nodes?\b", _output_of([backend.launcher, "resource", "info"]))
        return int(found.group(1)) if found else None
    nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or ""
    return int(nodes) if nodes.isdigit() else None


def inside_allocation(backend):
    """Whether `backend` starts workers inside the Slurm allocation
    (SLURM_JOB_ID) or Flux instance (FLUX_URI) the client runs in, where
    node agents can start; batch and pilot jobs are outside any."""
    variable = {"slurm": "SLURM_JOB_ID", "flux": "FLUX_URI"}.get(backend.name)
    return variable is not None and not backend.batch and bool(os.environ.get(variable))


def step_cpus(backend):
    """The CPUs of the Slurm allocation srun steps run in and cannot leave,
    where Slurm says it for the whole job (SLURM_NTASKS x SLURM_CPUS_PER_TASK,
    as executorlib reads it); None elsewhere (per node counts would refuse a
    multi-node job's valid requests)."""
    if backend.name != "slurm" or backend.batch or not os.environ.get("SLURM_NTASKS"):
        return None
    return allocation_cores(backend)


def allocation_gpus(backend):
    """GPUs the allocation holds. Slurm: from its environment, else from
    `scontrol show job` (salloc does not export the GPU variables). Flux:
    `flux resource info` ("1 Node, 4 Cores, 2 GPUs")."""
    if backend.name == "flux":
        return _flux_gpus(backend.launcher)
    if backend.name != "slurm":
        return 0
    env = os.environ
    # --gpus=N gives the job's total; the others describe this node only, and
    # Slurm gives every node of a job the same GRES.
    total = env.get("SLURM_GPUS", "").rsplit(":", 1)[-1]
    if total.isdigit():
        return int(total)
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    nodes = int(nodes) if nodes.isdigit() else 1
    per_node = env.get("SLURM_GPUS_ON_NODE", "").rsplit(":", 1)[-1]
    if per_node.isdigit():
        return int(per_node) * nodes
    if env.get("SLURM_JOB_GPUS"):
        return len(env["SLURM_JOB_GPUS"].split(",")) * nodes
    scontrol = shutil.which("scontrol")
    if not scontrol or not env.get("SLURM_JOB_ID"):
        return 0
    shown = _output_of([scontrol, "show", "job", "-o", env["SLURM_JOB_ID"]])
    # AllocTRES/TRES=...,gres/gpu=4 is the job's total; TresPerNode=gres:gpu:2
    # (or gres:gpu:a100:2) counts for each node.
    totals = [int(n) for n in re.findall(r"gres/gpu(?::[\w.-]+)?=(\d+)", shown)]
    if totals:
        return max(totals)
    per_node = [int(n) for n in re.findall(r"gres:gpu(?::[\w.-]+)?:(\d+)", shown)]
    job_nodes = re.search(r"\bNumNodes=(\d+)", shown)
    return max(per_node, default=0) * (int(job_nodes.group(1)) if job_nodes else 1)


def _flux_gpus(flux):
    """GPUs of the Flux instance, from `flux resource info`; 0 where it does not say."""
    shown = _output_of([flux, "resource", "info"])
    found = re.search(r"(\d+) GPUs?\b", shown)
    return int(found.group(1)) if found else 0


def bind_host(backend, hostname_localhost):
    """Loopback when workers run here; otherwise an address they can reach."""
    if backend.name == "local" or hostname_localhost:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "0.0.0.0"


def client_sys_path():
    """This process's sys.path, with '' made absolute, for workers to import
    what the client can."""
    cwd = os.getcwd()
    return [entry or cwd for entry in sys.path]


def program_dirs():
    """Where this environment keeps its programs (pmp-worker, mpiexec from a wheel)."""
    return [sysconfig.get_path("scripts")]


def pool_backend(backend):
    """The backend of a block-allocated pool where `backend` submits batch
    jobs: under Flux, `flux run` workers that connect back are pilots
    already (jobs of the instance that end when the client does); under
    Slurm, the pool's workers are pilot jobs (still `backend.batch`)."""
    if backend.batch and backend.name == "flux":
        return Backend(
            "flux",
            backend.reason.split(": each call")[0]
            + ": block_allocation=True runs the workers as flux run jobs that connect back",
            backend.launcher,
        )
    return backend


def worker_program(tool_dirs):
    """pmp-worker: $PMP_WORKER_PROGRAM, else in `tool_dirs`, else on PATH
    (the scheduler's rule, `_pmp.locate_worker_program`)."""
    return _pmp.locate_worker_program(tool_dirs)


def detect_gpus():
    """Device ids: the parent's CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    listing = _output_of([smi, "-L"])
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def _output_of(command):
    """What a query command (scontrol, flux, nvidia-smi) prints; "" when it
    cannot run or hangs, which callers read as "nothing found"."""
    try:
        return subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def mpi_problem(tool_dirs=None):
    """Why MPI-parallel workers cannot start here, or None. mpiexec is looked
    for as the local backend will (`_pmp.locate_mpiexec`)."""
    try:  # imported here: only whether it imports, and only when MPI is asked for
        import mpi4py  # noqa: F401 - MPI starts in the workers, never in the client
    except ImportError as error:
        return f"mpi4py cannot be imported in this Python environment ({error}); pip install mpi4py"
    if tool_dirs is None:
        tool_dirs = program_dirs()
    try:
        _pmp.locate_mpiexec(tool_dirs)
    except RuntimeError as error:
        return str(error)
    return None


def cancel_by_name(backend, job_name):
    """Cancel this user's jobs named `job_name` (an executor's pilots or
    allocations): scancel beside sbatch, or `flux pkill` (exact name)."""
    if backend.name == "flux":
        _output_of([backend.launcher, "pkill", f"^{re.escape(job_name)}$"])
        return
    scancel = shutil.which("scancel", path=os.path.dirname(backend.launcher)) or "scancel"
    _output_of([scancel, f"--name={job_name}"])
