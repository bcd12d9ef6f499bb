"""executorlib 1.x's public API through `from pmp import ...` only, written
from executorlib's documentation: its examples as users write them (the
import is the only change), then what executorlib has beyond the seed's
Executor, and the refusals of what pmp cannot honour. What executorlib added
that is a behaviour of its own is tested beside that behaviour: `batched` in
test_executor_map_and_batched.py, `restart_limit` in
test_executor_lost_workers.py, pool resizing and worker ids in
test_executor_block_allocation.py."""

import os
import shutil

import pytest
from gates import wait_for_file
from pmp import (
    FluxClusterExecutor,
    FluxJobExecutor,
    SingleNodeExecutor,
    SlurmClusterExecutor,
    SlurmJobExecutor,
    get_cache_data,
    get_item_from_future,
    split_future,
)
from pmp.client.backends import mpi_problem

RESULT_TIMEOUT = 60


def calc_mpi(i):
    from mpi4py import MPI

    return i, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank()


def get_openmp_threads():
    return os.environ["OMP_NUM_THREADS"]


def init_function():
    return {"j": 4, "k": 3, "l": 2}


def calc_with_preload(i, j, k):
    return i + j + k


def calc_add(a, b):
    return a + b


def get_pair(a):
    return a, a * 10


def shout(message):
    import sys

    print("about to fail", file=sys.stderr)
    raise RuntimeError(message)


@pytest.fixture
def mpi():
    problem = mpi_problem()
    if problem:
        pytest.skip(problem)


# ---- the documentation's examples ---------------------------------------------------------


def test_basic_functionality():
    with SingleNodeExecutor() as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 5)]
        assert [f.result(RESULT_TIMEOUT) for f in future_lst] == [2, 4, 6, 8]
    with SingleNodeExecutor() as exe:
        assert list(exe.map(sum, [[5, 5], [6, 6], [7, 7]])) == [10, 12, 14]


def test_parallel_functions_per_call_and_for_the_executor(mpi):
    with SingleNodeExecutor() as exe:
        future = exe.submit(calc_mpi, 3, resource_dict={"cores": 2})
        assert future.result(RESULT_TIMEOUT) == [(3, 2, 0), (3, 2, 1)]
    with SingleNodeExecutor(resource_dict={"cores": 2}) as exe:
        assert exe.submit(calc_mpi, 3).result(RESULT_TIMEOUT) == [(3, 2, 0), (3, 2, 1)]


def test_threads_per_core_sets_the_thread_variables():
    with SingleNodeExecutor() as exe:
        future = exe.submit(get_openmp_threads, resource_dict={"threads_per_core": 2})
        assert future.result(RESULT_TIMEOUT) == "2"


def test_block_allocation_with_an_init_function():
    with SingleNodeExecutor(init_function=init_function, block_allocation=True) as exe:
        assert exe.submit(calc_with_preload, 2, j=5).result(RESULT_TIMEOUT) == 10


def test_dependencies_as_future_arguments():
    with SingleNodeExecutor() as exe:
        future = 0
        for i in range(1, 4):
            future = exe.submit(calc_add, i, future)
        assert future.result(RESULT_TIMEOUT) == 6


def test_cache_directory_and_get_cache_data(tmp_path):
    cache = str(tmp_path / "cache")
    with SingleNodeExecutor(cache_directory=cache) as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 4)]
        assert [f.result(RESULT_TIMEOUT) for f in future_lst] == [2, 4, 6]
    assert sorted(row["result"] for row in get_cache_data(cache)) == [2, 4, 6]


def test_split_future_and_get_item_from_future():
    with SingleNodeExecutor() as exe:
        pair = exe.submit(get_pair, 3)
        first, second = split_future(pair, 2)
        total = exe.submit(calc_add, first, get_item_from_future(pair, 1))
        assert (first.result(RESULT_TIMEOUT), second.result(RESULT_TIMEOUT)) == (3, 30)
        assert total.result(RESULT_TIMEOUT) == 33


# ---- what executorlib has beyond the seed ---------------------------------------------------


