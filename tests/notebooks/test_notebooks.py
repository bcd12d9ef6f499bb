"""Every notebook in notebooks/ executed top to bottom through pmp-kernel, as
notebooks/run.py (and so the main job) runs them.

The notebooks assert their own results, so a wrong answer is a cell error.
Here we also check what they leave behind: each code cell ran, each `%%pmp` /
`%pmp submit` status display reached "done", no stray output on stderr, no
pmp-worker process outlives the kernel, and the Slurm notebook ran on Slurm
exactly where Slurm is usable (and said why not elsewhere).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from pmp.client.backends import mpi_problem

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Each notebook as it is, and two variants that take the other branch of a
# notebook whatever this machine has: the GPU notebook as if a job scheduler
# had granted two GPUs (CUDA_VISIBLE_DEVICES=0,1), and the Slurm notebook with
# a controller that does not answer (a failing sinfo first on PATH).
CASES = [pytest.param(p, None, id=p.stem) for p in NOTEBOOKS] + [
    pytest.param(ROOT / "notebooks" / "gpu.ipynb", "two-gpus", id="gpu-two-granted"),
    pytest.param(ROOT / "notebooks" / "slurm.ipynb", "slurm-down", id="slurm-unreachable"),
]
FAILING_SINFO = """#!/bin/sh
echo "slurm_load_partitions: Unable to contact slurm controller (connect failure)" >&2
exit 1
"""
sys.path.insert(0, str(ROOT / "notebooks"))
from run import run  # notebooks/run.py, the runner of the main job

# Lines each executed notebook must print (beyond its own asserts).
EXPECTED_STDOUT = {
    "quickstart": ["[3, 4, 5, 6]", "caught: bad input", "42 True"],
    "compatibility": ["[3, 4, 5, 6]", "2 on the local backend"],
    "resource-assignment": ["results: [1, 2, 3, 4, 5, 6, 7, 8]", "threads_per_core=2:"],
    "data-handling": ["10", "ValueError: init_function needs block_allocation=True"],
    "mpi": ["[(3, 2, 0), (3, 2, 1)]", "(raised on MPI rank 1 of 2)"],
    "gpu": ["workers' devices: ['0', '1']", "GPU(s) requested but"],
    "coupled-functions": ["4", "squares + cubes: 2310", "DependencyCancelledError"],
    "login-node": ["from the store: 20736", "total: 45"],
}
# How long pmp-worker processes may outlive the kernel that started them.
REAP_GRACE_S = 10.0


def _kernel_problem():
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("pmp")
    except NoSuchKernel:
        return "no 'pmp' kernelspec: run ./install.sh"
    if not os.access(spec.argv[0], os.X_OK):
        return f"the pmp kernelspec runs {spec.argv[0]}, which does not exist: run ./install.sh"
    return None


def _slurm_usable():
    """Whether the Slurm notebook must run on Slurm: its commands exist and
    the controller reports a usable node (the notebook's own test)."""
    if not all(shutil.which(t) for t in ("srun", "salloc", "sinfo", "scancel")):
        return False
    try:
        sinfo = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return sinfo.returncode == 0 and bool(
        re.search(r"idle|mixed|allocated|completing", sinfo.stdout)
    )


def _workers_marked(token):
    """pmp-worker processes (anywhere) whose environment carries `token`."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] != "pmp-worker":
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("PMP_NOTEBOOK_TEST") == token:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _text(value):
    return value if isinstance(value, str) else "".join(value)


def _outputs(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            yield from cell.outputs


@pytest.fixture(autouse=True, scope="module")
def kernel():
    problem = _kernel_problem()
    if problem:
        pytest.skip(problem)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("path", "variant"), CASES)
def test_notebook(path, variant, monkeypatch, tmp_path):
    stem = path.stem
    if stem == "mpi" and mpi_problem():
        pytest.skip(mpi_problem())
    if variant == "two-gpus":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    if variant == "slurm-down":
        (tmp_path / "sinfo").write_text(FAILING_SINFO)
        (tmp_path / "sinfo").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    slurm_expected = stem == "slurm" and _slurm_usable()
    # Inherited by the kernel and by every worker it starts (also through
    # srun --export=ALL), so leftovers can be found wherever they run.
    token = uuid.uuid4().hex
    monkeypatch.setenv("PMP_NOTEBOOK_TEST", token)

    source = nbformat.read(path, as_version=4)
    # Committed clean: no outputs, no execution counts.
    for cell in source.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: not cleared"
    try:
        executed = nbformat.read(run(path, kernel_name="pmp", timeout=120), as_version=4)
    finally:
        if stem == "slurm" and shutil.which("scancel"):
            # The notebook releases its allocation; this is for a run that failed.
            subprocess.run(["scancel", "--name=pmp-notebook"], capture_output=True, check=False)

    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), "a cell did not run"
    nbformat.validate(executed)

    stdout = "".join(_text(o["text"]) for o in _outputs(executed) if o.get("name") == "stdout")
    stderr = "".join(_text(o["text"]) for o in _outputs(executed) if o.get("name") == "stderr")
    assert stderr == "", f"{path.name} wrote to stderr:\n{stderr}"
    for expected in EXPECTED_STDOUT.get(stem, []):
        assert expected in stdout, f"{path.name}: {expected!r} not in its output:\n{stdout}"

    # Every task submitted with %%pmp / %pmp submit shows as done.
    magic_cells = [c for c in code_cells if re.match(r"%%?pmp submit", c.source)]
    statuses = [
        _text(o["data"]["text/html"])
        for c in magic_cells
        for o in c.outputs
        if o.get("output_type") == "display_data" and "pmp-status" in _text(o["data"]["text/html"])
    ]
    assert len(statuses) == len(magic_cells), f"{path.name}: a %pmp submit cell shows no status"
    for status in statuses:
        assert 'data-state="done"' in status, f"{path.name}: status display not done: {status}"

    if variant == "two-gpus":
        assert "pmp sees 2 GPU(s) here" in stdout
        assert "3 GPU(s) requested but 2 detected" in stdout
        assert re.search(r"device [01]: .* on ", stdout), stdout

    if stem == "slurm":
        if slurm_expected:
            assert re.search(r"Slurm granted job \d+|inside Slurm job \d+", stdout), stdout
            assert "No Slurm here" not in stdout
            for expected in ("ran in job", "slurm - inside Slurm allocation", "my-analysis"):
                assert expected in stdout, f"slurm.ipynb: {expected!r} not in:\n{stdout}"
        else:
            assert "No Slurm here:" in stdout, stdout
            assert "ran in job" not in stdout
        if variant == "slurm-down":
            assert "Slurm's controller is not reachable: slurm_load_partitions" in stdout, stdout

    if stem == "login-node":
        # Outside any allocation (as the tests run), Slurm's batch jobs where usable.
        if _slurm_usable():
            assert "Slurm is reachable" in stdout, stdout
            assert re.search(r"first in job \d+ second in job \d+ where\(\): \d+", stdout), stdout
        else:
            assert "No Slurm here:" in stdout, stdout

    # The kernel is gone; so must be every worker it started.
    deadline = time.monotonic() + REAP_GRACE_S
    while _workers_marked(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers_marked(token) == [], f"pmp-worker processes outlived {path.name}'s kernel"
