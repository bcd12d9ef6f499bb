"""The task store (`cache_directory`): results that outlive the process.

One entry per call key, written by the worker that computed it (the store
itself is Rust, `pmp._pmp.Store`): the pickled result or exception with
when, where and how long. Entries are signed with the store's own key (the
file `key`, 0600, in a 0700 directory); one that fails the check is never
unpickled: it is reported once and treated as absent, so the call runs again.
A store that is not the user's alone (another user's directory, one others
can write to, a link planted in it) is refused whole: PermissionError, and
nothing of it is read (the rule is the Rust store's).
"""

import collections
import datetime
import threading
import time
import warnings
from concurrent.futures import Future

from pmp import _pmp
from pmp.client import serialize
from pmp.client.errors import exception_of
from pmp.client.follow import Following
from pmp.client.resources import check_directory, check_key

_open = {}  # absolute path -> _pmp.Store
_indexes = {}  # _pmp.Store -> KeyIndex (one store object per path, see open_store)
_open_lock = threading.Lock()
_reported = set()  # (root, key) of invalid entries already warned about

# An earlier run of a store key (`Future.earlier_run`), met when the call was submitted:
# `fate` "ended" (its process died without storing an outcome, so this call
# runs it again), "attached" (it still runs, so this Future follows it) or
# "failed" (its batch job failed while no client followed it: this Future
# fails as it did, once);
# `owner` the text of the lock it held ("host pid", "batch host pid"),
# `gone` whether that process no longer runs (the store's word), `job` and
# `system` its batch job ("83", "Slurm") if it is one.
EarlierRun = collections.namedtuple("EarlierRun", "fate owner gone job system")


class StoreWarning(UserWarning):
    """A store entry was ignored (it failed its signature check), or a
    result could not be stored (the disk is full, the store read-only)."""


def open_store(path):
    """The store at `path` (created if missing), one object per process."""
    with _open_lock:
        store = _open.get(path)
        if store is not None and not store.present():
            store = None  # removed since (rm -rf of the cache): made anew below
        if store is None:
            try:
                store = _open[path] = _pmp.Store(path)
            except PermissionError as error:  # not the user's alone: nothing was read
                raise PermissionError(f"cache_directory {path!r}: {error}") from None
            except RuntimeError as error:
                raise ValueError(f"cache_directory {path!r}: {error}") from None
        return store


class KeyIndex:
    """The keys a store held when it was last listed, plus those this
    process's workers stored since: `submit()` asks it instead of stat-ing
    an entry per call (a stat was most of what a store added to submit).

    It may miss an entry another process wrote since the last listing. That
    costs a trip, not a second run: the worker re-reads the entry after
    taking the key's lock, and a done one comes back as Elsewhere, which
    resolves the Future from the store. Listings are at least a second
    apart, and at least 20 times as long as the last one took, so a huge
    store costs at most 5% of the time spent submitting."""

    _MIN_AGE = 1.0
    _COST_FACTOR = 20

    def __init__(self, store):
        self._store = store
        self._keys = frozenset()
        self._added = set()  # stored by this process since the listing
        self._next_listing = 0.0
        self._lock = threading.Lock()

    def __contains__(self, key):
        if time.monotonic() >= self._next_listing:
            self._relist()
        return key in self._keys or key in self._added

    def add(self, key):
        self._added.add(key)

    def discard(self, key):
        self._added.discard(key)
        if key in self._keys:
            self._keys = self._keys - {key}

    def forget_all(self):
        self._keys, self._added = frozenset(), set()

    def _relist(self):
        with self._lock:
            start = time.monotonic()
            if start < self._next_listing:  # another thread just did
                return
            keys = frozenset(self._store.stored_keys())
            self._keys, self._added = keys, set()
            end = time.monotonic()
            self._next_listing = end + max(self._MIN_AGE, self._COST_FACTOR * (end - start))


def index_of(store):
    """The `KeyIndex` of an open store (one per store and process)."""
    index = _indexes.get(store)
    if index is None:
        with _open_lock:
            index = _indexes.setdefault(store, KeyIndex(store))
    return index


