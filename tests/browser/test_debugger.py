"""JupyterLab's debugger on the pmp kernel (issue 26), in headless Chromium:
the bug icon in the notebook's toolbar is enabled (JupyterLab greys it out
for a kernel that does not offer the debugger), switching it on opens the
debugger's sidebar, a click in the gutter of a cell that defines and calls a
function sets a breakpoint in the function, and running the cell stops
there: the call stack's top frame is the function's, at the breakpoint's
line, and the variables panel lists the function's locals. Continue lets
the cell finish with its result. `debugger.mjs` drives the page; at its
steps this file checks what the page showed.

Artifacts, in target/artifacts/ (listed at the end of the run):
- debugger-lab-stopped.png: the 1280x1000 page while the cell is stopped
  (looked at for issue 26): the cell, its prompt [*], a red breakpoint dot
  in the gutter of `return size` and that line highlighted; "Paused in
  Debugger" over the notebook's toolbar; on the right the debugger's
  sidebar: the variables panel on Locals (`height: 7`, `size: 42`,
  `width: 6`), the call stack (`area` at `Cell [*]:3` selected, under it
  `<module>` at `Cell [*]:5`), the breakpoint (`Cell [ ]`, line 3) and the
  kernel's sources.
- debugger-lab-failed.png, only on failure: the page as it was.
- debugger-lab.log: JupyterLab's output.

The kernel's side of the protocol (each DAP request, stepping, evaluate,
rich variables) is tested in tests/kernel/test_kernel_debugger.py; this test
is what a user sees in JupyterLab."""

import json
import re

import pytest
from lab_server import ARTIFACTS, Driver, assert_screenshot

SCREENSHOT = ARTIFACTS / "debugger-lab-stopped.png"
FAILED = ARTIFACTS / "debugger-lab-failed.png"
SCRIPT_TIMEOUT_S = 240

# The driver sets its breakpoint on line 3 (`return size`): by then the
# function's locals are all bound.
CELL = """def area(width, height):
    size = width * height
    return size

area(6, 7)"""

pytestmark = pytest.mark.timeout(SCRIPT_TIMEOUT_S + 120)
pytest.importorskip("debugpy", reason="the debugger needs debugpy in the kernel's environment")


def _notebook(path):
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "id": "area",
                        "metadata": {},
                        "source": CELL,
                        "execution_count": None,
                        "outputs": [],
                    }
                ],
                "metadata": {
                    "kernelspec": {"name": "pmp", "display_name": "Python 3 (pmp)"},
                    "language_info": {"name": "python"},
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            },
            indent=1,
        )
    )


@pytest.fixture
def lab(tmp_path, serve_lab, record_artifact):
    root = tmp_path / "notebooks"
    root.mkdir()
    _notebook(root / "debugger.ipynb")
    for path in (SCREENSHOT, FAILED):
        path.unlink(missing_ok=True)
    yield serve_lab(root, "debugger-lab.log")
    for path in (SCREENSHOT, FAILED):
        if path.exists():
            record_artifact(path)


def _story(driver):
    stopped = driver.expect("stopped")
    # The breakpoint is the one set by the click, in the cell (named as
    # JupyterLab names a cell's file, not by the file's path), line 3.
    assert len(stopped["breakpoints"]) == 1, stopped
    assert re.fullmatch(r"Cell \[[ *]\]\s+3", stopped["breakpoints"][0]), stopped
    # The call stack: the function's frame at the breakpoint's line, in the
    # running cell, and under it the cell's own frame at the call.
    assert stopped["frames"] == [
        {"name": "area", "location": "Cell [*]:3"},
        {"name": "<module>", "location": "Cell [*]:5"},
    ], stopped["frames"]
    # The variables panel lists the function's locals with their values.
    local = {row["name"]: row["value"] for row in stopped["locals"]}
    assert {"width": "6", "height": "7", "size": "42"}.items() <= local.items(), stopped
    assert stopped["prompt"] == "[*]:", stopped  # the cell has not finished
    driver.proceed()

    finished = driver.expect("finished")
    assert finished["output"] == "42", finished
    assert finished["frames"] == [], finished  # nothing is stopped any more
    driver.proceed()


def test_a_breakpoint_stops_the_cell_in_jupyterlabs_debugger(lab):
    driver = Driver(
        "debugger.mjs", [lab.url("/lab/tree/debugger.ipynb"), SCREENSHOT, FAILED], SCRIPT_TIMEOUT_S
    )
    returncode = driver.run_story(lambda: _story(driver), lab)
    assert returncode == 0, f"debugger.mjs failed:\n{driver}\n{lab.log_tail()}"
    assert_screenshot(SCREENSHOT)
