"""The flux backend end to end: the seed's Flux examples inside `flux start`.

Flux (flux-core) cannot be installed on the machines this project's CI runs
on (no registry they reach carries it), so these tests run where `flux` is on
PATH and skip elsewhere; the exact `flux run` command lines are unit-tested in
scheduler/src/backend/flux.rs.
"""

import os
import shutil

import pytest

SEED_FLUX_EXAMPLES = """
import flux.job
from pmp import Executor

def calc(*args):
    return sum(*args)

def calc_function(parameter_a, parameter_b):
    return parameter_a + parameter_b

def mpi_calc(i):
    from mpi4py import MPI
    return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()

with flux.job.FluxExecutor() as flux_exe:
    with Executor(max_cores=1, executor=flux_exe) as exe:
        print(exe.info["backend"], exe.submit(sum, [1, 1]).result())
    with Executor(max_cores=2, executor=flux_exe) as exe:
        print([f.result() for f in [exe.submit(calc, [2, i]) for i in range(1, 5)]])
        print(list(exe.map(calc, [[2, 1], [2, 2], [2, 3], [2, 4]])))
    with Executor(max_cores=2, executor=flux_exe) as exe:
        future_1 = exe.submit(calc_function, 1, parameter_b=2, resource_dict={"cores": 1})
        future_2 = exe.submit(calc_function, 1, parameter_b=future_1, resource_dict={"cores": 1})
        print(future_2.result())
    with Executor(max_cores=2, cores_per_worker=2, executor=flux_exe) as exe:
        print(exe.submit(mpi_calc, 3).result())
"""


@pytest.fixture
def flux():
    if shutil.which("flux") is None:
        pytest.skip(
            "Flux is not installed: flux-core is in no registry this machine reaches "
            "(command lines are unit-tested in scheduler/src/backend/flux.rs)"
        )


@pytest.mark.timeout(300)
def test_the_seed_flux_examples_inside_flux_start(flux, mpi, run_script):
    done = run_script(SEED_FLUX_EXAMPLES, ("flux", "start"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "flux 2",
        "[3, 4, 5, 6]",
        "[3, 4, 5, 6]",
        "4",
        "[(3, 2, 0), (3, 2, 1)]",
    ]


FAKE_FLUX = """#!/bin/sh
# Answers only what pmp asks when an Executor is made: `flux resource info`.
[ "$1 $2" = "resource info" ] && echo "1 Node, 4 Cores, 2 GPUs" && exit 0
exit 1
"""


def test_the_flux_instances_gpus_are_counted_and_bound_what_a_call_may_ask(run_script, tmp_path):
    # Runs without Flux: a stand-in `flux` first on PATH answers the one query.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flux").write_text(FAKE_FLUX)
    (bin_dir / "flux").chmod(0o755)
    done = run_script(
        """
        from pmp import Executor

        with Executor(max_cores=2, gpus_per_worker=1, backend="flux") as exe:
            print(exe.info["backend"], exe.info["gpu_count"], exe.info["gpus"])
            try:
                exe.submit(sum, [1], resource_dict={"gpus_per_core": 3})
            except ValueError as error:
                print(error)
        """,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLUX_URI": "local:///nowhere"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "flux 2 []",
        "resource_dict key 'gpus_per_core': 3 GPU(s) requested but 2 in the flux allocation",
    ]


@pytest.mark.timeout(120)
def test_oversubscribe_is_refused_by_the_flux_backend(flux, run_script):
    done = run_script(
        """
        from pmp import Executor

        try:
            Executor(max_cores=1, oversubscribe=True)
        except ValueError as error:
            print(str(error).split(":")[0])
        with Executor(max_cores=1) as exe:
            try:
                exe.submit(sum, [1], resource_dict={"oversubscribe": True})
            except ValueError as error:
                print(str(error).split(":")[0])
            print(exe.submit(sum, [1, 1]).result(timeout=60))
        """,
        ("flux", "start"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [
        "oversubscribe=True",
        "resource_dict key 'oversubscribe'",
        "2",
    ]
