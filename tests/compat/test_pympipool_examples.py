"""The seed's examples (shared/seed/pympipool-examples.txt), with pmp.

Flux examples lose their `flux.job.FluxExecutor` context and `executor=` /
`backend="flux"` arguments, and "/home/jovyan/notebooks" becomes a temporary
directory. The MPI (cores_per_worker=2), GPU and SLURM examples are covered
elsewhere. Each example runs twice: in this process with functions importable
from this module, and as `python script.py` with functions defined in
`__main__` (which only cloudpickle can ship), comparing stdout to the seed.
"""

import os
from concurrent.futures import Future as BaseFuture
from concurrent.futures import ThreadPoolExecutor

import pytest
from pmp import Executor, Future

RESULT_TIMEOUT = 60


def calc_sum(*args):
    return sum(*args)


def calc_function(parameter_a, parameter_b):
    return parameter_a + parameter_b


def calc_init(i, j, k):
    return i + j + k


def init_function():
    return {"j": 4, "k": 3, "l": 2}


def calc_threads(i):
    import os

    os.environ["OMP_NUM_THREADS"] = "2"
    os.environ["OPENBLAS_NUM_THREADS"] = "2"
    os.environ["MKL_NUM_THREADS"] = "2"
    os.environ["VECLIB_MAXIMUM_THREADS"] = "2"
    os.environ["NUMEXPR_NUM_THREADS"] = "2"
    import numpy as np

    return i, int(np.arange(i + 1).sum())


def where_am_i():
    return os.getcwd()


# ---- in this process ---------------------------------------------------------


def test_compatibility_with_thread_pool_executor():
    with ThreadPoolExecutor(max_workers=1) as exe:
        expected = exe.submit(sum, [1, 1]).result()
    with Executor(max_cores=1) as exe:
        future = exe.submit(sum, [1, 1])
        assert isinstance(future, Future)
        assert isinstance(future, BaseFuture)
        assert future.result(timeout=RESULT_TIMEOUT) == expected == 2
        assert future.done()


def test_user_defined_function_four_submissions_two_cores():
    with Executor(max_cores=2) as exe:
        fs_1 = exe.submit(calc_sum, [2, 1])
        fs_2 = exe.submit(calc_sum, [2, 2])
        fs_3 = exe.submit(calc_sum, [2, 3])
        fs_4 = exe.submit(calc_sum, [2, 4])
        results = [f.result(timeout=RESULT_TIMEOUT) for f in (fs_1, fs_2, fs_3, fs_4)]
    assert results == [3, 4, 5, 6]


def test_map():
    with Executor(max_cores=2) as exe:
        assert list(exe.map(calc_sum, [[2, 1], [2, 2], [2, 3], [2, 4]])) == [3, 4, 5, 6]


def test_resource_assignment_on_both_levels(tmp_path):
    with Executor(
        max_cores=2,
        cores_per_worker=1,
        threads_per_core=1,
        gpus_per_worker=0,
        oversubscribe=False,
        cwd=str(tmp_path),
        hostname_localhost=False,
        block_allocation=False,
        init_function=None,
        command_line_argument_lst=[],
    ) as exe:
        future_obj = exe.submit(
            calc_function,
            1,
            parameter_b=2,
            resource_dict={
                "cores": 1,
                "threads_per_core": 1,
                "gpus_per_core": 0,
                "oversubscribe": False,
                "cwd": str(tmp_path),
                "hostname_localhost": False,
            },
        )
        assert future_obj.result(timeout=RESULT_TIMEOUT) == 3
        # "cwd defines which folder the task is executed in"
        cwd = exe.submit(where_am_i).result(timeout=RESULT_TIMEOUT)
    assert os.path.realpath(cwd) == os.path.realpath(tmp_path)


def test_block_allocation_reduced_example():
    with Executor(max_cores=2, block_allocation=True) as exe:
        future_obj = exe.submit(calc_function, 1, parameter_b=2)
        assert future_obj.result(timeout=RESULT_TIMEOUT) == 3


def test_data_handling_init_function():
    with Executor(max_cores=1, init_function=init_function, block_allocation=True) as exe:
        fs = exe.submit(calc_init, 2, j=5)
        assert fs.result(timeout=RESULT_TIMEOUT) == 10


def test_thread_based_parallelism_function():
    with Executor(max_cores=1) as exe:
        assert exe.submit(calc_threads, 4).result(timeout=RESULT_TIMEOUT) == (4, 10)


def test_coupled_functions():
    with Executor(max_cores=2) as exe:
        future_1 = exe.submit(calc_function, 1, parameter_b=2, resource_dict={"cores": 1})
        future_2 = exe.submit(calc_function, 1, parameter_b=future_1, resource_dict={"cores": 1})
        assert future_2.result(timeout=RESULT_TIMEOUT) == 4
        assert future_1.result(timeout=RESULT_TIMEOUT) == 3


def test_coupled_functions_with_dependencies_disabled_and_refresh_rate():
    # The seed's two knobs of the dependency layer: both accepted.
    with Executor(max_cores=2, disable_dependencies=True, refresh_rate=0.5) as exe:
        assert exe.submit(calc_function, 1, parameter_b=2).result(timeout=RESULT_TIMEOUT) == 3
    with Executor(max_cores=2, refresh_rate=0.5) as exe:
        future_1 = exe.submit(calc_function, 1, parameter_b=2)
        assert exe.submit(calc_function, 1, future_1).result(timeout=RESULT_TIMEOUT) == 4


