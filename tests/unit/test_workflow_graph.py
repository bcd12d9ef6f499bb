"""The dependency graph of recorded calls (`pmp.client.workflow_graph`):
executorlib's nodes and edges, its JSON export, and pmp's own SVG where
graphviz is missing."""

import json
import re

import pytest
from pmp.client import workflow_graph
from pmp.client.future_tools import get_item_from_future
from pmp.client.workflow_graph import GraphRecorder


def add(a, b):
    return a + b


def pair(x):
    return x, x


def total(values):
    return sum(values)


@pytest.fixture
def diamond():
    """add(1, 2) feeds two add calls (one through an item of pair), and a list of both feeds total."""
    recorder = GraphRecorder()
    top = recorder.record(add, (1, 2), {})
    left = recorder.record(add, (top,), {"b": 2})
    halves = recorder.record(pair, (top,), {})
    right = recorder.record(add, (get_item_from_future(halves, 0), 1), {})
    recorder.record(total, ([left, right, 5],), {})
    return recorder.calls


def test_calls_inputs_and_lists_of_futures_become_nodes_joined_by_parameter(diamond):
    nodes, edges = workflow_graph.nodes_and_edges(diamond)
    by_id = {node["id"]: node for node in nodes}
    functions = [n["name"] for n in nodes if n["type"] == "function"]
    assert functions[:5] == ["add", "add", "pair", "add", "total"]
    assert sorted(n["value"] for n in nodes if n["type"] == "input") == [1, 2]
    edge_names = {(by_id[e["start"]]["name"], by_id[e["end"]]["name"], e["label"]) for e in edges}
    assert ("add", "pair", "x") in edge_names
    assert ("pair", "add", "a0") in edge_names  # item 0 of pair's result as `a`
    listing = next(n for n in nodes if n["value"] == "python_workflow_definition.shared.get_list")
    assert listing["name"] == "['$', '$', 5]"  # a plain item stays in its list
    into_list = sorted(e["label"] for e in edges if e["end"] == listing["id"])
    assert into_list == ["0", "1"]  # the two Futures, by their place in the list
    assert (listing["name"], "total", "values") in edge_names


def test_an_input_used_twice_is_one_node(diamond):
    nodes, _ = workflow_graph.nodes_and_edges(diamond)
    assert [n["value"] for n in nodes if n["type"] == "input"].count(2) == 1


def test_the_json_export_is_executorlibs_format_with_an_output_node(diamond, tmp_path):
    path = tmp_path / "graph.json"
    workflow_graph.export_json(diamond, path)
    exported = json.loads(path.read_text())
    assert exported["version"] == "0.1.0"
    kinds = [node["type"] for node in exported["nodes"]]
    assert kinds[-1] == "output"
    assert {"function", "input", "output"} == set(kinds)
    assert exported["nodes"][0] == {"id": 0, "type": "function", "value": f"{__name__}.add"}
    assert all(
        {"source", "target", "sourcePort", "targetPort"} == set(e) for e in exported["edges"]
    )
    assert exported["edges"][-1]["target"] == exported["nodes"][-1]["id"]


def test_pmps_own_svg_draws_every_node_filled_by_its_state_with_a_legend(diamond):
    nodes, edges = workflow_graph.nodes_and_edges(diamond)
    style = workflow_graph._Style({0: "done", 1: "failed"}, {"done": "#0a0", "failed": "#a00"})
    drawn = workflow_graph.own_svg(nodes, edges, style)
    assert drawn.startswith("<svg")
    assert drawn.count("data-node=") == len(nodes)
    assert 'fill="#0a0" stroke="#333" data-node="0"' in drawn
    assert 'fill="#a00" stroke="#333" data-node="1"' in drawn
    assert 'fill="white" stroke="#333" data-node="2"' in drawn
    assert drawn.count("<line") == len(edges)
    assert '<g class="legend">' in drawn


def centres(drawn):
    """{node id: the y of its centre} in pmp's own SVG."""
    found = {}
    for line in drawn.splitlines():
        node = re.search(r'data-node="(\d+)"', line)
        if node is None:
            continue
        rect = re.search(r'<rect x="[^"]*" y="([\d.-]+)" width="[^"]*" height="([\d.]+)"', line)
        if rect:
            found[int(node[1])] = float(rect[1]) + float(rect[2]) / 2
        else:
            found[int(node[1])] = float(re.search(r'cy="([\d.-]+)"', line)[1])
    return found


def test_each_node_is_drawn_below_every_node_it_depends_on(diamond):
    nodes, edges = workflow_graph.nodes_and_edges(diamond)
    y = centres(workflow_graph.own_svg(nodes, edges))
    assert set(y) == {node["id"] for node in nodes}
    for edge in edges:
        assert y[edge["start"]] < y[edge["end"]]


def test_a_picture_other_than_svg_without_graphviz_is_refused_naming_the_parameter(monkeypatch):
    monkeypatch.setattr(workflow_graph.shutil, "which", lambda name: None)
    workflow_graph.check_picture_name("graph.svg")
    with pytest.raises(
        ValueError, match="plot_dependency_graph_filename 'graph.png'.*needs graphviz"
    ):
        workflow_graph.check_picture_name("graph.png")
