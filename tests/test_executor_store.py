"""The task store (`cache_directory`): results that outlive the process that
computed them. Every test runs the user's script as `python script.py` in
fresh processes, as a restarted kernel would, and counts real runs through a
side-effect file the function appends to."""

import pickle
import stat

import psutil
import pytest
from full_disk import mount_small_tmpfs
from unpickle_traps import OpenOnUnpickle

RESULT_TIMEOUT = 60

# The user's script: `calls` runs once per process; `runs.txt` gets a line
# for every real run of a function.
SCRIPT = """
import os, sys
from pmp import Executor

def record(name):
    with open("runs.txt", "a") as f:
        f.write(name + "\\n")

def add(a, b):
    record(f"add {{a}} {{b}}")
    return a + b

def also_add(a, b):
    record(f"also_add {{a}} {{b}}")
    return a + b

def fail(message):
    record("fail")
    raise ValueError(message)

with Executor(max_cores=2, cache_directory="store"{executor}) as exe:
{calls}
"""


def script(calls, executor=""):
    body = "\n".join("    " + line for line in calls.strip().splitlines())
    return SCRIPT.format(calls=body, executor=executor)


def runs(tmp_path):
    path = tmp_path / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def ok(done):
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("block", ["", ", max_workers=1, block_allocation=True"])
def test_a_result_computed_in_one_process_is_returned_by_another_without_running(
    run_script, tmp_path, block
):
    calls = "print(exe.submit(add, 1, 2).result())"
    assert ok(run_script(script(calls, block))) == ["3"]
    assert ok(run_script(script(calls, block))) == ["3"]
    assert runs(tmp_path) == ["add 1 2"]
    # Other arguments are another call.
    assert ok(run_script(script("print(exe.submit(add, 1, 3).result())", block))) == ["4"]
    assert runs(tmp_path) == ["add 1 2", "add 1 3"]


def test_an_entry_written_after_this_process_listed_the_store_is_not_run_again(
    run_script, write_script, tmp_path
):
    # submit() asks the store's key index (listed at first use) instead of
    # stat-ing each entry; an entry another process wrote since is found by
    # the worker, which re-reads the entry after taking the key's lock.
    write_script(script("print(exe.submit(add, 1, 2).result())"), "other.py")
    calls = """
import subprocess, pmp.client.store
pmp.client.store.KeyIndex._MIN_AGE = 3600  # the listing stays stale throughout
print(exe.submit(add, 0, 0).result())
subprocess.run([sys.executable, "other.py"], check=True)
again = exe.submit(add, 1, 2)
print(again.result(), again.from_store is not None)
"""
    assert ok(run_script(script(calls))) == ["0", "3", "3 True"]
    assert runs(tmp_path) == ["add 0 0", "add 1 2"]


def test_a_result_stored_by_this_process_is_found_without_a_worker(run_script, tmp_path):
    # The index learns the keys this process's workers store: the second
    # submit resolves at once, from the store, not through a worker.
    calls = """
import pmp.client.store
pmp.client.store.KeyIndex._MIN_AGE = 3600
first = exe.submit(add, 1, 2)
print(first.result(), first.from_store is None)
again = exe.submit(add, 1, 2)
print(again.done(), again.result(), again.from_store is not None)
"""
    assert ok(run_script(script(calls))) == ["3 True", "True 3 True"]
    assert runs(tmp_path) == ["add 1 2"]


def test_a_chain_of_dependent_calls_is_returned_from_the_store(run_script, tmp_path):
    calls = """
first = exe.submit(add, 1, 2)
second = exe.submit(add, first, 10)
print(second.result(), first.result())
"""
    assert ok(run_script(script(calls))) == ["13 3"]
    assert ok(run_script(script(calls))) == ["13 3"]
    assert runs(tmp_path) == ["add 1 2", "add 3 10"]
    # A changed upstream changes the dependent's key too.
    changed = calls.replace("add, 1, 2", "add, 1, 5")
    assert ok(run_script(script(changed))) == ["16 6"]
    assert runs(tmp_path)[2:] == ["add 1 5", "add 6 10"]


def test_a_cache_key_names_the_entry_whatever_the_function(run_script, tmp_path):
    first = 'print(exe.submit(add, 1, 2, resource_dict={"cache_key": "sum"}).result())'
    assert ok(run_script(script(first))) == ["3"]
    other = 'print(exe.submit(also_add, 5, 5, resource_dict={"cache_key": "sum"}).result())'
    assert ok(run_script(script(other))) == ["3"]
    assert runs(tmp_path) == ["add 1 2"]


def test_a_failure_is_stored_but_runs_again(run_script, tmp_path):
    calls = """
from pmp import get_cache_data
try:
    exe.submit(fail, "broken").result()
except ValueError as error:
    print("raised", error)
rows = get_cache_data("store")
print(len(rows), rows[0]["state"], type(rows[0]["error"]).__name__, rows[0]["error"])
print(rows[0]["function"], "result" in rows[0])
"""
    assert ok(run_script(script(calls))) == [
        "raised broken",
        "1 failed ValueError broken",
        "fail False",
    ]
    ok(run_script(script(calls)))
    assert runs(tmp_path) == ["fail", "fail"]


