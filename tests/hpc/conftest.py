"""Fixtures for MPI and Slurm tests: real mpiexec, a real two-node Slurm (node1, node2 on loopback).

CI starts Slurm with shared/ci/slurm-up.sh and installs mpi4py + the mpich
wheel; elsewhere these tests skip and say why.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from pmp.client.backends import mpi_problem


def _slurm_missing():
    if not shutil.which("salloc") or not shutil.which("sinfo"):
        return "Slurm is not installed (CI starts one with shared/ci/slurm-up.sh)"
    return None


def _slurm_node_state():
    state = subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30, check=False
    )
    return state.stdout.strip() or state.stderr.strip()


@pytest.fixture
def mpi():
    reason = mpi_problem()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def slurm(mpi):
    reason = _slurm_missing()
    if reason:
        pytest.skip(reason)
    # Installed but unusable is a failure, not a skip: CI must not go green
    # without having run these. (A node still completing a job is fine:
    # salloc waits for it.)
    state = _slurm_node_state()
    if not any(ok in state for ok in ("idle", "mix", "alloc", "comp")):
        pytest.fail(f"the Slurm node is not usable: sinfo says {state!r}")


@pytest.fixture
def run_script(tmp_path):
    """Run a Python script as users do (`python script.py`), optionally under
    a launcher such as `salloc -n 4`; returns the CompletedProcess."""

    def run(source, launcher=(), timeout=240, env=None):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source))
        return subprocess.run(
            [*launcher, sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
            check=False,
        )

    return run
