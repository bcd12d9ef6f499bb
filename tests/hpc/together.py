"""Script text that calls which must run at the same time share (agents,
pilots, Flux agents): `gather(me, n)` returns only once all `n` calls have
arrived (a gate file each), wherever they run, so n calls that all return
ran at once. Each test file's `where` says what it reports from there."""

GATHER = """
import os, pathlib, subprocess, time
from pmp import Executor

def gather(me, n):
    pathlib.Path(f"here-{me}").touch()
    deadline = time.time() + 60
    while len(list(pathlib.Path(".").glob("here-*"))) < n:
        if time.time() > deadline:
            raise TimeoutError("the others never ran at the same time")
        time.sleep(0.05)
"""
