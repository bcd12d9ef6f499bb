"""The `launcher` parameter against the real Slurm on loopback: inside an
allocation the Executor says which launcher starts its workers (node
agents by default, srun steps where asked), and outside one, where every
call is a batch job, a launcher is refused rather than ignored."""

import pytest


def lines(done):
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


@pytest.mark.timeout(240)
def test_inside_an_allocation_info_names_the_launcher(slurm, run_script):
    done = run_script(
        """
        from pmp import Executor

        with Executor(backend="slurm") as exe:
            print(exe.info["launcher"])
        with Executor(backend="slurm", launcher="step") as exe:
            print(exe.info["launcher"], exe.submit(sum, [1, 1]).result(timeout=120))
        """,
        ("salloc", "-Q", "-n", "2", "--time=5"),
        timeout=200,
    )
    assert lines(done) == ["agent", "step 2"]


@pytest.mark.timeout(120)
def test_outside_any_allocation_a_launcher_is_refused(slurm, run_script):
    done = run_script(
        """
        import os

        os.environ.pop("SLURM_JOB_ID", None)
        from pmp import Executor

        try:
            Executor(backend="slurm", launcher="agent", cache_directory="store")
        except ValueError as error:
            print(error)
        exe = Executor(backend="slurm", cache_directory="store")
        print(exe.info["launcher"])
        exe.shutdown()
        """,
        timeout=100,
    )
    refused = (
        "launcher='agent' chooses how srun or flux start workers inside a Slurm allocation "
        "or a Flux instance, and this slurm executor runs outside any, where each worker or "
        "call is a job of its own: drop launcher (or run inside salloc, sbatch or flux alloc "
        "with backend='slurm' or 'flux')"
    )
    assert lines(done) == [refused, "step"]