def test_get_cache_data_and_clear_cache(run_script, tmp_path):
    calls = """
import datetime, socket
from pmp import clear_cache, get_cache_data
exe.submit(add, 1, 2).result()
exe.submit(add, 2, 2, resource_dict={"cache_key": "four"}).result()
rows = {row["key"]: row for row in get_cache_data("store")}
four = rows["four"]
print(sorted(four), four["result"], four["function"], four["state"])
print(four["host"] == socket.gethostname(), four["duration"] >= 0)
print(four["submitted"] <= four["started"] <= four["finished"])
print(isinstance(four["finished"], datetime.datetime), len(rows))
print(clear_cache("store", "four"), len(get_cache_data("store")))
print(clear_cache("store"), get_cache_data("store"))
"""
    assert ok(run_script(script(calls))) == [
        (
            "['duration', 'filename', 'finished', 'function', 'host', 'key', 'output', "
            "'queue_id', 'result', 'runtime', 'started', 'state', 'submitted'] 4 add done"
        ),
        "True True",
        "True",
        "True 2",
        "1 1",
        "1 []",
    ]


def test_the_store_is_private_to_its_user(run_script, tmp_path):
    ok(run_script(script("exe.submit(add, 1, 2).result()")))
    store = tmp_path / "store"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "key").stat().st_mode) == 0o600


def test_a_forged_store_is_never_unpickled(run_script, tmp_path):
    from pmp import _pmp
    from pmp.client import serialize

    calls = "print(exe.submit(add, 1, 2).result())"
    listing = "\nfrom pmp import get_cache_data\nprint(get_cache_data('store'))"
    ok(run_script(script(calls)))
    entries = tmp_path / "store" / "entries"
    (key,) = [p.name for p in entries.iterdir() if not p.name.startswith(".")]
    pwned = tmp_path / "pwned"
    # A plain pickle in place of the entry.
    (entries / key).write_bytes(pickle.dumps(OpenOnUnpickle(str(pwned))))
    done = run_script(script(calls + listing))
    shown = ok(done)
    assert shown[0] == "3"
    # Only the entry the call just wrote again: the forged one was dropped.
    assert shown[1].count("'key'") == 1 and "'result': 3" in shown[1], shown[1]
    assert "ignoring the task store entry" in done.stderr and "not unpickled" in done.stderr
    assert not pwned.exists()
    assert runs(tmp_path) == ["add 1 2", "add 1 2"], "the forged entry made the call run again"
    # A well-formed entry, signed with another store's key.
    other = _pmp.Store(str(tmp_path / "other"))
    frames = serialize.dumps_value(OpenOnUnpickle(str(pwned)))
    other.write(key, "add", "done", frames, 0.0, 0.0, 0.0, "elsewhere", 1)
    (entries / key).write_bytes((tmp_path / "other" / "entries" / key).read_bytes())
    done = run_script(script(calls + listing))
    assert ok(done)[0] == "3"
    assert "ignoring the task store entry" in done.stderr
    assert not pwned.exists()
    assert len(runs(tmp_path)) == 3


def test_a_bad_cache_key_or_directory_is_a_value_error(tmp_path):
    from pmp import Executor

    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cache_directory .* is not a directory"):
        Executor(max_cores=1, cache_directory=str(tmp_path / "file"))
    with Executor(max_cores=1, cache_directory=str(tmp_path / "store")) as exe:
        for bad in ("../escape", ".hidden", "", "a//b", "a/.b", "a%b", 5):
            with pytest.raises(ValueError, match="cache_key"):
                exe.submit(sum, [1], resource_dict={"cache_key": bad})
        assert exe.submit(sum, [1, 1]).result(RESULT_TIMEOUT) == 2
    with Executor(max_cores=1) as exe:
        with pytest.raises(ValueError, match="has none"):
            exe.submit(sum, [1], resource_dict={"cache_key": "k"})
        per_call = {"cache_key": "k", "cache_directory": str(tmp_path / "per-call")}
        assert exe.submit(sum, [1, 2], resource_dict=per_call).result(RESULT_TIMEOUT) == 3
    assert (tmp_path / "per-call" / "entries" / "k").exists()


def test_a_cache_key_with_parts_names_its_entry_as_executorlibs_sub_folders(run_script, tmp_path):
    calls = """
from pmp import get_cache_data
futures = [exe.submit(add, i, i, resource_dict={"cache_key": f"same/j{i}"}) for i in (1, 2)]
print([f.result() for f in futures])
print(sorted((row["key"], row["output"]) for row in get_cache_data("store")))
"""
    assert ok(run_script(script(calls))) == ["[2, 4]", "[('same/j1', 2), ('same/j2', 4)]"]
    assert ok(run_script(script(calls)))[0] == "[2, 4]"
    assert sorted(runs(tmp_path)) == ["add 1 1", "add 2 2"], "the second process read them"