def test_len_counts_unfinished_calls_and_info_is_none_after_shutdown(make_gate):
    gate = make_gate()
    exe = SingleNodeExecutor(max_workers=1, block_allocation=True)
    futures = [exe.submit(wait_for_file, gate.path, i) for i in range(3)]
    assert len(exe) == 3 and bool(exe)
    gate.open()
    assert [f.result(RESULT_TIMEOUT) for f in futures] == [0, 1, 2]
    assert len(exe) == 0 and bool(exe)
    assert exe.info["backend"] == "local"
    exe.shutdown()
    assert exe.info is None


def test_error_log_file_gets_the_traceback_and_stderr_of_failed_calls(tmp_path):
    log = tmp_path / "errors.log"
    with SingleNodeExecutor(resource_dict={"error_log_file": str(log)}) as exe:
        with pytest.raises(RuntimeError, match="first"):
            exe.submit(shout, "first").result(RESULT_TIMEOUT)
        assert exe.submit(calc_add, 1, 1).result(RESULT_TIMEOUT) == 2
    other = tmp_path / "other.log"
    with SingleNodeExecutor() as exe:
        failed = exe.submit(shout, "second", resource_dict={"error_log_file": str(other)})
        with pytest.raises(RuntimeError):
            failed.result(RESULT_TIMEOUT)
    text = log.read_text()
    assert text.count(" failed\n") == 1 and "shout failed" in text
    assert "RuntimeError: first" in text and "about to fail" in text
    assert "raise RuntimeError(message)" in text  # the remote traceback's line
    assert "RuntimeError: second" in other.read_text()


def test_wait_false_leaves_the_with_block_at_once_and_the_calls_still_finish(make_gate):
    gate = make_gate()
    with SingleNodeExecutor(wait=False) as exe:
        future = exe.submit(wait_for_file, gate.path, "finished later")
    assert not future.done()
    gate.open()
    assert future.result(RESULT_TIMEOUT) == "finished later"


# ---- what pmp refuses, with the reason ----------------------------------------------------


def test_unknown_or_misplaced_keys_are_value_errors():
    with pytest.raises(ValueError, match="resource_dict key 'cpus'"):
        SingleNodeExecutor(resource_dict={"cpus": 2})
    with SingleNodeExecutor() as exe:
        with pytest.raises(ValueError, match="'num_nodes' chooses nodes of a Slurm allocation"):
            exe.submit(sum, [1], resource_dict={"num_nodes": 2})
        with pytest.raises(ValueError, match="'run_time_max' is for batch jobs"):
            exe.submit(sum, [1], resource_dict={"run_time_max": 2})
        with pytest.raises(ValueError, match="resource_dict key 'gpus'"):
            exe.submit(sum, [1], resource_dict={"gpus": 1})
    with pytest.raises(ValueError, match="'cache_key' names one call"):
        SingleNodeExecutor(resource_dict={"cache_key": "x"})
    with pytest.raises(ValueError, match="'exclusive' chooses nodes"):
        SingleNodeExecutor(resource_dict={"exclusive": True})


