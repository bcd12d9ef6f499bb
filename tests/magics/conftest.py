"""The kernels the magics' tests drive (see kernel_session.py): a pmp
kernel, ipykernel's (where pmp is only imported or loaded with
`%load_ext pmp`), either as a test's `kernel_name` says, and two pmp kernels
as on a login node, beside a real Slurm but outside any allocation."""

import os
import shutil
import subprocess

import pytest
from kernel_session import Session, kernel_available


def _started(name, missing):
    """A Session of the kernelspec `name`; the test skips, saying `missing`, without it."""
    if not kernel_available(name):
        pytest.skip(missing)
    return Session(name)


@pytest.fixture
def pmp_kernel():
    session = _started("pmp", "the pmp kernelspec is not registered (./install.sh)")
    yield session
    session.close()


@pytest.fixture
def ipykernel():
    session = _started("python3", "ipykernel's python3 kernelspec is not registered")
    yield session
    session.close()


@pytest.fixture
def kernel(kernel_name):
    """The kernel the test is parametrized with (`kernel_name`: "pmp" or "python3")."""
    session = _started(kernel_name, f"the {kernel_name} kernelspec is not registered")
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
