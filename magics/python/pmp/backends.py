"""Which backend starts the workers, where pmp-worker lives, which GPUs exist."""

import os
import shutil
import subprocess
import sysconfig

BACKENDS = ("auto", "local", "mpi", "slurm", "flux")


def choose_backend(backend):
    """Returns ``(backend, reason)``."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
        )
    if backend == "mpi":
        return "local", "backend='mpi' is the local backend (processes on this machine)"
    if backend == "local":
        return "local", "backend='local' was asked for"
    if backend in ("slurm", "flux"):
        raise ValueError(
            f"backend={backend!r} is not available in this version of pmp; "
            "use backend='local' (processes on this machine)"
        )
    if os.environ.get("FLUX_URI") and shutil.which("flux"):
        return "local", "inside a Flux instance, but the flux backend is not available yet: local"
    if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
        return (
            "local",
            "inside a Slurm allocation, but the slurm backend is not available yet: local",
        )
    return "local", "no Flux instance (FLUX_URI) or Slurm allocation (SLURM_JOB_ID) found"


def worker_program():
    """pmp-worker: $PMP_WORKER_PROGRAM, else next to this Python's scripts, else PATH."""
    explicit = os.environ.get("PMP_WORKER_PROGRAM")
    if explicit:
        return explicit
    beside = os.path.join(sysconfig.get_path("scripts"), "pmp-worker")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("pmp-worker")
    if found:
        return found
    raise RuntimeError(
        f"pmp-worker was not found (looked in {os.path.dirname(beside)} and on PATH); "
        "run install.sh, or set PMP_WORKER_PROGRAM"
    )


def detect_gpus():
    """Device ids: the parent's CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        listing = subprocess.run(
            [smi, "-L"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def mpi_problem():
    """Why MPI-parallel workers cannot start here, or None."""
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed in this Python environment (pip install mpi4py)"
    beside = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
    if not os.access(beside, os.X_OK) and shutil.which("mpiexec") is None:
        return "mpiexec was not found (install an MPI, for example pip install mpich)"
    return None
