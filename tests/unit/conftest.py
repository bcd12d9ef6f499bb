"""Unit tests of the Python client's own logic: no workers, no Slurm, no
kernel; each runs in well under a second. Native parts that are cheap (the
Rust store in tmp_path, `pmp._pmp`'s checks) are the real ones."""

import pathlib

import pytest

HERE = pathlib.Path(__file__).parent
# A unit test that takes this long is hanging, not slow.
UNIT_TIMEOUT_S = 10


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in pathlib.Path(str(item.fspath)).parents and not item.get_closest_marker(
            "timeout"
        ):
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
