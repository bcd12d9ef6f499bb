"""The `launcher` parameter inside `flux start` (where `flux` is on PATH;
see test_flux.py): a flux run job per worker (node agents run under Slurm
so far: asking for them under Flux is refused, saying so), named in `info`."""

import shutil

import pytest


@pytest.mark.timeout(200)
def test_inside_a_flux_instance_info_names_the_launcher(mpi, run_script):
    if shutil.which("flux") is None:
        pytest.skip("Flux is not installed: flux-core is in no registry this machine reaches")
    done = run_script(
        """
        from pmp import Executor

        with Executor(backend="flux") as exe:
            print(exe.info["launcher"])
        try:
            Executor(backend="flux", launcher="agent")
        except ValueError as e:
            print("refused:", "no node agents yet" in str(e))
        with Executor(backend="flux", launcher="step") as exe:
            print(exe.info["launcher"], exe.submit(sum, [1, 1]).result(timeout=120))
        """,
        ("flux", "start"),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["step", "refused: True", "step 2"]
