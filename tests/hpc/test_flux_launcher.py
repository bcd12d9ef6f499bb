"""The `launcher` parameter inside `flux start` (where `flux` is on PATH;
see test_flux.py): node agents by default, a flux job per worker when asked
for, named in `info`."""

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
            print(exe.info["launcher"], exe.submit(sum, [1, 1]).result(timeout=120))
        with Executor(backend="flux", launcher="agent") as exe:
            print(exe.info["launcher"])
        with Executor(backend="flux", launcher="step") as exe:
            print(exe.info["launcher"], exe.submit(sum, [1, 1]).result(timeout=120))
        """,
        ("flux", "start"),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["agent 2", "agent", "step 2"]
