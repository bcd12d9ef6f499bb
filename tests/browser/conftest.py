"""Fixtures of the browser tests: JupyterLab serving a folder (`serve_lab`)
and the artifacts (screenshots, JupyterLab's log) listed at the end of the
pytest run, so CI logs say where to find them."""

import pytest
from lab_server import ARTIFACTS, Lab, node_modules, problem

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


@pytest.fixture
def serve_lab(tmp_path, record_artifact):
    """`serve_lab(root, log_name, env=None)`: a ready JupyterLab serving the
    folder `root`, its log in target/artifacts/; skips where the machine
    cannot run a browser test. Every server is shut down at the end, and
    none may leave a process behind."""
    reason = problem()
    if reason:
        pytest.skip(reason)
    node_modules()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    servers = []

    def serve(root, log_name, env=None):
        server = Lab(tmp_path, root, ARTIFACTS / log_name, env)
        servers.append(server)
        record_artifact(server.log_path)
        server.wait_ready()
        return server

    yield serve
    left = [process for server in servers for process in server.stop()]
    assert not left, f"processes of jupyter lab left after its shutdown: {left}"