SLOW = """
import os, sys, time
from pmp import Executor, get_cache_data

def slow(x):
    with open("runs.txt", "a") as f:
        f.write(f"slow {x} {os.getpid()}\\n")
    deadline = time.monotonic() + 30
    while not os.path.exists("go") and time.monotonic() < deadline:
        time.sleep(0.01)
    return x * 2

with Executor(max_cores=1, cache_directory="store") as exe:
    future = exe.submit(slow, 21)
    print("submitted", flush=True)
    print(future.result(), future.from_store is not None, flush=True)
"""


def test_the_same_key_submitted_by_two_clients_at_once_runs_once(
    start_script, tmp_path, wait_until
):
    first = start_script(SLOW, name="first.py")
    wait_until(lambda: runs(tmp_path), timeout=30, message="the first client's call never started")
    second = start_script(SLOW, name="second.py")
    assert second.stdout.readline() == "submitted\n"
    (tmp_path / "go").write_text("")
    out_first, err_first = first.communicate(timeout=60)
    out_second, err_second = second.communicate(timeout=60)
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    assert out_first.splitlines()[-1] == "42 False"
    assert out_second.splitlines()[-1] == "42 True", "the second attached to the first's run"
    assert len(runs(tmp_path)) == 1


def test_a_killed_clients_lock_is_taken_over(start_script, run_script, tmp_path, wait_until):
    import signal

    first = start_script(SLOW, name="first.py")
    wait_until(lambda: runs(tmp_path), timeout=30, message="the first client's call never started")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # Its call's process notices the client is gone and ends; until then it
    # could still finish the call and store its result, and the second
    # would rightly reuse it.
    pid = int(runs(tmp_path)[0].split()[-1])
    wait_until(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        timeout=30,
        message="the killed client's call kept running",
    )
    (tmp_path / "go").write_text("")
    done = run_script(SLOW, name="second.py")
    assert ok(done)[-1] == "42 False", "the second ran it itself"
    assert len(runs(tmp_path)) == 2


MANY = """
import os
from pmp import Executor

def blob(i):
    return os.urandom(256 * 1024) + i.to_bytes(4, "little")

with Executor(max_workers=2, block_allocation=True, cache_directory="store") as exe:
    futures = [exe.submit(blob, i) for i in range(400)]
    futures[0].result()
    print("writing", flush=True)
    for f in futures:
        f.result()
"""


def test_a_client_killed_while_results_are_written_leaves_a_readable_store(
    start_script, run_script, tmp_path
):
    import signal

    client = start_script(MANY)
    assert client.stdout.readline() == "writing\n"
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    done = run_script(
        """
        import warnings
        from pmp import get_cache_data, clear_cache
        warnings.simplefilter("error")  # an invalid entry would be a StoreWarning
        rows = get_cache_data("store")
        print(len(rows) >= 1, all(len(r["result"]) == 256 * 1024 + 4 for r in rows))
        print(clear_cache("store") == len(rows), get_cache_data("store"))
        """,
        name="reader.py",
    )
    assert ok(done) == ["True True", "True []"]


def gated_double(gate, path, x):
    from gates import wait_for_file

    with open(path, "a") as f:
        f.write("ran\n")
    wait_for_file(gate, timeout=30)
    return 2 * x


def test_the_same_key_twice_at_once_in_one_client_runs_once(tmp_path, make_gate, wait_until):
    from pmp import Executor

    gate = make_gate()
    ran = tmp_path / "ran.txt"
    with Executor(max_workers=2, cache_directory=str(tmp_path / "store")) as exe:
        first = exe.submit(gated_double, gate.path, str(ran), 21)
        wait_until(ran.exists, timeout=30, message="the first call never started")
        second = exe.submit(gated_double, gate.path, str(ran), 21)
        # Its worker finds the key locked by the first's: it attaches instead.
        wait_until(lambda: exe.info["tasks"]["waiting"] == 1, timeout=30)
        gate.open()
        assert (first.result(RESULT_TIMEOUT), second.result(RESULT_TIMEOUT)) == (42, 42)
        assert first.from_store is None and second.from_store is not None
        # A dependent of the attached call gets its value.
        assert exe.submit(sum, [second, 1]).result(RESULT_TIMEOUT) == 43
    assert ran.read_text() == "ran\n"


def test_a_result_the_full_disk_cannot_hold_comes_with_a_warning(run_script, tmp_path):
    import subprocess

    store = tmp_path / "store"
    mount_small_tmpfs(store)
    calls = """
import warnings
from pmp import get_cache_data
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    big = exe.submit(bytes, 1024 * 1024).result()
print(len(big), [w.category.__name__ for w in caught])
print("No space left on device" in str(caught[0].message) if caught else "no warning")
print(get_cache_data("store"))
print(exe.submit(add, 1, 2).result(), len(get_cache_data("store")))
"""
    try:
        done = run_script(script(calls))
    finally:
        subprocess.run(["umount", str(store)], check=True)
    assert ok(done) == ["1048576 ['StoreWarning']", "True", "[]", "3 1"]
