"""JupyterLab in headless Chromium: the quickstart notebook runs in the pmp
kernel and its `%%pmp submit` cell's status display ends at done with the
result. `lab.mjs` (playwright-core) drives the browser; this file serves a
copy of the notebook with JupyterLab, runs the script, and stops everything.

Artifacts: target/artifacts/quickstart-lab.png (the page at the end, also on
failure), quickstart-lab-cells.png (the %%pmp cells; the README's picture is
a copy of it) and quickstart-lab.log (JupyterLab's output).

What the screenshots show (looked at for issue 22, not committed): under the
%%pmp cell, a box with a green stripe on its left; on its first line the
name `answer` in bold, a green `done` badge, the clock `1.0 s` and, greyed,
`on HOST, pid N (worker 0)`; then `result: (42, N)`, and an open fold
`output, 1 line` with `working in process N`. The map cell's progress
display is one line: `map calc`, a green `all done` badge, a full green bar,
`4/4 done` and its clock, and under it the legend (a coloured square per
state with its count). A failed task's box is striped red, its error the
title of a closed fold that holds the traceback; a running one is blue and
shows the last 12 lines it printed. Compared with dask's progress bar (one
bar per function, coloured by state, counts beside it) and ipyparallel's
(a tqdm bar with a rate): pmp's group display takes dask's coloured segments
and counts, adds the legend, a clock and the failures with their errors, and
needs no ipywidgets (plain HTML, redrawn by display updates); `text/plain`
keeps one line per display for nbconvert and terminals."""

import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
ARTIFACTS = ROOT / "target" / "artifacts"
CHROMIUM = os.environ.get("PMP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NODE = shutil.which("node")
NPM = shutil.which("npm")
START_TIMEOUT_S = 90
SCRIPT_TIMEOUT_S = 240
STOP_TIMEOUT_S = 30

pytestmark = pytest.mark.timeout(420)


def _problem():
    """Why this machine cannot run the test, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PMP_CHROMIUM)"
    if NODE is None:
        return "no node on PATH (the browser is driven by playwright-core)"
    if not (HERE / "node_modules" / "playwright-core").is_dir() and NPM is None:
        return "tests/browser/node_modules is missing and there is no npm to install it"
    try:
        import jupyterlab  # noqa: F401
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return "jupyterlab is not installed (pip install -r tests/requirements.txt)"
    try:
        spec = KernelSpecManager().get_kernel_spec("pmp")
    except NoSuchKernel:
        return "no 'pmp' kernelspec (./install.sh registers it)"
    if not os.access(spec.argv[0], os.X_OK):
        return f"the pmp kernelspec runs {spec.argv[0]}, which does not exist (./install.sh)"
    return None


def _node_modules():
    if (HERE / "node_modules" / "playwright-core").is_dir():
        return
    result = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in {HERE} failed:\n{result.stdout}\n{result.stderr}")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png_size(path):
    """(width, height) of a PNG file, or None if it is not one."""
    header = path.read_bytes()[:24]
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", header[16:24])


class Lab:
    """`jupyter lab` serving `root`, isolated from the user's Jupyter settings."""

    def __init__(self, tmp_path, root, log_path):
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = tmp_path / "lab-settings"
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        # No "Would you like to get notified about Jupyter news?" toast.
        (notification / "notification.jupyterlab-settings").write_text(
            '{"fetchNews": "false", "checkForUpdates": false}'
        )
        env = dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
            JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        )
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def url(self, path):
        return f"{self.base}{path}?token={self.token}"

    def log_tail(self, lines=40):
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("/api/status"), timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        pytest.fail(f"jupyter lab not ready within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self):
        """Shut the server down (it shuts its kernels down first); returns the
        descriptions of any of its processes still alive afterwards (killed)."""
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.process.poll() is None:
            request = urllib.request.Request(self.url("/api/shutdown"), method="POST")
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except (urllib.error.URLError, OSError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self.log.close()
        _, alive = psutil.wait_procs(descendants, timeout=10)
        left = []
        for process in alive:
            try:
                left.append(f"pid {process.pid} ({process.name()}: {process.status()})")
                process.kill()
            except psutil.NoSuchProcess:
                continue
        return left


@pytest.fixture
def lab(tmp_path, record_artifact):
    problem = _problem()
    if problem:
        pytest.skip(problem)
    _node_modules()
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the repository's copy stays untouched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = Lab(tmp_path, root, ARTIFACTS / "quickstart-lab.log")
    record_artifact(server.log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        left = server.stop()
    assert not left, f"processes of jupyter lab left after its shutdown: {left}"


def test_quickstart_pmp_cell_in_jupyterlab(lab, record_artifact):
    screenshot = ARTIFACTS / "quickstart-lab.png"
    cells = ARTIFACTS / "quickstart-lab-cells.png"
    for path in (screenshot, cells):
        path.unlink(missing_ok=True)
    started = time.monotonic()
    with subprocess.Popen(
        [NODE, str(HERE / "lab.mjs"), lab.url("/lab/tree/quickstart.ipynb"), screenshot, cells],
        cwd=HERE,
        env=dict(os.environ, PMP_CHROMIUM=CHROMIUM),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a timeout takes Chromium down too
    ) as driver:
        try:
            output, _ = driver.communicate(timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            output, _ = driver.communicate()
            output += f"\n(lab.mjs killed after {SCRIPT_TIMEOUT_S} s)"
    print(output)
    print(f"browser run: {time.monotonic() - started:.1f} s")
    for path in (screenshot, cells):
        if path.exists():
            record_artifact(path)
    assert driver.returncode == 0, (
        f"lab.mjs failed; screenshot: {screenshot}\n{output}\n"
        f"jupyter lab's log ({lab.log_path}):\n{lab.log_tail()}"
    )
    assert "passed" in output
    for path in (screenshot, cells):
        size = _png_size(path) if path.exists() else None
        assert size, f"{path} is not a PNG"
        assert size[0] >= 400 and size[1] >= 150, f"{path} is only {size[0]}x{size[1]}"
        assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
