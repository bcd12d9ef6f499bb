"""Elastic allocations from a login node (issue 25): 200 one-second calls,
time from the first submit to the last result, outside any allocation on the
test Slurm (two nodes of 4 CPUs), in one run:

- pmp, `Executor(backend="slurm", allocation=Allocation(nodes=1, ...,
  max_allocations=2))`: one-node allocations of node agents, each call a
  fresh process forked on a node;
- pmp, a batch job per call (`Executor(backend="slurm")`, what a login-node
  Executor does without an allocation);
- dask-jobqueue, `SLURMCluster(cores=4, processes=4, ...).adapt(maximum_jobs=2)`
  with `client.map` (one-node jobs of 4 worker processes, grown by dask's
  adaptive scaling);
- the floor: 200 one-second calls on 8 CPUs can take no less than 25 s.

    python bench/bench_allocations.py            # needs `pip install dask-jobqueue`
    python bench/bench_allocations.py --calls 40 --only pmp-allocation

Each measurement runs in its own subprocess (clean state, a timeout), with
every SLURM_* variable removed, as on a login node; whatever a measurement
left in Slurm's queue is cancelled by its job name.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

MEASURE = textwrap.dedent(
    """
    import json, sys, time

    library, calls = sys.argv[1], int(sys.argv[2])

    def one_second(i):
        import time
        time.sleep(1)
        return i

    if library == "dask-jobqueue":
        from dask.distributed import Client
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(
            cores=4, processes=4, memory="2GB", walltime="00:30:00", job_name="bench-dask",
            scheduler_options={"host": "127.0.0.1"}, interface="lo",
        )
        cluster.adapt(minimum_jobs=0, maximum_jobs=2)
        client = Client(cluster)
        start = time.perf_counter()
        results = client.gather(client.map(one_second, range(calls), pure=False))
        took = time.perf_counter() - start
        client.close()
        cluster.close()
    else:
        from pmp import Allocation, Executor

        if library == "pmp-allocation":
            allocation = Allocation(nodes=1, time_limit="30:00", max_allocations=2,
                                    backlog=2, idle_timeout=60)
            exe = Executor(backend="slurm", allocation=allocation)
        else:  # a batch job per call
            exe = Executor(backend="slurm", cache_directory="bench_cache")
        with exe:
            start = time.perf_counter()
            futures = [exe.submit(one_second, i) for i in range(calls)]
            results = [f.result() for f in futures]
            took = time.perf_counter() - start
    assert results == list(range(calls)), results[:5]
    print(json.dumps(took))
    """
)

LIBRARIES = ("pmp-allocation", "pmp-batch-jobs", "dask-jobqueue")


def outside():
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def measure(library, calls, timeout):
    with tempfile.TemporaryDirectory() as here:
        script = os.path.join(here, "measure.py")
        with open(script, "w") as f:
            f.write(MEASURE)
        try:
            done = subprocess.run(
                [sys.executable, script, library, str(calls)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=here,
                env=outside(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout} s"
        finally:
            # What the measurement left queued or running: its jobs by name
            # (a batch job per call ends with its call, waited for above).
            listed = subprocess.run(
                ["squeue", "-h", "-u", str(os.getuid()), "-o", "%i %j"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.splitlines()
            ids = [
                job
                for job, _, name in (line.partition(" ") for line in listed)
                if name.startswith(("bench-dask", "pmp-alloc-"))
            ]
            if ids:
                subprocess.run(["scancel", *ids], check=False, capture_output=True)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--only", nargs="*", choices=LIBRARIES, default=LIBRARIES)
    parser.add_argument("--timeout", type=int, default=900)
    arguments = parser.parse_args()
    if not shutil.which("sbatch"):
        sys.exit("needs Slurm (the test Slurm: .ci/slurm-up.sh with SLURM_CI_NODES=2)")
    cpus = 8
    floor = arguments.calls / cpus
    print(
        f"{arguments.calls} one-second calls from a login node; floor {floor:.1f} s on {cpus} CPUs"
    )
    rows = {}
    for library in arguments.only:
        took, why = measure(library, arguments.calls, arguments.timeout)
        rows[library] = took
        shown = f"{took:.1f} s ({took / floor:.2f}x the floor)" if took else why
        print(f"  {library:16} {shown}", flush=True)
    mine = rows.get("pmp-allocation")
    for peer in ("pmp-batch-jobs", "dask-jobqueue"):
        if mine and rows.get(peer):
            print(f"  pmp-allocation against {peer}: {rows[peer] / mine:.2f}x faster")


if __name__ == "__main__":
    main()
