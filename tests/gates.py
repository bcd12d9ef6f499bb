"""The worker side of a test Gate (see conftest.Gate): a remote task blocks
here until the test opens the gate. A module of its own, so that workers
import it by reference from the client's sys.path instead of each test file
pickling its own copy."""

import os
import time


def wait_for_file(path, value=None, timeout=30.0):
    """Block until ``path`` exists (a test's Gate), then return ``value``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.01)
    return value
