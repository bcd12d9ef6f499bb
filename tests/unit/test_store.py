"""The task store's Python side (`pmp.client.store`) against a real store
(the Rust one, in tmp_path): what counts as a stored result, what
get_cache_data and get_future_from_cache return, and that an entry failing
its signature check is never unpickled."""

import os
import socket
import subprocess
import warnings

import pytest
from pmp import _pmp
from pmp.client import cache_columns, serialize, store
from pmp.client.store import StoreWarning


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def opened(root):
    return store.open_store(root)


def write(opened, key, value, state="done", function="square"):
    opened.write(
        key, function, state, serialize.dumps_value(value), 100.0, 101.0, 103.5, "node7", 42
    )


def test_a_done_entry_is_the_result_and_a_failed_one_runs_again(opened):
    write(opened, "ok", 49)
    write(opened, "bad", ValueError("no"), state="failed")
    found = store.lookup(opened, "ok", exact=True)
    assert found.state == "done"
    assert serialize.loads(found.frames) == 49
    assert store.lookup(opened, "bad", exact=True) is None
    assert store.lookup(opened, "absent", exact=True) is None


def test_an_entry_written_after_the_listing_is_missed_until_asked_exactly(opened):
    assert store.lookup(opened, "late") is None  # lists the store: empty
    write(opened, "late", 1)
    assert store.lookup(opened, "late") is None
    assert store.lookup(opened, "late", exact=True) is not None
    store.index_of(opened).add("late")  # as this process's workers do once they stored it
    assert store.lookup(opened, "late") is not None


def test_get_cache_data_has_one_row_per_entry_with_executorlibs_names(root, opened):
    write(opened, "ok", {"x": 1})
    write(opened, "bad", KeyError("x"), state="failed", function="fails")
    rows = {row["key"]: row for row in cache_columns.get_cache_data(root)}
    assert set(rows) == {"ok", "bad"}
    ok, bad = rows["ok"], rows["bad"]
    assert ok["result"] == ok["output"] == {"x": 1}
    assert (ok["function"], ok["state"], ok["host"], ok["duration"]) == (
        "square",
        "done",
        "node7",
        2.5,
    )
    assert ok["filename"] == os.path.join(root, "entries", _pmp.key_file_name("ok"))
    assert ok["started"].timestamp() == 101.0
    assert isinstance(bad["error"], KeyError)
    assert "result" not in bad


def test_a_stored_calls_arguments_and_resources_are_its_rows_columns(root, opened):
    write(opened, "ran", 9)
    call = serialize.dumps_call((4,), {"b": 5}, None)
    opened.write_input("ran", "add", 100.0, b"fn", call, [], '{"cores": 2, "partition": "debug"}')
    write(opened, "earlier", 1)
    opened.write_input("earlier", "add", 100.0, b"fn", call, [])  # resources not kept
    rows = {row["key"]: row for row in cache_columns.get_cache_data(root)}
    ran = rows["ran"]
    assert (ran["input_args"], ran["input_kwargs"]) == ((4,), {"b": 5})
    assert ran["resource_dict"] == {"cores": 2, "partition": "debug"}
    assert "resource_dict" not in rows["earlier"]


def test_an_entry_that_fails_its_check_is_reported_once_and_never_unpickled(root, opened):
    write(opened, "forged", 1)
    write(opened, "fine", 2)
    path = os.path.join(root, "entries", _pmp.key_file_name("forged"))
    with open(path, "r+b") as entry:
        entry.seek(-1, os.SEEK_END)
        last = entry.read(1)
        entry.seek(-1, os.SEEK_END)
        entry.write(bytes([last[0] ^ 1]))
    with pytest.warns(StoreWarning, match="ignoring the task store entry 'forged'.*runs again"):
        assert store.lookup(opened, "forged", exact=True) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.lookup(opened, "forged", exact=True) is None  # said once is enough
        assert [row["key"] for row in cache_columns.get_cache_data(root)] == ["fine"]


def test_a_future_from_the_store_has_its_result_or_exception(root, opened):
    write(opened, "ok", "value")
    write(opened, "bad", ZeroDivisionError("zero"), state="failed")
    assert store.get_future_from_cache(root, "ok").result(timeout=0) == "value"
    error = store.get_future_from_cache(root, "bad").exception(timeout=0)
    assert isinstance(error, ZeroDivisionError)
    with pytest.raises(FileNotFoundError, match="no entry and no input for cache key 'gone'"):
        store.get_future_from_cache(root, "gone")
    with pytest.raises(ValueError, match="cache_key must be a str"):
        store.get_future_from_cache(root, "../up")


def test_clear_cache_removes_one_entry_or_all_and_says_how_many(root, opened):
    for key in ("a", "b", "c"):
        write(opened, key, key)
    assert store.lookup(opened, "a") is not None  # listed: in the index
    assert store.clear_cache(root, "a") == 1
    assert store.lookup(opened, "a") is None
    assert store.clear_cache(root, "a") == 0
    assert store.clear_cache(root) == 2
    assert cache_columns.get_cache_data(root) == []


def test_the_same_path_is_one_store_and_a_removed_one_is_made_anew(root, opened):
    assert store.open_store(root) is opened
    write(opened, "a", 1)
    store.clear_cache(root)
    os.rename(root, root + ".old")
    again = store.open_store(root)
    assert again is not opened
    assert os.path.isdir(os.path.join(root, "entries"))


def test_a_store_others_can_write_to_is_refused_naming_cache_directory(tmp_path):
    shared = tmp_path / "shared"
    store.open_store(str(shared))
    store._open.pop(str(shared))
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="cache_directory .*shared"):
        store.open_store(str(shared))


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(opened):
    assert store.claim(opened, "k")
    assert opened.lock_owner("k") == f"{socket.gethostname()} {os.getpid()}"
    assert not opened.lock_owner_gone("k")
    dead = subprocess.Popen(["true"])  # a pid of this host that no longer runs
    dead.wait()
    assert opened.try_lock("d", f"batch {socket.gethostname()} {dead.pid}")
    assert opened.lock_owner_gone("d")
    assert store.claim(opened, "d")


@pytest.mark.parametrize(
    ("owner", "holder"),
    [("node1 42", ("node1", 42)), ("batch node2 7", ("node2", 7)), ("node1", None), (None, None)],
)
def test_a_locks_owner_text_names_its_host_and_pid(owner, holder):
    assert store.lock_holder(owner) == holder


def test_a_stored_result_is_described_by_when_and_where_it_was_computed(opened):
    write(opened, "ok", 1)
    said = store.describe(store.lookup(opened, "ok", exact=True))
    assert said.startswith("from the store (computed 19")
    assert said.endswith(" on node7)")