def lookup(store, key, exact=False):
    """The stored, verified outcome of `key` if it finished ("done"), else
    None: a stored failure runs again, and so does an invalid entry. Not
    `exact`: a key missing from the store's index counts as absent (see
    `KeyIndex`); `exact` stats the entry, for a caller that would otherwise
    start a second run (a batch job)."""
    if not (store.contains(key) if exact else key in index_of(store)):
        return None
    try:
        entry = store.read(key)
    except _pmp.InvalidEntry as error:
        report_invalid(store, key, error)
        return None
    if entry is None or entry.state != "done":
        return None
    return entry


def lock_holder(owner):
    """`(host, pid)` of the process a lock's owner text names; None for
    any other text (the store's rule, in Rust)."""
    return _pmp.lock_holder(owner)


def earlier_run(store, key, fate, job=None, system=None):
    """The `EarlierRun` that holds `key`'s lock now, met with `fate`
    ("ended" or "attached"); whether its process is gone is the store's word."""
    return EarlierRun(fate, store.lock_owner(key), store.lock_owner_gone(key), job, system)


def claim(store, key, batch=False):
    """Take the lock on `key` for running it here: True when this process
    holds it now (a stale lock of a dead process on this host is taken over;
    the rule and the owner's text are the store's, `pmp._pmp.Store.claim`)."""
    return store.claim(key, batch)


def report_invalid(store, key, error):
    """Warn, once per key, that its entry failed its check and was ignored."""
    if (store.root, key) not in _reported:
        _reported.add((store.root, key))
        warnings.warn(
            f"ignoring the task store entry {key!r} in {store.root}: {error}; "
            "it was not unpickled, and the call runs again",
            StoreWarning,
            stacklevel=4,
        )


def warn_unstored(store, key, why):
    """A worker could not write the entry of `key` (its `why`): the Future
    has its outcome, the store does not."""
    warnings.warn(
        f"the outcome of task store key {key!r} was not stored in {store.root}: {why}; "
        "the Future holds it, but get_cache_data does not list it and the call runs again "
        "when it is next submitted: free space or fix the store to keep results",
        StoreWarning,
        stacklevel=2,
    )


def local_time(seconds):
    """A store's time (seconds since the epoch) as a datetime in local time."""
    return datetime.datetime.fromtimestamp(seconds).astimezone()


def describe(entry):
    """How a status display says where a stored result came from."""
    finished = local_time(entry.finished).strftime("%Y-%m-%d %H:%M:%S")
    return f"from the store (computed {finished} on {entry.host})"


def get_future_from_cache(cache_directory, cache_key):
    """A Future of the call stored under `cache_key`, as executorlib's: done
    with its result or exception if its entry is there; if only its input is
    (a batch job not finished yet), one that resolves when the entry
    appears; FileNotFoundError if neither is."""
    store = open_store(check_directory("cache_directory", cache_directory))
    check_key("cache_key", cache_key)
    future = Future()

    def resolve(entry):
        if entry.state == "done":
            future.set_result(serialize.loads(entry.frames))
        else:
            future.set_exception(exception_of(entry.frames))

    try:
        entry = store.read(cache_key)
    except _pmp.InvalidEntry as error:
        raise ValueError(f"the entry {cache_key!r} in {store.root} failed its check: {error}")
    if entry is not None:
        resolve(entry)
        return future
    if not store.has_input(cache_key):
        raise FileNotFoundError(
            f"no entry and no input for cache key {cache_key!r} in {store.root}"
        )

    def released():  # its job holds the key's lock until it wrote the entry
        future.set_exception(
            RuntimeError(f"the job of cache key {cache_key!r} ended without a result")
        )

    global _cache_futures
    if _cache_futures is None:
        _cache_futures = Following()
    _cache_futures.key(store, cache_key, resolve, released)
    return future


_cache_futures = None  # the Following of get_future_from_cache's pending Futures


def clear_cache(cache_directory, key=None):
    """Remove one entry (`key`) or all of them; returns how many were removed."""
    store = open_store(check_directory("cache_directory", cache_directory))
    index = index_of(store)
    if key is None:
        index.forget_all()
        return store.clear()
    index.discard(check_key("key", key))
    return int(store.remove(key))


def read_job(task_store, key):
    """The job recorded for `key`, verified; None if there is none, or if
    its record fails the check (reported once, like an invalid entry)."""
    try:
        return task_store.read_job(key)
    except _pmp.InvalidEntry as error:
        warnings.warn(
            f"ignoring the job record of {key!r} in {task_store.root}: {error}",
            StoreWarning,
            stacklevel=3,
        )
    except OSError:  # e.g. PermissionError: not the user's own file
        pass
    return None
