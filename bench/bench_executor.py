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

LIBRARIES = ("pmp", "executorlib", "ppe", "dask")
COLUMNS = {
    "pmp": "pmp",
    "executorlib": "executorlib",
    "ppe": "ProcessPoolExecutor",
    "dask": "dask.distributed",
}

# name -> (row label, unit, higher_is_better)
SCENARIOS = {
    "throughput": ("tiny-task throughput, 2 workers, block allocation", "tasks/s", True),
    "roundtrip": ("sequential round trip (submit + result), 1 worker", "ms", False),
    "chain": ("chain of N dependent futures, time per link", "ms/link", False),
    "fresh": ("fresh process per task, max_cores=2", "tasks/s", True),
    "numpy": ("100 MB numpy argument, 1 worker", "MB/s", True),
    "rss": ("peak RSS increase, 100,000 tasks queued behind a busy worker", "MB", False),
    # Derived from the "rss" measurement, not run on its own.
    "submit": ("submit() rate while queueing those tasks", "calls/s", True),
}
DERIVED = {"submit": ("rss", "submit_per_s")}

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


def make_executor(library, mode, workers=1):
    """mode: "block" (long-lived workers) or "fresh" (a new process per task)."""
    if library == "pmp":
        from pmp import Executor

        if mode == "block":
            return Executor(max_workers=workers, block_allocation=True), ""
        return Executor(max_cores=2), ""
    if library == "executorlib":
        from executorlib import SingleNodeExecutor

        if mode == "block":
            return SingleNodeExecutor(max_workers=workers, block_allocation=True), ""
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


def _peak_rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def scenario_rss(library, quick):
    import gc

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
    gc.collect()
    own_before, tree_before = _rss_now()
    if own_before is None:
        own_before = _peak_rss()
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


SCENARIO_FUNCTIONS = {
    "throughput": scenario_throughput,
    "roundtrip": scenario_roundtrip,
    "chain": scenario_chain,
    "fresh": scenario_fresh,
    "numpy": scenario_numpy,
    "rss": scenario_rss,
}


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_here(library, scenario, quick):
    """Runs in the subprocess: prints one JSON line, then tears the executor down."""
    try:
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
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                continue
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
    digits = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    text = f"{value:,.{digits}f}"
    tree = result.get("tree_increase_mb")
    if unit == "MB" and tree is not None and abs(tree - value) > 1:
        text += f" (with child processes {tree:,.0f})"
    note = result.get("note")
    return f"{text} ({note})" if note else text


def ratio(results, higher_is_better):
    ours, theirs = results.get("pmp"), results.get("executorlib")
    if not ours or not theirs or "value" not in ours or "value" not in theirs:
        return "n/a"
    if theirs["value"] == 0:
        return "n/a"
    value = ours["value"] / theirs["value"]
    better = value > 1 if higher_is_better else value < 1
    return f"{value:.3g}× ({'pmp better' if better else 'pmp worse'})"


def print_table(table, libraries, quick):
    header = ["scenario", *(COLUMNS[lib] for lib in libraries), "pmp ÷ executorlib"]
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
        cells.append(ratio(results, higher))
        print("| " + " | ".join(cells) + " |")


def _derive(result, key):
    if "error" in result:
        return {"error": "see above"}
    return {"value": result[key], "note": result.get("note")}


def _label(scenario, label, quick):
    q = int(quick)
    if scenario == "throughput":
        return f"{label}, {SIZES['throughput_tasks'][q]:,} tasks"
    if scenario == "chain":
        return label.replace("N", str(SIZES["chain_links"][q]))
    if scenario == "fresh":
        return f"{label}, {SIZES['fresh_tasks'][q]} tasks"
    if scenario == "rss":
        return label.replace("100,000", f"{SIZES['rss_tasks'][q]:,}")
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
    args = parser.parse_args()
    if args.measure:
        measure_here(*args.measure, int(args.quick))
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
        table[scenario] = {}
        for library in libraries:
            result = run_one(library, scenario, args.quick, args.timeout)
            table[scenario][library] = result
            shown = format_value(result, SCENARIOS[scenario][1])
            print(f"  {scenario:<10} {library:<12} {shown}  [{result['wall_s']} s]", flush=True)
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
