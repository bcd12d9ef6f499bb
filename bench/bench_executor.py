"""pmp.Executor against executorlib, concurrent.futures.ProcessPoolExecutor and
dask.distributed, in one run.

    python bench/bench_executor.py                 # every library, every scenario
    python bench/bench_executor.py --only pmp      # one library (comma-separated list allowed)
    python bench/bench_executor.py --quick         # smaller sizes, for development
    python bench/bench_executor.py --json out.json # also write the figures as JSON

Every (library, scenario) pair runs in its own subprocess, in its own process
group, under a timeout: a clean interpreter (and a clean RSS), and a failure or
a hang becomes the text of its table cell instead of ending the run. Whatever
the measurement leaves behind (worker processes) is killed with its group.

The machine these numbers come from is small and shared: read the ratios, not
the absolute figures.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LIBRARIES = ("pmp", "executorlib", "ppe", "dask", "floor")
COLUMNS = {
    "pmp": "pmp",
    "executorlib": "executorlib",
    "ppe": "ProcessPoolExecutor",
    "dask": "dask.distributed",
    "floor": "machine floor",
}

# name -> (row label, unit, higher_is_better)
SCENARIOS = {
    "throughput": ("tiny-task throughput, 2 workers, block allocation", "tasks/s", True),
    "roundtrip": ("sequential round trip (submit + result), 1 worker", "ms", False),
    "chain": ("chain of N dependent futures, time per link", "ms/link", False),
    "fresh": ("fresh process per task, max_cores=2", "tasks/s", True),
    "numpy": ("100 MB numpy argument, 1 worker", "MB/s", True),
    "rss": ("peak RSS increase, 100,000 tasks queued behind a busy worker", "MB", False),
    "rssrun": (
        "client peak RSS increase, 100,000 tasks submitted at once and run, results held",
        "MB",
        False,
    ),
    # Derived from the "rss" measurement, not run on its own.
    "submit": ("submit() rate while queueing those tasks", "calls/s", True),
    "storesubmit": (
        "submit() time a task store adds (cache_directory, empty), 2 workers, block allocation",
        "µs/call",
        False,
    ),
    "storeload": (
        "10,000 stored results loaded in a fresh interpreter (create, submit, result)",
        "s",
        False,
    ),
}
DERIVED = {"submit": ("rss", "submit_per_s")}

# Scenarios measured in several rounds, each library once per round in turn: on a shared
# machine the load changes within seconds, and libraries measured one after the other would be
# compared under different loads. The table shows each library's median over the rounds, and
# the run prints the ratio of every round. (full, quick)
ROUNDS = {"throughput": (5, 1)}
# The libraries measured in every round; the others (dask.distributed takes a minute a round
# here) only in the first.
IN_EVERY_ROUND = ("pmp", "executorlib", "ppe")

# Sizes: (full, quick)
SIZES = {
    "throughput_tasks": (5000, 1000),
    "throughput_repeat": (5, 1),
    "roundtrip_repeat": (200, 50),
    "chain_links": (200, 50),
    "chain_repeat": (5, 1),
    "fresh_tasks": (50, 10),
    "numpy_bytes": (100_000_000, 100_000_000),
    "numpy_repeat": (5, 2),
    "rss_tasks": (100_000, 20_000),
    "rssrun_tasks": (100_000, 20_000),
    "storesubmit_calls": (20_000, 5_000),
    "storesubmit_repeat": (3, 1),
    "storesubmit_wait_s": (20, 10),  # for the results of one round, outside the timing
    "storeload_tasks": (10_000, 2_000),
    "storeload_budget_s": (60, 20),  # the fresh interpreter stops waiting after this
}


# ---------------------------------------------------------------------------------------------
# Functions the workers run. Module-level in __main__: cloudpickle (pmp, executorlib) sends them
# by value, ProcessPoolExecutor finds them by name (fork) or by re-importing this file (spawn).


def inc(x):
    return x + 1


def nbytes(array):
    return array.nbytes


def wait_for_file(started, release):
    with open(started, "w"):
        pass
    while not os.path.exists(release):
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------
# The measuring side: one library, one scenario, in a subprocess started by the harness.


class NotApplicable(Exception):
    """The library has no way to do what the scenario measures."""


def make_executor(library, mode, workers=1, cache_directory=None):
    """mode: "block" (long-lived workers) or "fresh" (a new process per task);
    cache_directory: a task store (block mode only)."""
    if cache_directory is not None and library in ("ppe", "dask"):
        raise NotApplicable("no task store")
    if library == "pmp":
        from pmp import Executor

        if mode == "block":
            return (
                Executor(
                    max_workers=workers, block_allocation=True, cache_directory=cache_directory
                ),
                "",
            )
        return Executor(max_cores=2), ""
    if library == "executorlib":
        from executorlib import SingleNodeExecutor

        if mode == "block":
            # Its cache_directory needs h5py (executorlib.standalone.hdf).
            return (
                SingleNodeExecutor(
                    max_workers=workers, block_allocation=True, cache_directory=cache_directory
                ),
                "",
            )
        return SingleNodeExecutor(max_cores=2), ""
    if library == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        if mode == "block":
            return ProcessPoolExecutor(max_workers=workers), ""
        # Python picks "spawn" for max_tasks_per_child: a fresh interpreter per task.
        return (
            ProcessPoolExecutor(max_workers=2, max_tasks_per_child=1),
            "PPE(2, max_tasks_per_child=1)",
        )
    if library == "dask":
        if mode != "block":
            raise NotApplicable("no fresh process per task")
        return DaskExecutor(workers), ""
    raise ValueError(f"unknown library {library!r}")


class DaskExecutor:
    """dask.distributed as these scenarios use an executor: a local cluster of
    single-threaded worker processes (as block allocation), `client.submit`
    so that futures passed as arguments are dependencies, and `pure=False` as
    every call is a new task (no hashing of the arguments into a key)."""

    def __init__(self, workers):
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)

    def submit(self, fn, *args, **kwargs):
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def shutdown(self, wait=True, cancel_futures=False):
        del wait, cancel_futures
        self.client.close()
        self.cluster.close()


# ---------------------------------------------------------------------------------------------
# The machine's floors: what the same scenario costs with nothing but the bare mechanism.

_ECHO = """
import sys, zmq, cloudpickle
socket = zmq.Context().socket(zmq.REP)
port = socket.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
pickled = sys.argv[1] == "pickled"
while True:
    message = socket.recv()
    if message == b"stop":
        socket.send(b"")
        break
    if pickled:
        fn, args = cloudpickle.loads(message)
        message = cloudpickle.dumps(fn(*args))
    socket.send(message)
