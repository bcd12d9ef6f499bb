"""The kernels the magics' tests drive (see kernel_session.py): a plain pmp
kernel, and two as on a login node, beside a real Slurm but outside any
allocation."""

import os
import shutil
import subprocess

import pytest
from kernel_session import Session, kernel_available


@pytest.fixture
def pmp_kernel():
    if not kernel_available("pmp"):
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    session = Session("pmp")
    yield session
    session.close()


@pytest.fixture
def login_node_kernel(tmp_path):
    """A pmp kernel as on a login node: Slurm's commands work, but no
    allocation (no SLURM_* variable) surrounds it."""
    if not kernel_available("pmp"):
        pytest.skip("the pmp kernelspec is not registered (./install.sh)")
    if not shutil.which("sinfo"):
        pytest.skip("Slurm is not installed (CI starts one with shared/ci/slurm-up.sh)")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    session = Session("pmp", env=environment, cwd=str(tmp_path))
    yield session
    session.close()


@pytest.fixture
def kernel_outside_slurm(monkeypatch):
    """A kernel as on a login node, with Slurm running: Slurm's commands, no allocation."""
    if shutil.which("sbatch") is None:
        pytest.skip("no Slurm here (sbatch is not on PATH)")
    if subprocess.run(["sinfo"], capture_output=True, check=False).returncode != 0:
        pytest.skip("Slurm is installed but not running (see .ci/slurm-up.sh)")
    for key in [key for key in os.environ if key.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    session = Session("pmp")
    yield session
    session.close()
