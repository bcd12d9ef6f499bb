"""The browser test's artifacts (screenshots, JupyterLab's log) are listed at
the end of the pytest run, so CI logs say where to find them."""

import pytest

_ARTIFACTS = pytest.StashKey[list]()


@pytest.fixture
def record_artifact(request):
    """Call with a path to list it in the run's summary."""
    return request.config.stash.setdefault(_ARTIFACTS, []).append


def pytest_terminal_summary(terminalreporter, config):
    paths = config.stash.get(_ARTIFACTS, [])
    if paths:
        terminalreporter.write_sep("-", "browser test artifacts")
        for path in paths:
            terminalreporter.write_line(str(path))