"""


def _ping_pong(pickled):
    """A REQ/REP pair of pyzmq sockets over TCP loopback to a child
    interpreter; `pickled`: the call travels with cloudpickle and runs there."""
    import cloudpickle
    import zmq

    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO, "pickled" if pickled else "echo"], stdout=subprocess.PIPE
    )
    port = int(child.stdout.readline())
    socket = zmq.Context().socket(zmq.REQ)
    socket.connect(f"tcp://127.0.0.1:{port}")
    times = []
    for i in range(20 + SIZES["roundtrip_repeat"][0]):
        start = time.perf_counter()
        if pickled:
            socket.send(cloudpickle.dumps((inc, (i,))))
            assert cloudpickle.loads(socket.recv()) == i + 1
        else:
            socket.send(b"x" * 64)
            socket.recv()
        times.append((time.perf_counter() - start) * 1e3)
    socket.send(b"stop")
    socket.recv()
    child.wait()
    return statistics.median(times[20:])


def floor_roundtrip(quick):
    del quick
    pickled, echo = _ping_pong(True), _ping_pong(False)
    return {"value": pickled, "note": f"cloudpickle+pyzmq ping-pong; zmq echo {echo:.3f}"}


def floor_numpy(quick):
    import numpy as np

    array = np.random.default_rng(0).random(SIZES["numpy_bytes"][quick] // 8)
    copy = np.empty_like(array)
    times = []
    for _ in range(SIZES["numpy_repeat"][quick]):
        start = time.perf_counter()
        np.copyto(copy, array)
        times.append(time.perf_counter() - start)
    return {"value": array.nbytes / 1e6 / statistics.median(times), "note": "in-process copy"}


def floor_fresh(quick):
    """`python -c pass`, two at a time: a fresh interpreter per task at the
    scenario's parallelism, with nothing sent to it or back."""
    from concurrent.futures import ThreadPoolExecutor

    tasks = SIZES["fresh_tasks"][quick]

    def start_one(_):
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(start_one, range(2)))  # warm-up
        start = time.perf_counter()
        list(pool.map(start_one, range(tasks)))
    return {"value": tasks / (time.perf_counter() - start), "note": "python -c pass, 2 at a time"}


