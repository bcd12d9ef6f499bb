"""Shared fixtures for pmp's end-to-end tests.

Every test talks to real worker processes. Functions that run remotely live in
the test modules themselves (workers import them by name, as they would a
user's module); this file holds only what runs in the pytest process.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from second_user import OTHER_USER

HERE = pathlib.Path(__file__).parent
# A test that hangs is a failure, not a stuck CI job. Tests may set their own.
DEFAULT_TIMEOUT_S = 120
# How long a finished Executor may take to reap its workers.
REAP_GRACE_S = 10.0


# Where the Executor tests are: next to this file, and tests/compat (the
# same Executor through its peers' APIs). Kernel, magics, HPC, browser and
# unit tests have their own rules.
EXECUTOR_TESTS = (HERE, HERE / "compat")


def _is_executor_test(item):
    """An Executor test (see EXECUTOR_TESTS)."""
    return pathlib.Path(str(item.fspath)).parent in EXECUTOR_TESTS


def pytest_collection_modifyitems(items):
    for item in items:
        if _is_executor_test(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


def wait_until(predicate, timeout=10.0, interval=0.02, message=None):
    """Poll ``predicate`` until it returns something truthy and return that;
    fail the test if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message or f"condition not met within {timeout} s: {predicate!r}")
        time.sleep(interval)


def is_worker_process(process):
    """A pmp-worker process (also while it is an unreaped zombie)."""
    try:
        if process.name() == "pmp-worker":
            return True
        return any(os.path.basename(part) == "pmp-worker" for part in process.cmdline()[:1])
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


def worker_descendants():
    """pmp-worker processes below this one, zombies included."""
    found = []
    for child in psutil.Process().children(recursive=True):
        if is_worker_process(child):
            found.append(child)
    return found


def process_gone(pid):
    """True when ``pid`` no longer runs (an unreaped zombie counts as gone
    only if its parent is not us: orphans may wait for a lazy init)."""
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE and process.ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="session")
def other_user():
    """(uid, gid) of a second local user, for tests that play an attacker
    who shares the machine; created if missing (needs root, as CI runs)."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root, to act as a second user (CI runs as root)")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
            timeout=60,
        )
        entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def as_other(other_user):
    """Start (`popen=True`) or run a command as the second user."""
    uid, gid = other_user

    def run(*command, cwd=None, popen=False, **options):
        options = {"user": uid, "group": gid, "extra_groups": [], "cwd": cwd, **options}
        if popen:
            return subprocess.Popen(command, **options)
        timeout = options.pop("timeout", 60)
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, **options
        )
        assert done.returncode == 0, f"{command} as {OTHER_USER}: {done.stderr}"
        return done

    return run


@pytest.fixture(scope="session")
def other_users_python(other_user):
    """A Python the second user can run: the system's (this one may live
    in a home directory only its owner can enter)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no system python3 for the second user to run")


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    return wait_until


@pytest.fixture(name="worker_descendants")
def worker_descendants_fixture():
    return worker_descendants


@pytest.fixture(name="process_gone")
def process_gone_fixture():
    return process_gone


@pytest.fixture(autouse=True)
def no_leftover_workers(request):
    """After every test, no pmp-worker process of ours may be left (after a
    short grace for reaping)."""
    if not _is_executor_test(request.node):
        yield
        return
    before = {p.pid for p in worker_descendants()}
    yield
    deadline = time.monotonic() + REAP_GRACE_S
    left = []
    while time.monotonic() < deadline:
        left = [p for p in worker_descendants() if p.pid not in before]
        if not left:
            return
        time.sleep(0.05)
    described = []
    for process in left:
        try:
            described.append(f"pid {process.pid} ({process.status()})")
        except psutil.NoSuchProcess:
            continue
    if described:
        pytest.fail(f"pmp-worker processes left {REAP_GRACE_S} s after the test: {described}")


@pytest.fixture(params=[False, True], ids=["fresh-worker", "block-allocation"])
def block_allocation(request):
    """Runs a test once with a fresh worker per call and once with a pool."""
    return request.param


class Gate:
    """A file that a remote task waits for (see ``gates.wait_for_file``),
    so a test decides when a task may finish without timing anything."""

    def __init__(self, directory, name):
        self.path = str(directory / f"gate-{name}")

    def open(self):
        with open(self.path, "w"):
            pass


@pytest.fixture
def make_gate(tmp_path):
    gates = []

    def make(name="gate"):
        gate = Gate(tmp_path, name)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:  # release any task still waiting, whatever the test did
        gate.open()


@pytest.fixture
def write_script(tmp_path):
    """Write a dedented Python script into tmp_path and return its path."""

    def write(source, name="script.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip())
        return path

    return write


@pytest.fixture
def run_script(write_script, tmp_path):
    """Run a script with this interpreter as ``python script.py`` (its
    functions live in ``__main__``); returns the CompletedProcess."""

    def run(source, timeout=120, name="script.py"):
        path = write_script(source, name)
        return subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def start_script(write_script, tmp_path):
    """Start a script in the background; killed at teardown if still alive."""
    started = []

    def start(source, name="script.py"):
        path = write_script(source, name)
        process = subprocess.Popen(
            [sys.executable, str(path)],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
