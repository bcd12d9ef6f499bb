"""Node agents (issue 24, bench row 10): fresh-process calls inside a
two-node Slurm allocation, pmp's agents against `launcher="step"` and
executorlib's SlurmJobExecutor in the same allocation, and the local
backend at the same parallelism as the floor per core.

    python bench/bench_agents.py                 # salloc -N 2 --ntasks-per-node=4
    python bench/bench_agents.py --tasks 200 --repeat 5

Each measurement runs in its own subprocess inside its own `salloc` (clean
state, a timeout against hangs): a batch of trivial calls submitted at once,
after one warm-up call, each call a fresh process; the figure is calls per
second, the median of --repeat batches. The test machine has two real
cores under its two virtual nodes of 4 CPUs each, so the rows that compare
per core run every library with `max_cores=2`: read the ratios.
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

    library, tasks, repeat, max_cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def trivial(i):
        return i

    if library.startswith("pmp"):
        from pmp import Executor
        backend, _, launcher = library.partition(":")[2].partition(":")
        options = {"backend": backend, "max_cores": max_cores}
        if launcher:
            options["launcher"] = launcher
        make = lambda: Executor(**options)
    else:
        import executorlib
        make = lambda: executorlib.SlurmJobExecutor(max_cores=max_cores)
    rates = []
    with make() as exe:
        exe.submit(trivial, 0).result()  # warm-up: imports, first start
        for _ in range(repeat):
            start = time.perf_counter()
            futures = [exe.submit(trivial, i) for i in range(tasks)]
            for future in futures:
                future.result()
            rates.append(tasks / (time.perf_counter() - start))
    print(json.dumps(rates))
    """
)

SALLOC = ("salloc", "-Q", "-N", "2", "--ntasks-per-node=4", "--time=20")


def measure(library, tasks, repeat, max_cores, timeout, launcher):
    command = [*launcher, sys.executable, "-c", MEASURE, library, str(tasks), str(repeat)]
    command.append(str(max_cores))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1][:100]
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1])), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--step-tasks", type=int, default=20, help="fewer: a step is slow")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    if not shutil.which("salloc"):
        sys.exit("no salloc on PATH: start the test Slurm (SLURM_CI_NODES=2 .ci/slurm-up.sh)")
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows = [
        ("pmp, agents (launcher='agent')", "pmp:slurm:agent", args.tasks, 8, SALLOC),
        ("pmp, a step per call (launcher='step')", "pmp:slurm:step", args.step_tasks, 8, SALLOC),
        ("executorlib SlurmJobExecutor", "executorlib", args.step_tasks, 8, SALLOC),
        ("pmp, agents, max_cores=2", "pmp:slurm:agent", args.tasks, 2, SALLOC),
        ("pmp, a step per call, max_cores=2", "pmp:slurm:step", args.step_tasks, 2, SALLOC),
        ("pmp, local backend, max_cores=2 (the floor per core)", "pmp:local", args.tasks, 2, ()),
    ]
    results = {}
    print("| calls | calls/s | tasks |")
    print("|---|---|---|")
    for label, library, tasks, cores, launcher in rows:
        rate, error = measure(library, tasks, args.repeat, cores, args.timeout, launcher)
        results[label] = rate
        print(f"| {label} | {f'{rate:.1f}' if rate else error} | {tasks} |", flush=True)

    def ratio(a, b):
        a, b = results[a], results[b]
        return f"{a / b:.1f}×" if a and b else "n/a"

    print()
    print(f"agents ÷ steps, max_cores=8: {ratio(rows[0][0], rows[1][0])}")
    print(f"agents ÷ steps, max_cores=2: {ratio(rows[3][0], rows[4][0])}")
    print(f"agents ÷ executorlib, max_cores=8: {ratio(rows[0][0], rows[2][0])}")
    print(f"agents ÷ local at max_cores=2: {ratio(rows[3][0], rows[5][0])}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
