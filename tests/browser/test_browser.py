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

import shutil
import time

import pytest
from lab_server import ARTIFACTS, ROOT, Driver, assert_screenshot

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
SCRIPT_TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def lab(tmp_path, serve_lab):
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the repository's copy stays untouched
    return serve_lab(root, "quickstart-lab.log")


def test_quickstart_pmp_cell_in_jupyterlab(lab, record_artifact):
    screenshot = ARTIFACTS / "quickstart-lab.png"
    cells = ARTIFACTS / "quickstart-lab-cells.png"
    for path in (screenshot, cells):
        path.unlink(missing_ok=True)
    started = time.monotonic()
    driver = Driver(
        "lab.mjs", [lab.url("/lab/tree/quickstart.ipynb"), screenshot, cells], SCRIPT_TIMEOUT_S
    )
    try:
        returncode = driver.finish()
    finally:
        driver.stop()
    print(driver)
    print(f"browser run: {time.monotonic() - started:.1f} s")
    for path in (screenshot, cells):
        if path.exists():
            record_artifact(path)
    assert returncode == 0, (
        f"lab.mjs failed; screenshot: {screenshot}\n{driver}\n"
        f"jupyter lab's log ({lab.log_path}):\n{lab.log_tail()}"
    )
    assert "passed" in str(driver)
    for path in (screenshot, cells):
        assert_screenshot(path)
