"""What the browser tests share: JupyterLab serving a folder of notebooks
(`Lab`), a node script driving headless Chromium over it (`Driver`), and why
a machine cannot run them (`problem`)."""

import json
import os
import queue
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "target" / "artifacts"
CHROMIUM = os.environ.get("PMP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NODE = shutil.which("node")
NPM = shutil.which("npm")
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
# A driver's line that waits for the test's answer: `step NAME {json}`.
STEP = "step "


def problem():
    """Why this machine cannot run a browser test, or None."""
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


def node_modules():
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


def png_size(path):
    """(width, height) of a PNG file, or None if it is not one."""
    header = path.read_bytes()[:24]
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", header[16:24])


def assert_screenshot(path):
    """`path` is a PNG of a page, not an empty or broken capture."""
    size = png_size(path) if path.exists() else None
    assert size, f"{path} is not a PNG"
    assert size[0] >= 400 and size[1] >= 150, f"{path} is only {size[0]}x{size[1]}"
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"


class Lab:
    """`jupyter lab` serving `root`, isolated from the user's Jupyter settings;
    its kernels get `env` (by default this process's environment)."""

    def __init__(self, tmp_path, root, log_path, env=None):
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
            os.environ if env is None else env,
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

    def kernels(self):
        """The kernel processes this server started."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if "pmp-kernel" in " ".join(child.cmdline()[:1]):
                    found.append(child)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return found

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


class Driver:
    """`node SCRIPT ARGS...` driving Chromium, in its own session so that
    stopping it takes Chromium down too. Its output is read as it comes: a
    line `step NAME {json}` means the page reached a point of the story
    where the test checks or changes the world (Slurm, files) before the
    driver goes on, when `proceed()` answers it on stdin."""

    def __init__(self, script, args, timeout_s):
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.transcript = []
        self.ended = False
        self.process = subprocess.Popen(
            [NODE, str(HERE / script), *map(str, args)],
            cwd=HERE,
            env=dict(os.environ, PMP_CHROMIUM=CHROMIUM),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next_line(self, timeout=None):
        """The driver's next line, None once its output ended; fails past the
        deadline (or `timeout`)."""
        if self.ended:
            return None
        if timeout is None:
            timeout = max(0.0, self.deadline - time.monotonic())
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            pytest.fail(f"the browser driver did not finish within {self.timeout_s} s:\n{self}")
        self.ended = line is None
        return line

    def expect(self, name):
        """Read on to the step `name`; returns its data. Fails if the driver
        ends, or reaches another step, first."""
        while (line := self._next_line()) is not None:
            self.transcript.append(line)
            if line.startswith(STEP):
                reached, _, data = line[len(STEP) :].partition(" ")
                assert reached == name, f"the driver reached step {reached!r}, not {name!r}"
                return json.loads(data or "null")
        self.process.wait()
        pytest.fail(f"the browser driver exited ({self.process.returncode}) before {name!r}")

    def proceed(self, **data):
        """Let the driver go on from its step, telling it `data`."""
        self.process.stdin.write(json.dumps(data) + "\n")
        self.process.stdin.flush()

    def finish(self):
        """Read the driver's output to its end; returns its exit status."""
        while (line := self._next_line()) is not None:
            self.transcript.append(line)
        return self.process.wait()

    def run_story(self, story, lab):
        """Run `story()` (the test's side of the steps) and read the driver to
        its end; returns its exit status. On a failure the driver takes its
        screenshot, and its transcript and the lab's log are printed."""
        started = time.monotonic()
        try:
            story()
            returncode = self.finish()
        except BaseException:
            self.stop()  # its screenshot of the failure
            print(self)
            print(f"jupyter lab's log ({lab.log_path}):\n{lab.log_tail()}")
            raise
        print(self)
        print(f"browser run: {time.monotonic() - started:.1f} s")
        return returncode

    def stop(self):
        """Ask a driver still waiting at a step to take its failure screenshot
        and exit; kill it if it does not."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write("stop\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        while (line := self._next_line(timeout=STOP_TIMEOUT_S)) is not None:
            self.transcript.append(line)

    def kill(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def __str__(self):
        return "\n".join(self.transcript)
