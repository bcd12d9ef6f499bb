"""MPI-parallel functions on the local backend, through the real mpiexec."""

import os
import sys

import pytest
from pmp import Executor
from task_children import assert_all_end, start_three

SEED_MPI = """
from pmp import Executor

def calc(i):
    from mpi4py import MPI
    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank

with Executor(max_cores=2, cores_per_worker=2) as exe:
    fs = exe.submit(calc, 3)
    print(fs.result())
"""


def ranks(i):
    from mpi4py import MPI

    return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()


def fail_on_rank(rank, message):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == rank:
        raise ValueError(message)
    return "fine"


def init_rank():
    from mpi4py import MPI

    return {"rank": MPI.COMM_WORLD.Get_rank()}


def report_rank(rank):
    return rank


@pytest.mark.timeout(120)
def test_the_seed_mpi_example_returns_one_tuple_per_rank(mpi, run_script):
    done = run_script(SEED_MPI)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(3, 2, 0), (3, 2, 1)]"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("failing_rank", [0, 1])
def test_an_exception_on_any_rank_fails_the_future_with_that_ranks_traceback(
    mpi, block, failing_rank
):
    with Executor(max_cores=2, cores_per_worker=2, block_allocation=block) as exe:
        future = exe.submit(fail_on_rank, failing_rank, f"rank {failing_rank} refuses")
        with pytest.raises(ValueError, match=f"rank {failing_rank} refuses") as caught:
            future.result(timeout=60)
        assert f"MPI rank {failing_rank} of 2" in " ".join(getattr(caught.value, "__notes__", []))
        assert "fail_on_rank" in str(caught.value.__cause__)
        # The worker survives a task's exception.
        assert exe.submit(ranks, 7).result(timeout=60) == [(7, 2, 0), (7, 2, 1)]


@pytest.mark.timeout(120)
def test_init_function_runs_on_every_rank(mpi):
    with Executor(
        max_cores=2, cores_per_worker=2, block_allocation=True, init_function=init_rank
    ) as exe:
        assert exe.submit(report_rank).result(timeout=60) == [0, 1]


@pytest.mark.timeout(120)
def test_oversubscribe_runs_more_ranks_than_max_cores(mpi):
    with Executor(max_cores=1, cores_per_worker=3, oversubscribe=True) as exe:
        assert exe.submit(ranks, 1).result(timeout=60) == [(1, 3, 0), (1, 3, 1), (1, 3, 2)]


def test_more_ranks_than_max_cores_is_refused_at_submit(mpi):
    with Executor(max_cores=2) as exe, pytest.raises(ValueError, match="'cores'"):
        exe.submit(ranks, 1, resource_dict={"cores": 3})


@pytest.mark.timeout(120)
def test_without_mpi4py_cores_above_one_is_a_clear_error_at_submit(mpi, run_script, tmp_path):
    # A package named mpi4py that fails to import, first on the path.
    shadow = tmp_path / "shadow" / "mpi4py"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('mpi4py is broken here')\n")
    done = run_script(
        """
        from pmp import Executor
        with Executor(max_cores=2) as exe:
            try:
                exe.submit(print, 1, resource_dict={"cores": 2})
            except ValueError as error:
                print("ValueError:", error)
        """,
        env={"PYTHONPATH": str(shadow.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "ValueError:" in done.stdout
    assert "mpi4py" in done.stdout and "'cores'" in done.stdout


def print_rank(tag):
    import sys

    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    print(f"{tag} from rank {rank}")
    print(f"{tag} warning on rank {rank}", file=sys.stderr)
    return rank


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", [False, True])
def test_every_ranks_output_reaches_the_future_marked_with_its_rank(mpi, block):
    with Executor(max_cores=2, cores_per_worker=2, block_allocation=block) as exe:
        future = exe.submit(print_rank, "hello")
        assert future.result(timeout=60) == [0, 1]
    assert future.output == (
        "hello from rank 0\nhello warning on rank 0\n"
        "[rank 1] hello from rank 1\n[rank 1] hello warning on rank 1\n"
    )


def parent_and_ranks():
    import os

    from mpi4py import MPI

    return os.getppid(), MPI.COMM_WORLD.Get_size()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux-only")
def test_mpi_workers_are_started_by_mpiexec_beside_forked_single_rank_ones(mpi):
    with Executor(max_cores=2) as exe:
        single = exe.submit(parent_and_ranks).result(timeout=120)
        mpi_worker = exe.submit(parent_and_ranks, resource_dict={"cores": 2}).result(timeout=120)
        again = exe.submit(parent_and_ranks).result(timeout=120)
    zygote, size = single
    assert zygote != os.getpid(), "a single-rank worker is forked by the zygote"
    assert size == 1
    assert [size for _, size in mpi_worker] == [2, 2], "one result per rank"
    assert mpi_worker[0][0] != zygote, "an MPI worker comes from mpiexec, not the zygote"
    assert again == single, "the next single-rank worker comes from the same zygote"


def shape(x):
    """One value per call; a call of several ranks returns one per rank."""
    return x


@pytest.mark.timeout(120)
def test_the_store_keeps_a_calls_results_apart_by_its_number_of_ranks(mpi, tmp_path):
    from pmp import _pmp

    store = str(tmp_path / "store")
    with Executor(max_cores=2, cache_directory=store) as exe:
        assert exe.submit(shape, 7, resource_dict={"cores": 2}).result(timeout=60) == [7, 7]
        one = exe.submit(shape, 7, resource_dict={"cores": 1})
        assert one.result(timeout=60) == 7 and one.from_store is None
        again = exe.submit(shape, 7, resource_dict={"cores": 2})
        assert again.result(timeout=60) == [7, 7] and again.from_store is not None
    # A call of one rank keeps the key it had before ranks were part of it,
    # so the entries of existing stores are found.
    before = "1c611729903459e519ddc0de40cc8f5aeb6dccea7eed7d4e741319a5468ed5de"
    assert _pmp.task_key(b"function", [b"frame"], []) == before
    assert _pmp.task_key(b"function", [b"frame"], [], 1) == before
    assert _pmp.task_key(b"function", [b"frame"], [], 2) != before


def start_three_on_my_rank(python, directory):
    from mpi4py import MPI

    mine = os.path.join(directory, f"rank-{MPI.COMM_WORLD.Get_rank()}")
    os.makedirs(mine, exist_ok=True)
    return start_three(python, mine)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="descendants are ended with the worker on Linux"
)
def test_what_each_rank_started_ends_with_its_worker(mpi, block, tmp_path, wait_until):
    with Executor(max_cores=2, cores_per_worker=2, block_allocation=block) as exe:
        per_rank = exe.submit(start_three_on_my_rank, sys.executable, str(tmp_path)).result(60)
    assert len(per_rank) == 2
    for rank, pids in enumerate(per_rank):
        assert_all_end(pids, wait_until, f"on rank {rank} after shutdown")