def floor_rssrun(quick):
    """The client's own base: this interpreter's RSS before any executor."""
    own, _ = _rss_now()
    del quick
    return {
        "value": (own or _peak_rss()) / 1e6,
        "note": "the client's base RSS, not an increase",
        "no_ratio": True,
    }


FLOORS = {
    "roundtrip": floor_roundtrip,
    "numpy": floor_numpy,
    "fresh": floor_fresh,
    "rssrun": floor_rssrun,
}


def wait_all(futures):
    for future in futures:
        future.result()


def scenario_throughput(library, quick):
    tasks = SIZES["throughput_tasks"][quick]
    exe, note = make_executor(library, "block", workers=2)
    wait_all([exe.submit(inc, i) for i in range(20)])  # warm-up: both workers started
    rates = []
    budget = time.perf_counter() + 40
    for _ in range(SIZES["throughput_repeat"][quick]):
        start = time.perf_counter()
        wait_all([exe.submit(inc, i) for i in range(tasks)])
        rates.append(tasks / (time.perf_counter() - start))
        if time.perf_counter() > budget:
            break
    return exe, {"value": statistics.median(rates), "samples": rates, "note": note}


def scenario_roundtrip(library, quick):
    exe, note = make_executor(library, "block", workers=1)
    for i in range(20):
        exe.submit(inc, i).result()
    times = []
    for i in range(SIZES["roundtrip_repeat"][quick]):
        start = time.perf_counter()
        exe.submit(inc, i).result()
        times.append((time.perf_counter() - start) * 1e3)
    return exe, {"value": statistics.median(times), "note": note, "p90": _quantile(times, 0.9)}


def scenario_chain(library, quick):
    links = SIZES["chain_links"][quick]
    exe, note = make_executor(library, "block", workers=1)
    emulate = library == "ppe"  # a ProcessPoolExecutor cannot take futures as arguments
    if emulate:
        note = "emulated: result() between links"

    def chain(length):
        value = exe.submit(inc, 0)
        for _ in range(length - 1):
            value = exe.submit(inc, value.result() if emulate else value)
        return value.result()

    assert chain(10) == 10  # warm-up
    per_link = []
    for _ in range(SIZES["chain_repeat"][quick]):
        start = time.perf_counter()
        result = chain(links)
        per_link.append((time.perf_counter() - start) * 1e3 / links)
        assert result == links, result
    return exe, {"value": statistics.median(per_link), "samples": per_link, "note": note}


def scenario_fresh(library, quick):
    tasks = SIZES["fresh_tasks"][quick]
    exe, note = make_executor(library, "fresh")
    exe.submit(inc, 0).result()  # warm-up: imports, page cache
    start = time.perf_counter()
    wait_all([exe.submit(inc, i) for i in range(tasks)])
    rate = tasks / (time.perf_counter() - start)
    return exe, {"value": rate, "note": note}


