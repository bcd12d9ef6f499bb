"""Fresh-process-per-task and MPI (cores=2) tasks: pmp against executorlib, in
one run, on the local backend, under Slurm's srun and inside `flux start`.

    python bench/bench_hpc.py            # local, then the same inside `salloc -n 4`
    python bench/bench_hpc.py --no-slurm # local only
    # where `flux` is on PATH, also inside `flux start` (FluxJobExecutor for executorlib)

Each measurement runs in its own subprocess (clean state, a timeout against
hangs). Figures are tasks per second over a batch submitted at once; the
median of --repeat batches is reported. On a 2-core, shared machine read the
ratios, not the absolute numbers.
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

    library, scenario, tasks, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def trivial(i):
        return i

    def mpi_ranks(i):
        from mpi4py import MPI
        return i, MPI.COMM_WORLD.Get_rank()

    cores = 2 if scenario == "mpi" else 1
    function = mpi_ranks if scenario == "mpi" else trivial
    if library == "pmp":
        from pmp import Executor
        make = lambda: Executor(max_cores=2, cores_per_worker=cores)
        submit = lambda exe, i: exe.submit(function, i)
    else:
        import os
        import executorlib
        kind = (executorlib.FluxJobExecutor if os.environ.get("FLUX_URI")
                else executorlib.SlurmJobExecutor if os.environ.get("SLURM_JOB_ID")
                else executorlib.SingleNodeExecutor)
        make = lambda: kind(max_cores=2, resource_dict={"cores": cores})
        submit = lambda exe, i: exe.submit(function, i)
    rates = []
    with make() as exe:
        submit(exe, 0).result()  # warm-up: imports, first start
        for _ in range(repeat):
            start = time.perf_counter()
            futures = [submit(exe, i) for i in range(tasks)]
            for future in futures:
                future.result()
            rates.append(tasks / (time.perf_counter() - start))
    print(json.dumps(rates))
    """
)


def measure(library, scenario, tasks, repeat, timeout, launcher=()):
    command = [*launcher, sys.executable, "-c", MEASURE, library, scenario, str(tasks), str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1][:80]
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1])), None


def table(rows):
    print("| scenario | pmp (tasks/s) | executorlib (tasks/s) | pmp ÷ executorlib |")
    print("|---|---|---|---|")
    for name, (pmp, pmp_error), (peer, peer_error) in rows:
        ratio = f"{pmp / peer:.1f}×" if pmp and peer else "n/a"
        print(
            f"| {name} | {f'{pmp:.1f}' if pmp else pmp_error} | "
            f"{f'{peer:.1f}' if peer else peer_error} | {ratio} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-slurm", action="store_true", help="skip the srun part")
    parser.add_argument("--no-flux", action="store_true", help="skip the flux start part")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    places = [("local", ())]
    if not args.no_slurm and shutil.which("salloc"):
        places.append(("srun", ("salloc", "-Q", "-n", "4", "--time=20")))
    if args.no_flux or not shutil.which("flux"):
        print("flux: skipped (" + ("--no-flux" if args.no_flux else "no flux on PATH") + ")")
    else:
        # A one-broker instance on this machine: pmp's backend="auto" forks
        # each call's worker under its node agent (one job for all), where
        # executorlib's FluxJobExecutor submits one job per call to it.
        places.append(("flux", ("flux", "start")))
    rows = []
    for place, launcher in places:
        for scenario, label, tasks in (
            ("fresh", "fresh process per task, cores=1", args.tasks),
            ("mpi", "fresh MPI worker per task, cores=2", max(4, args.tasks // 2)),
        ):
            if place == "flux" and scenario == "mpi":
                continue  # MPI under Flux needs a PMI setup per MPI; not measured here
            results = [
                measure(lib, scenario, tasks, args.repeat, args.timeout, launcher)
                for lib in ("pmp", "executorlib")
            ]
            rows.append((f"{place}: {label} ({tasks} tasks, max_cores=2)", *results))
    table(rows)


if __name__ == "__main__":
    main()
