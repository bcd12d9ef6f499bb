"""The worker side of the child-process tests: a task starts a plain child,
one in a session of its own and a double-forked daemon, each of which writes
its pid to a file and sleeps long. A module of its own, so that workers import
it by reference (also from a client script, and from the MPI tests)."""

import os
import subprocess
import time

import psutil

# Generous: a worker that ends reaps what it ended in well under a second.
GONE_TIMEOUT = 30

SLEEPER = """
import os, sys, time
with open(sys.argv[1] + ".part", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".part", sys.argv[1])
time.sleep(600)
"""

# fork, setsid, fork: the daemon's parent exits at once, so it is nobody's
# child but its adopter's, in a session and group of its own.
DAEMON = """
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
exec(sys.argv[2])
"""


def start_three(python, directory):
    """Start a plain child, one in a new session and a double-forked daemon;
    return their pids once each has written it."""
    paths = {kind: os.path.join(directory, kind) for kind in ("plain", "session", "daemon")}
    subprocess.Popen([python, "-c", SLEEPER, paths["plain"]])
    subprocess.Popen([python, "-c", SLEEPER, paths["session"]], start_new_session=True)
    subprocess.run([python, "-c", DAEMON, paths["daemon"], SLEEPER], check=True)
    deadline = time.monotonic() + 30
    while not all(os.path.exists(p) for p in paths.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all of {paths} were written")
        time.sleep(0.02)
    return {kind: int(open(path).read()) for kind, path in paths.items()}


def running(pid):
    """True while `pid` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_end(pids, wait_until, when):
    wait_until(
        lambda: not any(running(pid) for pid in pids.values()),
        timeout=GONE_TIMEOUT,
        message=f"still running {when}: "
        + ", ".join(f"{kind} {pid}" for kind, pid in pids.items() if running(pid)),
    )
