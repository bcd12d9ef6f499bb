"""A task store holds pickles, i.e. code: pmp uses one only if it is its
user's alone. Each test plays the attacker as a real second Unix user (made
by the `other_user` fixture; CI runs as root), who prepares a store, a
directory or a link where the victim (this process) will look, and checks
that pmp refuses it whole, naming what to fix, and unpickles nothing.

The planted entries are real ones, signed with the planted store's own key:
the control at the end of the first test shows that the same files, owned by
the victim, are unpickled, so the refusal is what stands between them.
"""

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from second_user import OTHER_USER
from unpickle_traps import OpenOnUnpickle


@pytest.fixture
def public_dir():
    """A directory anyone may create files in, like /tmp (mode 1777)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="pmp-public-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_store_with_exploit(root, marker):
    """A real store at `root` whose one entry creates `marker` when loaded."""
    from pmp import _pmp
    from pmp.client import serialize

    store = _pmp.Store(str(root))
    frames = serialize.dumps_value(OpenOnUnpickle(str(marker)))
    store.write("planted", "f", "done", frames, 0.0, 0.0, 0.0, "host", 1)
    return root


def readable_by_all(root):
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def private_again(root):
    for path in [root, *root.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)


def refused(call, *needles):
    with pytest.raises(PermissionError) as caught:
        call()
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_a_store_another_user_made_first_is_refused_and_nothing_is_unpickled(
    other_user, public_dir, as_other, tmp_path
):
    import pmp
    from pmp import Executor

    marker = tmp_path / "pwned"
    staging = make_store_with_exploit(public_dir / "staging", marker)
    readable_by_all(staging)
    # The attacker's own copy, key and signed entries included, made private
    # to them as a careful attacker would, under the name the victim uses.
    as_other("cp", "-r", "staging", "shared-cache", cwd=public_dir)
    as_other("chmod", "-R", "go-rwx", "shared-cache", cwd=public_dir)
    planted = public_dir / "shared-cache"
    assert planted.stat().st_uid == other_user[0]

    owner = f"owned by user {OTHER_USER} (uid {other_user[0]}), not by you"
    refused(lambda: pmp.get_cache_data(str(planted)), owner, "yours alone")
    refused(lambda: Executor(max_cores=1, cache_directory=str(planted)), owner)
    with Executor(max_cores=1) as exe:
        per_call = {"cache_directory": str(planted)}
        refused(lambda: exe.submit(sum, [1, 2], resource_dict=per_call), owner)
    assert not marker.exists(), "a planted entry was unpickled"
    # Nothing was written into the planted store either.
    assert sorted(p.name for p in planted.iterdir()) == sorted(p.name for p in staging.iterdir())

    # Control: the very same files, the victim's own, are trusted (and run).
    private_again(staging)
    pmp.get_cache_data(str(staging))
    assert marker.exists(), "the exploit is inert: this test proves nothing"


def test_a_store_directory_others_can_write_to_is_refused(other_user, public_dir, as_other):
    from pmp import Executor

    # The victim's own directory, but world-writable: the attacker can put
    # anything in it, so it counts as theirs.
    open_dir = public_dir / "cache"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    as_other("mkdir", "entries", cwd=open_dir)
    refused(
        lambda: Executor(max_cores=1, cache_directory=str(open_dir)),
        "can be written by its group or others (mode 0777)",
        f"chmod go-w {open_dir}",
    )
    assert not (open_dir / "key").exists(), "pmp made its key in a directory others can write"
    # Once fixed as told, the attacker's entries/ is what is refused.
    open_dir.chmod(0o700)
    refused(
        lambda: Executor(max_cores=1, cache_directory=str(open_dir)),
        f"{open_dir / 'entries'} is owned by user {OTHER_USER}",
    )


def test_a_logs_directory_planted_with_a_link_is_refused(other_user, public_dir, as_other):
    from pmp import _pmp
    from pmp.client import store

    # A store of the victim's from before pmp made logs/ with the store, left
    # open to others for a while: the attacker makes logs/ and a log that is a
    # link to a file of the victim's, for the job system to write through.
    victim_file = public_dir / "victim-file"
    victim_file.write_text("precious\n")
    root = public_dir / "store"
    _pmp.Store(str(root))
    (root / "logs").rmdir()
    root.chmod(0o777)
    as_other("mkdir", "logs", cwd=root)
    as_other("ln", "-s", str(victim_file), "logs/k.out", cwd=root)
    root.chmod(0o700)
    refused(
        lambda: store.open_store(str(root)),
        f"{root / 'logs'} is owned by user {OTHER_USER}",
    )
    assert victim_file.read_text() == "precious\n"
    # The victim's own link in its own logs/ is not followed either.
    shutil.rmtree(root / "logs")
    task_store = store.open_store(str(root))
    assert stat.S_IMODE((root / "logs").stat().st_mode) == 0o700
    os.symlink(victim_file, task_store.log_path("k"))
    refused(lambda: task_store.log_tail("k", 100), "is a symbolic link")
    # Nor by the reader that follows a running job's log as it grows.
    refused(lambda: task_store.log_from("k", 0, 100), "is a symbolic link")


def test_a_huge_file_in_place_of_an_entry_is_rejected_without_reading_it(tmp_path):
    """A 1.5 GB sparse file: rejected by its first bytes, not read whole."""
    script = f"""
import os, resource, warnings
from pmp import _pmp, get_cache_data
_pmp.Store({str(tmp_path / "store")!r})
with open({str(tmp_path / "store" / "entries" / "big")!r}, "wb") as f:
    f.truncate(1536 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rows = get_cache_data({str(tmp_path / "store")!r})
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(len(rows), grown // 1024, "PMPENTRY" in str(caught[0].message))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    rows, grown_mb, named = done.stdout.split()
    assert rows == "0" and named == "True", done.stdout
    assert int(grown_mb) < 100, f"reading the bad entry took {grown_mb} MB"