def test_flux_job_executor_outside_an_instance_says_which_class_to_use(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    with pytest.raises(ValueError, match="FluxClusterExecutor submits"):
        FluxJobExecutor()


def test_cluster_executors_need_their_job_system(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun, no flux
    with pytest.raises(ValueError, match="sbatch, which is not on PATH"):
        SlurmClusterExecutor()
    with pytest.raises(ValueError, match="needs srun"):
        SlurmJobExecutor()
    with pytest.raises(ValueError, match="needs a Flux instance and the flux command"):
        FluxClusterExecutor()


def test_arguments_pmp_does_not_support_yet_are_refused_not_dropped(monkeypatch):
    monkeypatch.setenv("FLUX_URI", "local:///nowhere")  # refused before Flux is asked anything
    with pytest.raises(ValueError, match=r"pysqa_config_directory='q'\) is not supported"):
        FluxClusterExecutor(pysqa_config_directory="q")
    with pytest.raises(ValueError, match=r"flux_executor_nesting=True\) is not supported"):
        FluxJobExecutor(flux_executor_nesting=True)


def test_priority_is_refused_where_no_queue_orders_the_calls():
    with SingleNodeExecutor() as exe:
        with pytest.raises(ValueError, match="'priority' is a queueing system's"):
            exe.submit(sum, [1], resource_dict={"priority": 5})
        with pytest.raises(ValueError, match="urgency, 0 to 31"):
            exe.submit(sum, [1], resource_dict={"priority": 40})


def test_log_obj_size_logs_the_pickled_sizes_of_calls_and_results(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="pmp")
    with SingleNodeExecutor(log_obj_size=True) as exe:
        assert exe.submit(calc_add, 1, b=2).result(RESULT_TIMEOUT) == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "pmp"]
    assert any(
        m.startswith("submit calc_add: function ") and m.endswith(" bytes") for m in messages
    ), messages
    assert any(m.startswith("result of calc_add: ") for m in messages), messages


def diamond(exe):
    top = exe.submit(calc_add, 1, 2)
    left = exe.submit(calc_add, top, 10)
    right = exe.submit(calc_add, top, b=20)
    return exe.submit(calc_add, left, right)


def test_the_graph_of_a_diamond_is_exported_as_executorlibs_json(tmp_path):
    import json

    path = tmp_path / "workflow.json"
    with SingleNodeExecutor(export_workflow_filename=str(path)) as exe:
        assert diamond(exe).result(RESULT_TIMEOUT) is None  # recorded, not run
    graph = json.loads(path.read_text())
    assert graph["version"] == "0.1.0"
    nodes = {node["id"]: node for node in graph["nodes"]}
    functions = [i for i, node in nodes.items() if node["type"] == "function"]
    assert [nodes[i]["value"] for i in functions] == [f"{__name__}.calc_add"] * 4
    inputs = {nodes[i]["value"]: nodes[i]["name"] for i in nodes if nodes[i]["type"] == "input"}
    assert inputs == {1: "a", 2: "b", 10: "b", 20: "b"}
    top, left, right, bottom = functions
    between = sorted(
        (e["source"], e["target"], e["targetPort"])
        for e in graph["edges"]
        if e["source"] in functions and e["target"] in functions
    )
    assert between == [
        (top, left, "a"),
        (top, right, "a"),
        (left, bottom, "a"),
        (right, bottom, "b"),
    ]
    (output,) = [i for i, node in nodes.items() if node["type"] == "output"]
    assert {"source": bottom, "target": output, "targetPort": None, "sourcePort": None} in graph[
        "edges"
    ]


def test_the_graph_of_a_diamond_is_drawn_as_svg(tmp_path):
    from xml.etree import ElementTree

    path = tmp_path / "graph.svg"
    with SingleNodeExecutor(plot_dependency_graph_filename=str(path)) as exe:
        pair = exe.submit(get_pair, 1)
        diamond(exe)
        exe.submit(calc_add, get_item_from_future(pair, 1), [pair, 3])
    root = ElementTree.fromstring(path.read_text())
    assert root.tag.endswith("svg")
    labels = [element.text for element in root.iter() if element.tag.endswith("text")]
    assert labels.count("calc_add") == 5 and "get_pair" in labels
    assert "['$', 3]" in labels  # the list holding a Future: a get_list node


def test_plot_dependency_graph_runs_nothing_and_refuses_what_it_cannot_draw(tmp_path):
    with SingleNodeExecutor(plot_dependency_graph=True) as exe:
        futures = [exe.submit(shout, "never raised") for _ in range(2)]
        assert [f.result(RESULT_TIMEOUT) for f in futures] == [None, None]
    if shutil.which("dot") is None:
        with pytest.raises(ValueError, match="needs graphviz's dot"):
            SingleNodeExecutor(plot_dependency_graph_filename=str(tmp_path / "graph.png"))


def test_get_future_from_cache_and_the_output_and_filename_of_cache_rows(tmp_path):
    from pmp import get_future_from_cache

    cache = str(tmp_path / "cache")
    with SingleNodeExecutor(cache_directory=cache) as exe:
        assert exe.submit(calc_add, 1, 2, resource_dict={"cache_key": "sum"}).result() == 3
        failed = exe.submit(shout, "stored", resource_dict={"cache_key": "fails"})
        with pytest.raises(RuntimeError):
            failed.result(RESULT_TIMEOUT)
    assert get_future_from_cache(cache, "sum").result(0) == 3
    with pytest.raises(RuntimeError, match="stored"):
        get_future_from_cache(cache, "fails").result(0)
    with pytest.raises(FileNotFoundError):
        get_future_from_cache(cache, "never")
    (row,) = [r for r in get_cache_data(cache) if r["key"] == "sum"]
    assert row["output"] == row["result"] == 3 and os.path.isfile(row["filename"])


# ---- bad input that would change meaning ----------------------------------------------------


@pytest.mark.parametrize("where", ["argument", "resource_dict"])
@pytest.mark.parametrize("name", ["openmpi_oversubscribe", "hostname_localhost"])
def test_a_string_for_a_flag_is_refused_not_taken_as_true(name, where):
    if where == "resource_dict" and name == "hostname_localhost":
        pytest.skip("hostname_localhost is no resource_dict key of executorlib's")
    if where == "argument":
        with pytest.raises(ValueError, match=f"^{name} must be True or False, got str 'no'"):
            SingleNodeExecutor(**{name: "no"})
        return
    with pytest.raises(ValueError, match=f"resource_dict key '{name}' must be True or False"):
        SingleNodeExecutor(resource_dict={name: "no"})
    message = f"resource_dict key '{name}' must be True or False"
    with SingleNodeExecutor() as exe, pytest.raises(ValueError, match=message):
        exe.submit(calc_add, 1, 2, resource_dict={name: "no"})


def test_an_empty_cache_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cache_directory must be a directory's path"):
        SingleNodeExecutor(cache_directory="")
    with pytest.raises(ValueError, match="cache_directory must be a directory's path"):
        SlurmClusterExecutor(cache_directory="")
    assert list(tmp_path.iterdir()) == []


def test_a_string_of_slurm_cmd_args_is_refused_not_split_into_characters():
    for make in (
        lambda: SlurmJobExecutor(resource_dict={"slurm_cmd_args": "--exclusive"}),
        lambda: SlurmClusterExecutor(resource_dict={"slurm_cmd_args": "--exclusive"}),
    ):
        with pytest.raises(
            ValueError, match="resource_dict key 'slurm_cmd_args' must be a list of strings"
        ):
            make()


def test_a_flux_pmi_mode_that_is_no_pmi_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="pmi_mode='bogus' is not the Flux shell's pmi option"):
        FluxClusterExecutor(pmi_mode="bogus")


