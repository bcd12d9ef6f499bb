"""SlurmJobExecutor (srun steps) inside an allocation smaller than what it
is asked for: refused when it is made or the call submitted, as executorlib
refuses it, instead of failing later with srun's message. Against the real
Slurm on loopback, inside `salloc -n 2`."""

import pytest

SALLOC_TWO = ("salloc", "-Q", "-n", "2", "--time=5")


def lines(done):
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(240)
def test_workers_and_calls_beyond_the_allocations_cpus_are_refused_at_once(slurm, run_script):
    done = run_script(
        """
        from pmp import SlurmJobExecutor

        for make in (
            lambda: SlurmJobExecutor(max_workers=3, block_allocation=True),
            lambda: SlurmJobExecutor(max_workers=1, resource_dict={"cores": 3}),
        ):
            try:
                make().shutdown()
                print("made")
            except ValueError as error:
                print(error)
        with SlurmJobExecutor(max_workers=4) as exe:
            try:
                exe.submit(sum, [1], resource_dict={"cores": 3}).result(timeout=60)
                print("ran")
            except ValueError as error:
                print(error)
            print(exe.submit(sum, [1, 1]).result(timeout=60))
        """,
        SALLOC_TWO,
        timeout=180,
    )
    where = (
        "the Slurm allocation's 2 CPUs (SLURM_NTASKS x SLURM_CPUS_PER_TASK), which srun "
        "steps cannot leave"
    )
    instead = "ask salloc/sbatch for more CPUs, or use SlurmClusterExecutor (a batch job per call)"
    pool = "max_workers=3 block-allocated workers of 1 cores x 1 threads_per_core need 3 CPUs"
    assert lines(done) == [
        f"{pool} at once, more than {where}; lower max_workers or cores, {instead}",
        f"a worker of 3 cores x 1 threads_per_core can never fit in {where}; lower it, {instead}",
        f"resource_dict {{'cores': 3}}: 3 cores x 1 threads_per_core can never fit in {where}; "
        + f"lower it, {instead}",
        "2",
    ]