def test_workstation_backend_mpi():
    with Executor(max_cores=1, backend="mpi") as exe:
        future = exe.submit(sum, [1, 1], resource_dict={"cores": 1})
        assert future.result(timeout=RESULT_TIMEOUT) == 2
        assert exe.info["backend"] == "local"


def test_interactively_defined_functions_travel_by_value():
    # The seed's argument for cloudpickle: functions a notebook defines on
    # the fly, lambdas and closures, run remotely.
    offset = 40

    def closure(x):
        return x + offset

    with Executor(max_cores=2) as exe:
        assert exe.submit(closure, 2).result(timeout=RESULT_TIMEOUT) == 42
        assert exe.submit(lambda x: x * 3, 5).result(timeout=RESULT_TIMEOUT) == 15


# ---- as `python script.py` ---------------------------------------------------

SCRIPTS = {
    "compatibility": (
        """
        from pmp import Executor

        with Executor(max_cores=1) as exe:
            future = exe.submit(sum, [1,1])
            print(future.result())
        """,
        "2\n",
    ),
    "user-defined-function": (
        """
        from pmp import Executor

        def calc(*args):
            return sum(*args)

        with Executor(max_cores=2) as exe:
            fs_1 = exe.submit(calc, [2, 1])
            fs_2 = exe.submit(calc, [2, 2])
            fs_3 = exe.submit(calc, [2, 3])
            fs_4 = exe.submit(calc, [2, 4])
            print([
                fs_1.result(),
                fs_2.result(),
                fs_3.result(),
                fs_4.result(),
            ])
        """,
        "[3, 4, 5, 6]\n",
    ),
    "map": (
        """
        from pmp import Executor

        def calc(*args):
            return sum(*args)

        with Executor(max_cores=2) as exe:
            print(list(exe.map(calc, [[2, 1], [2, 2], [2, 3], [2, 4]])))
        """,
        "[3, 4, 5, 6]\n",
    ),
    "resource-assignment": (
        """
        from pmp import Executor


        def calc_function(parameter_a, parameter_b):
            return parameter_a + parameter_b


        with Executor(
            # Resource definition on the executor level
            max_cores=2,  # total number of cores available to the Executor
            # Optional resource definition
            cores_per_worker=1,
            threads_per_core=1,
            gpus_per_worker=0,
            oversubscribe=False,  # not available with flux
            cwd="/home/jovyan/notebooks",
            hostname_localhost=False,  # only required on MacOS
            block_allocation=False,
            init_function=None,  # only available with block_allocation=True
            command_line_argument_lst=[],  # additional command line arguments for SLURM
        ) as exe:
            future_obj = exe.submit(
                calc_function,
                1,   # parameter_a
                parameter_b=2,
                # Resource definition on the submission level
                resource_dict={
                    "cores": 1,
                    "threads_per_core": 1,
                    "gpus_per_core": 0,  # here it is gpus_per_core rather than gpus_per_worker
                    "oversubscribe": False,  # not available with flux
                    "cwd": "/home/jovyan/notebooks",
                    "hostname_localhost": False,  # only required on MacOS
                    # "command_line_argument_lst": [],  # additional command line arguments for SLURM
                },
            )
            print(future_obj.result())
        """,
        "3\n",
    ),
    "block-allocation": (
        """
        from pmp import Executor


        def calc_function(parameter_a, parameter_b):
            return parameter_a + parameter_b


        with Executor(
            # Resource definition on the executor level
            max_cores=2,  # total number of cores available to the Executor
            block_allocation=True,  # reuse python processes
        ) as exe:
            future_obj = exe.submit(
                calc_function,
                1,   # parameter_a
                parameter_b=2,
            )
            print(future_obj.result())
        """,
        "3\n",
    ),
    "data-handling": (
        """
        from pmp import Executor

        def calc(i, j, k):
            return i + j + k

        def init_function():
            return {"j": 4, "k": 3, "l": 2}

        with Executor(max_cores=1, init_function=init_function, block_allocation=True) as exe:
            fs = exe.submit(calc, 2, j=5)
            print(fs.result())
        """,
        "10\n",
    ),
    "coupled-functions": (
        """
        from pmp import Executor

        def calc_function(parameter_a, parameter_b):
            return parameter_a + parameter_b

        with Executor(max_cores=2) as exe:
            future_1 = exe.submit(
                calc_function,
                1,
                parameter_b=2,
                resource_dict={"cores": 1},
            )
            future_2 = exe.submit(
                calc_function,
                1,
                parameter_b=future_1,
                resource_dict={"cores": 1},
            )
            print(future_2.result())
        """,
        "4\n",
    ),
    "workstation": (
        """
        from pmp import Executor

        with Executor(max_cores=1, backend="mpi") as exe:
            future = exe.submit(sum, [1,1], resource_dict={"cores": 1})
            print(future.result())
        """,
        "2\n",
    ),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_seed_example_as_script(name, run_script, tmp_path):
    source, expected = SCRIPTS[name]
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    source = source.replace("/home/jovyan/notebooks", str(notebooks))
    completed = run_script(source)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == expected, completed.stderr
