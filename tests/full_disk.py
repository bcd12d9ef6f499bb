"""A full disk for tests of what pmp does when a result cannot be stored:
a small tmpfs, which a 1 MiB result does not fit on (mounting one needs
root, as CI runs; elsewhere the test skips, saying so)."""

import subprocess

import pytest


def mount_small_tmpfs(path):
    """Make `path` a directory and mount a 256 KiB tmpfs (0700) on it; the
    test unmounts it (`umount path`) when done."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a full disk here is a small tmpfs, which needs root: {mounted.stderr}")