@pytest.mark.parametrize("where", ["executor", "call"])
def test_an_error_log_file_in_a_missing_directory_is_refused_at_once(tmp_path, where):
    log = tmp_path / "missing" / "errors.log"
    if where == "executor":
        with pytest.raises(ValueError, match=r"error_log_file' .*does not exist"):
            SingleNodeExecutor(resource_dict={"error_log_file": str(log)})
        return
    with (
        SingleNodeExecutor() as exe,
        pytest.raises(ValueError, match=r"error_log_file' .*does not exist"),
    ):
        exe.submit(calc_add, 1, 2, resource_dict={"error_log_file": str(log)})


@pytest.mark.parametrize("name", ["plot_dependency_graph_filename", "export_workflow_filename"])
def test_graph_files_in_a_missing_directory_are_refused_at_construction(tmp_path, name):
    path = tmp_path / "missing" / ("graph.svg" if name.startswith("plot") else "flow.json")
    with pytest.raises(ValueError, match=rf"^{name} .*its directory .* does not exist"):
        SingleNodeExecutor(**{name: str(path)})


def test_a_resource_dict_that_is_no_dict_is_refused_naming_it():
    with pytest.raises(ValueError, match="^resource_dict must be a dict .* got str 'cores=1'"):
        SingleNodeExecutor(resource_dict="cores=1")
    with SingleNodeExecutor() as exe, pytest.raises(ValueError, match="^resource_dict must be"):
        exe.submit(calc_add, 1, 2, resource_dict="cores=1")