def scenario_numpy(library, quick):
    import numpy as np

    size = SIZES["numpy_bytes"][quick]
    array = np.random.default_rng(0).random(size // 8)
    exe, note = make_executor(library, "block", workers=1)
    assert exe.submit(nbytes, array[:1000]).result() == 8000  # warm-up: numpy in the worker
    times = []
    for _ in range(SIZES["numpy_repeat"][quick]):
        start = time.perf_counter()
        assert exe.submit(nbytes, array).result() == array.nbytes
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return exe, {"value": array.nbytes / 1e6 / seconds, "seconds": times, "note": note}


def _rss_now():
    """(this process, this process + its descendants) resident set size in bytes, or None."""
    try:
        import psutil
    except ImportError:
        return None, None
    me = psutil.Process()
    own = me.memory_info().rss
    tree = own
    for child in me.children(recursive=True):
        try:
            tree += child.memory_info().rss
        except psutil.Error:
            pass
    return own, tree


def _rss_base():
    """(own, tree) RSS in bytes before a measurement, garbage collected; own
    falls back to the peak where psutil is missing."""
    import gc

    gc.collect()
    own, tree = _rss_now()
    return (own if own is not None else _peak_rss()), tree


def _peak_rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def scenario_rss(library, quick):
    tasks = SIZES["rss_tasks"][quick]
    exe, note = make_executor(library, "block", workers=1)
    exe.submit(inc, 0).result()
    folder = tempfile.mkdtemp(prefix="rss-")  # inside the harness's scratch TMPDIR
    started, release = os.path.join(folder, "started"), os.path.join(folder, "release")
    blocker = exe.submit(wait_for_file, started, release)
    deadline = time.monotonic() + 30
    while not os.path.exists(started):
        if time.monotonic() > deadline:
            raise RuntimeError("the blocking task did not start within 30 s")
        time.sleep(0.01)
    own_before, tree_before = _rss_base()
    start = time.perf_counter()
    futures = [exe.submit(inc, i) for i in range(tasks)]
    submit_seconds = time.perf_counter() - start
    time.sleep(0.5)  # let background threads / the scheduler take in what was submitted
    own_after, tree_after = _rss_now()
    peak = max(_peak_rss(), own_after or 0)
    result = {
        "value": (peak - own_before) / 1e6,
        "note": note,
        "tasks": tasks,
        "submit_per_s": tasks / submit_seconds,
        "tree_increase_mb": (tree_after - tree_before) / 1e6 if tree_before else None,
        "pending": sum(not f.done() for f in futures),
    }
    assert not blocker.done()
    return exe, result


def scenario_rssrun(library, quick):
    """All results held: the cost of a finished call that the user still holds."""
    tasks = SIZES["rssrun_tasks"][quick]
    exe, note = make_executor(library, "block", workers=2)
    wait_all([exe.submit(inc, i) for i in range(20)])
    own_before, _ = _rss_base()
    start = time.perf_counter()
    futures = [exe.submit(inc, i) for i in range(tasks)]
    wait_all(futures)
    seconds = time.perf_counter() - start
    own_after, _ = _rss_now()
    peak = max(_peak_rss(), own_after or 0)
    wrong = sum(f.result() != i + 1 for i, f in enumerate(futures))
    if wrong:
        raise RuntimeError(f"{wrong} of {tasks} results are wrong")
    return exe, {
        "value": (peak - own_before) / 1e6,
        "note": note,
        "tasks": tasks,
        "base_mb": own_before / 1e6,
        "held_after_mb": ((own_after or 0) - own_before) / 1e6,
        "tasks_per_s": tasks / seconds,
    }


def _store_executor(library, folder):
    _check_store(library)
    return make_executor(library, "block", workers=2, cache_directory=folder)


def _check_store(library):
    if library in ("ppe", "dask"):
        raise NotApplicable("no task store")
    if library == "executorlib":
        try:
            import h5py  # noqa: F401 - executorlib's cache_directory writes HDF5 files
        except ImportError as error:
            raise NotApplicable(f"its cache_directory needs h5py: {error}") from None


def scenario_storesubmit(library, quick):
    """submit() time per call without and with an (empty) task store, in
    alternating rounds, each on a new executor, both workers held by a call
    that waits for a file while the loop is timed; the figure is the
    difference of the medians. The results are waited for outside the timing,
    up to a limit: a round whose stored calls are not all done by then is the
    last one."""
    _check_store(library)
    calls, wait_s = SIZES["storesubmit_calls"][quick], SIZES["storesubmit_wait_s"][quick]
    without, with_store, note = [], [], ""
    budget = time.perf_counter() + 60
    rounds = [(without, False), (with_store, True)] * SIZES["storesubmit_repeat"][quick]
    for samples, stored in rounds:
        if stored:
            exe, _ = _store_executor(library, tempfile.mkdtemp(prefix="store-"))  # empty
        else:
            exe, _ = make_executor(library, "block", workers=2)
        # Warm-up (both workers started), with arguments the timed loop does not use.
        wait_all([exe.submit(inc, -1 - i) for i in range(20)])
        # Both workers held while the loop is timed: on two cores, workers
        # running (and storing) the calls meanwhile would time their work,
        # not submit()'s. The same loop with them free is timed too, below.
        gates = tempfile.mkdtemp(prefix="gates-")
        release = os.path.join(gates, "release")
        held = [
            exe.submit(wait_for_file, os.path.join(gates, f"held-{i}"), release) for i in (0, 1)
        ]
        while not all(os.path.exists(os.path.join(gates, f"held-{i}")) for i in (0, 1)):
            time.sleep(0.01)
        start = time.perf_counter()
        futures = [exe.submit(inc, i) for i in range(calls)]
        samples.append((time.perf_counter() - start) * 1e6 / calls)
        with open(release, "w"):
            pass
        futures += held
        if not _wait_until(futures, time.perf_counter() + wait_s):
            # executorlib lists the whole cache directory for each task it runs.
            done = sum(future.done() for future in futures)
            note = f"a round's results not all done {wait_s} s after: {done:,} of {calls:,}"
            exe.shutdown(wait=False, cancel_futures=True)  # the harness kills the rest
            break
        exe.shutdown(wait=True)
        if stored:
            os.sync()  # the store's files written back now, not during the next round
        if time.perf_counter() > budget and len(with_store) == len(without):
            break
    plain, stored = statistics.median(without), statistics.median(with_store)
    text = f"{plain:.2f} µs without, {stored:.2f} with"
    return None, {
        "value": stored - plain,
        "note": _join(text, note),
        "without_us": without,
        "with_store_us": with_store,
        "calls": calls,
    }


def _wait_until(futures, deadline):
    """Whether every future finished before the deadline (perf_counter)."""
    from concurrent.futures import CancelledError
    from concurrent.futures import TimeoutError as FuturesTimeout

    for future in futures:
        try:
            future.exception(timeout=max(0.0, deadline - time.perf_counter()))  # done is done
        except CancelledError:
            continue
        except FuturesTimeout:
            return False
    return True


def scenario_storeload(library, quick):
    """Stores `inc(i)` for i < N (untimed), then times a fresh interpreter
    (`--load-store`) that creates an executor on that store, submits the same N
    calls and gets every result; each must come from the store."""
    _check_store(library)
    tasks = SIZES["storeload_tasks"][quick]
    folder = tempfile.mkdtemp(prefix="store-")  # inside the harness's scratch TMPDIR
    start = time.perf_counter()
    if library == "executorlib":
        _fill_executorlib_store(folder, tasks)
    else:
        exe, _ = _store_executor(library, folder)
        results = [future.result() for future in [exe.submit(inc, i) for i in range(tasks)]]
        assert results == [i + 1 for i in range(tasks)]
        exe.shutdown(wait=True)
    fill_seconds = time.perf_counter() - start
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--load-store",
        library,
        folder,
        *(["--quick"] if quick else []),
    ]
    # Files, not pipes (as in run_one). Same process group: the harness kills what it leaves.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.run(command, stdout=out, stderr=err, text=True, check=False)
        out.seek(0)
        err.seek(0)
        result = _last_json(out.read())
        if result is None:
            lines = [line for line in err.read().strip().splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {process.returncode}, no output"
            raise RuntimeError(f"the loading interpreter: {last}")
    if "error" in result:
        raise RuntimeError(result["error"])
    result["fill_s"] = fill_seconds
    return None, result


def _fill_executorlib_store(folder, tasks):
    """The entries executorlib 1.11's executor writes for `submit(inc, i)`
    (`_execute_task_with_cache`: the same key and fields), written here: its
    executor lists the whole cache directory for every task, so filling 10,000
    through it takes minutes. The loading side checks that no file is written."""
    _check_store("executorlib")
    from executorlib.standalone.hdf import dump
    from executorlib.standalone.serialize import serialize_funct

    for i in range(tasks):
        key, data, error = serialize_funct(fn=inc, fn_args=(i,), fn_kwargs={}, resource_dict={})
        if error is not None:
            raise error
        begin = time.time()
        data["output"] = inc(i)
        data["runtime"] = time.time() - begin
        dump(file_name=os.path.join(folder, key + "_o.h5"), data_dict=data)


def load_store_here(library, folder, quick):
    """Runs in the fresh interpreter of "storeload": prints one JSON line."""
    tasks = SIZES["storeload_tasks"][quick]
    budget = SIZES["storeload_budget_s"][quick]
    try:
        start = time.perf_counter()
        if library == "pmp":
            from pmp import Executor  # noqa: F401 - imported before the timing
        else:
            from executorlib import SingleNodeExecutor  # noqa: F401
        import_seconds = time.perf_counter() - start
        files_before = _files_of(folder)
        start = time.perf_counter()
        exe, _ = _store_executor(library, folder)
        created = time.perf_counter()
        futures = [exe.submit(inc, i) for i in range(tasks)]
        submitted = time.perf_counter()
        finished = _wait_until(futures, start + budget)
        seconds = time.perf_counter() - start
        if not finished:
            done = sum(future.done() for future in futures)
            print(
                json.dumps(
                    {
                        "value": budget,
                        "at_least": True,
                        "note": f"stopped at {budget} s: {done:,} of {tasks:,} loaded",
                        "import_s": import_seconds,
                    }
                ),
                flush=True,
            )
            os._exit(0)
        results = [future.result() for future in futures]
        if results != [i + 1 for i in range(tasks)]:
            raise RuntimeError("wrong results")
        if library == "pmp":
            computed = sum(future.from_store is None for future in futures)
        else:  # no from_store: a call that ran would have written (or rewritten) its file
            files_after = _files_of(folder)
            computed = len(set(files_after.items()) - set(files_before.items()))
        if computed:
            raise RuntimeError(f"{computed:,} of {tasks:,} calls did not come from the store")
        result = {
            "value": seconds,
            "note": "",
            "import_s": import_seconds,
            "create_s": created - start,
            "submit_s": submitted - created,
            "results_s": start + seconds - submitted,
            "tasks": tasks,
        }
    except BaseException as error:  # noqa: BLE001 - reported in the table cell
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        os._exit(0)
    print(json.dumps(result), flush=True)
    exe.shutdown(wait=True)
    os._exit(0)


def _files_of(folder):
    """{path: mtime_ns} of every file under folder."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            try:
                found[path] = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                pass
    return found


SCENARIO_FUNCTIONS = {
    "throughput": scenario_throughput,
    "roundtrip": scenario_roundtrip,
    "chain": scenario_chain,
    "fresh": scenario_fresh,
    "numpy": scenario_numpy,
    "rss": scenario_rss,
    "rssrun": scenario_rssrun,
    "storesubmit": scenario_storesubmit,
    "storeload": scenario_storeload,
}


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_here(library, scenario, quick):
    """Runs in the subprocess: prints one JSON line, then tears the executor down."""
    try:
        if library == "floor":
            if scenario not in FLOORS:
                raise NotApplicable("no floor measured")
            exe, result = None, FLOORS[scenario](quick)
        else:
            exe, result = SCENARIO_FUNCTIONS[scenario](library, quick)
    except NotApplicable as reason:
        print(json.dumps({"not_applicable": str(reason)}), flush=True)
        os._exit(0)
    except BaseException as error:  # noqa: BLE001 - reported in the table cell
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        os._exit(0)
    print(json.dumps(result), flush=True)
    if scenario == "rss":
        # Cancel what is queued; the harness kills the blocked worker with the process group.
        # (executorlib's dependency layer would otherwise still run every queued task.)
        exe.shutdown(wait=False, cancel_futures=True)
        os._exit(0)
    if exe is not None:  # None: the scenario shut its executors down itself
        exe.shutdown(wait=True)
    os._exit(0)


# ---------------------------------------------------------------------------------------------
# The harness.


def run_one(library, scenario, quick, timeout):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--measure",
        library,
        scenario,
        *(["--quick"] if quick else []),
    ]
    scratch = tempfile.mkdtemp(prefix="pmp-bench-")  # the measurement's TMPDIR, removed after
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=scratch)
    start = time.perf_counter()
    # Files, not pipes: worker processes inherit the output streams, and a pipe would stay open
    # (and communicate() wait) for as long as a leftover worker lives.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, text=True, env=env, start_new_session=True
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process.pid)  # on a timeout, and worker processes a library left behind
        process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - start
    result = _last_json(stdout)
    if result is None:
        if timed_out:
            result = {"error": f"timed out after {timeout} s"}
        else:
            lines = [line for line in stderr.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {process.returncode}, no output"
            result = {"error": last}
    elif timed_out:
        result["note"] = _join(result.get("note"), "shutdown hung")
    result["wall_s"] = round(elapsed, 2)
    return result


def combine_rounds(results):
    """One library's rounds of a scenario as one result: the median value."""
    values = [result["value"] for result in results if "value" in result]
    if not values:
        return results[-1]
    combined = dict(next(result for result in results if "value" in result))
    combined["value"] = statistics.median(values)
    combined["rounds"] = values
    combined["wall_s"] = round(sum(result["wall_s"] for result in results), 2)
    if len(values) < len(results):
        combined["note"] = _join(combined.get("note"), f"{len(values)} of {len(results)} rounds")
    return combined


def print_round_ratios(measured, higher_is_better):
    for peer in ("executorlib", "ppe"):
        if "pmp" not in measured or peer not in measured:
            continue
        ratios = [
            ratio({"pmp": ours, peer: theirs}, higher_is_better, peer).split(" ")[0]
            for ours, theirs in zip(measured["pmp"], measured[peer], strict=True)
        ]
        print(f"  pmp ÷ {COLUMNS[peer]}, round by round: {', '.join(ratios)}")


def _last_json(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _join(*parts):
    return "; ".join(part for part in parts if part)


def versions():
    found = {"python": platform.python_version()}
    for name in ("pmp", "executorlib", "distributed", "numpy", "psutil", "cloudpickle", "pyzmq"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine():
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    start = time.perf_counter()
    for _ in range(5):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    python_start_ms = (time.perf_counter() - start) * 1e3 / 5
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python_start_ms": round(python_start_ms, 1),
    }


def format_value(result, unit):
    if "not_applicable" in result:
        return f"n/a ({result['not_applicable']})"
    if "error" in result:
        text = result["error"].replace("|", "/").replace("\n", " ")
        return "error: " + (text if len(text) <= 70 else text[:67] + "...")
    value = result["value"]
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    text = f"{value:,.{digits}f}"
    if result.get("at_least"):  # a measurement stopped at its limit
        text = "> " + text
    tree = result.get("tree_increase_mb")
    if unit == "MB" and tree is not None and abs(tree - value) > 1:
        text += f" (with child processes {tree:,.0f})"
    note = result.get("note")
    return f"{text} ({note})" if note else text


def ratio(results, higher_is_better, peer="executorlib"):
    ours, theirs = results.get("pmp"), results.get(peer)
    if not ours or not theirs or "value" not in ours or "value" not in theirs:
        return "n/a"
    if theirs.get("no_ratio"):  # a reference figure, not the same measure
        return "n/a"
    if theirs["value"] <= 0 or ours["value"] < 0 or ours.get("at_least"):
        return "n/a"
    value = ours["value"] / theirs["value"]
    better = value > 1 if higher_is_better else value < 1
    bound = "< " if theirs.get("at_least") else ""  # theirs is a lower bound (lower is better)
    return f"{bound}{value:.3g}× ({'pmp better' if better else 'pmp worse'})"


def print_table(table, libraries, quick):
    # The ratios the targets are read from: each peer measured in this run.
    peers = [lib for lib in ("executorlib", "ppe", "floor") if lib in libraries]
    header = ["scenario", *(COLUMNS[lib] for lib in libraries)]
    header += [f"pmp ÷ {COLUMNS[lib]}" for lib in peers]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    rows = dict(table)
    for derived, (source, key) in DERIVED.items():
        if source in table:
            rows[derived] = {lib: _derive(result, key) for lib, result in table[source].items()}
    for scenario, results in rows.items():
        label, unit, higher = SCENARIOS[scenario]
        label = _label(scenario, label, quick)
        arrow = "higher is better" if higher else "lower is better"
        cells = [f"{label} [{unit}, {arrow}]"]
        cells += [format_value(results[lib], unit) for lib in libraries]
        cells += [ratio(results, higher, peer) for peer in peers]
        print("| " + " | ".join(cells) + " |")


def _derive(result, key):
    if "error" in result:
        return {"error": "see above"}
    if key not in result:  # not applicable, or no such figure
        return {k: v for k, v in result.items() if k == "not_applicable"} or {"error": "n/a"}
    return {"value": result[key], "note": result.get("note")}


def _label(scenario, label, quick):
    q = int(quick)
    if scenario == "throughput":
        return f"{label}, {SIZES['throughput_tasks'][q]:,} tasks"
    if scenario == "chain":
        return label.replace("N", str(SIZES["chain_links"][q]))
    if scenario == "fresh":
        return f"{label}, {SIZES['fresh_tasks'][q]} tasks"
    if scenario in ("rss", "rssrun"):
        return label.replace("100,000", f"{SIZES[scenario + '_tasks'][q]:,}")
    if scenario == "storesubmit":
        return f"{label}, {SIZES['storesubmit_calls'][q]:,} calls"
    if scenario == "storeload":
        return label.replace("10,000", f"{SIZES['storeload_tasks'][q]:,}")
    return label


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated libraries: " + ",".join(LIBRARIES))
    parser.add_argument("--scenarios", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--timeout", type=float, default=150, help="seconds per measurement")
    parser.add_argument(
        "--measure", nargs=2, metavar=("LIBRARY", "SCENARIO"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--load-store", nargs=2, metavar=("LIBRARY", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        measure_here(*args.measure, int(args.quick))
        return
    if args.load_store:
        load_store_here(*args.load_store, int(args.quick))
        return

    libraries = _choose(args.only, LIBRARIES, "library")
    measured = tuple(name for name in SCENARIOS if name not in DERIVED)
    scenarios = _choose(args.scenarios, measured, "scenario")
    info = {"machine": machine(), "versions": versions(), "quick": args.quick}
    m, v = info["machine"], info["versions"]
    print(
        f"machine: {m['nproc']} usable CPUs (cpu_count {m['cpu_count']}), {m['platform']}, "
        f"load average {m['loadavg']}"
    )
    print(f"python: {m['python']} ({m['executable']}); `python -c pass` {m['python_start_ms']} ms")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "python"))
    print(flush=True)
    table = {}
    started = time.perf_counter()
    for scenario in scenarios:
        rounds = ROUNDS.get(scenario, (1, 1))[int(args.quick)]
        measured = {library: [] for library in libraries}
        for round_ in range(rounds):
            for library in libraries:
                if round_ > 0 and library not in IN_EVERY_ROUND:
                    continue
                result = run_one(library, scenario, args.quick, args.timeout)
                measured[library].append(result)
                shown = format_value(result, SCENARIOS[scenario][1])
                name = f"{scenario} {round_ + 1}/{rounds}" if rounds > 1 else scenario
                print(f"  {name:<15} {library:<12} {shown}  [{result['wall_s']} s]", flush=True)
        table[scenario] = {
            library: combine_rounds(results) for library, results in measured.items()
        }
        if rounds > 1:
            print_round_ratios(measured, SCENARIOS[scenario][2])
    print(f"\n(total {time.perf_counter() - started:.0f} s)\n")
    print_table(table, libraries, args.quick)
    if args.json:
        info["results"] = table
        with open(args.json, "w") as file:
            json.dump(info, file, indent=2)
        print(f"\nwritten: {args.json}")


def _choose(text, known, what):
    if not text:
        return known
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(known)})")
    return chosen


if __name__ == "__main__":
    main()
