"""A large argument shared by many calls on two nodes (issue 24, bench row
11): 100 fresh-process calls that all take the same 45 MB numpy array,
inside a two-node Slurm allocation; pmp's node agents against executorlib's
SlurmJobExecutor in the same kind of allocation, and pmp's local backend
(one host, shared memory) as the floor.

    python bench/bench_node_buffers.py              # salloc -N 2 --ntasks-per-node=4
    python bench/bench_node_buffers.py --calls 50 --repeat 5

Each measurement runs in its own subprocess inside its own `salloc` (clean
state, a timeout against hangs): after one warm-up call with the array, the
calls are submitted at once and every result is checked; the figure is the
seconds from the first submit to the last result, the median of --repeat
batches. pmp also prints what its executor says it sent to each node
(`exe.info["agents"]`): the array is to cross to each node once.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np

    library, calls, repeat, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    array = np.random.default_rng(0).random(size // 8)

    def pick(array, i):
        return float(array[i]), array.nbytes

    if library.startswith("pmp"):
        import os
        from pmp import Executor
        backend = library.partition(":")[2]
        cores = 8 if backend == "slurm" else min(8, os.cpu_count())
        make = lambda: Executor(backend=backend, max_cores=cores)
    else:
        import executorlib
        make = lambda: executorlib.SlurmJobExecutor(max_cores=8)
    seconds = []
    with make() as exe:
        exe.submit(pick, array, 0).result()  # warm-up: imports, first start
        for _ in range(repeat):
            start = time.perf_counter()
            futures = [exe.submit(pick, array, i) for i in range(calls)]
            results = [future.result() for future in futures]
            seconds.append(time.perf_counter() - start)
            assert results == [(float(array[i]), array.nbytes) for i in range(calls)]
        sent = getattr(exe, "info", {}).get("agents") if library.startswith("pmp") else None
    print(json.dumps({"seconds": seconds, "sent": sent}))
    """
)

SALLOC = ("salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--time=20")


def measure(library, calls, repeat, size, timeout, launcher):
    command = [*launcher, sys.executable, "-c", MEASURE, library, str(calls), str(repeat)]
    command.append(str(size))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, None, f"timed out after {timeout} s"
    if done.returncode != 0:
        return None, None, (done.stderr.strip().splitlines() or ["failed"])[-1][:100]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return statistics.median(report["seconds"]), report["sent"], None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--size", type=int, default=45_000_000, help="the array's bytes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    if not shutil.which("salloc"):
        sys.exit("no salloc on PATH: start the test Slurm (SLURM_CI_NODES=2 .ci/slurm-up.sh)")
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows = [
        ("pmp, node agents (backend='slurm')", "pmp:slurm", SALLOC),
        ("executorlib SlurmJobExecutor", "executorlib", SALLOC),
        ("pmp, local backend (one host: the floor)", "pmp:local", ()),
    ]
    results = {}
    print(f"| {args.calls} calls sharing {args.size / 1e6:.0f} MB | s | sent to each node |")
    print("|---|---|---|")
    for label, library, launcher in rows:
        seconds, sent, error = measure(
            library, args.calls, args.repeat, args.size, args.timeout, launcher
        )
        results[label] = seconds
        cell = f"{seconds:.2f}" if seconds else error
        print(f"| {label} | {cell} | {json.dumps(sent) if sent else ''} |", flush=True)
    pmp, peer, floor = (results[row[0]] for row in rows)
    if pmp and peer:
        print(f"\nagents ÷ executorlib (speed-up): {peer / pmp:.1f}×")
    if pmp and floor:
        print(f"agents ÷ local (time): {pmp / floor:.2f}×")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
