"""The dependency graph of submitted calls, as executorlib records it with
`plot_dependency_graph=True` (nothing runs; every Future is done with None)
or `export_workflow_filename=...`: drawn as SVG, or written as JSON in the
python-workflow-definition format executorlib exports (version 0.1.0: nodes
of type function, input and output; edges with source, target and port).

Nodes: one per call (its function), one per distinct plain argument (an
input), one per list or dict argument that holds Futures (built by
python_workflow_definition.shared.get_list / get_dict). Edges: from a
Future's call, or an input, to the call that takes it, labelled with the
parameter's name.

SVG comes from graphviz's `dot` where it is installed, else from a small
layered layout of pmp's own (no dependency at all).
"""

import html
import inspect
import json
import os
import shutil
import subprocess
from concurrent.futures import Future


class GraphRecorder:
    """Calls submitted while recording: (fn, args, kwargs, future)."""

    def __init__(self):
        self.calls = []

    def record(self, fn, args, kwargs):
        future = Future()
        future.set_result(None)
        self.calls.append((fn, args, kwargs, future))
        return future


def nodes_and_edges(calls, names=None):
    """executorlib's node and edge lists for `calls`; `names`: {call's
    index: the name it is shown by}, else its function's."""
    nodes, edges = [], []
    node_of_future = {}
    for fn, _, _, future in calls:
        node_of_future[future] = len(nodes)
        name = getattr(fn, "__name__", type(fn).__name__)
        nodes.append(
            {
                "name": (names or {}).get(len(nodes), name),
                "type": "function",
                "value": f"{getattr(fn, '__module__', '')}.{name}",
                "id": len(nodes),
                "shape": "box",
            }
        )
    inputs = {}  # str(value) -> node id

    def add(argument, target, label):
        source = getattr(argument, "_pmp_item_of", None)
        if source is not None and source[0] in node_of_future:
            upstream, key = source
            edges.append(
                {
                    "start": node_of_future[upstream],
                    "end": target,
                    "label": label + str(key),
                    "end_label": label,
                    "start_label": str(key),
                }
            )
        elif isinstance(argument, Future) and argument in node_of_future:
            edges.append({"start": node_of_future[argument], "end": target, "label": label})
        elif isinstance(argument, list) and any(isinstance(a, Future) for a in argument):
            node = _container_node(
                nodes, [a if not isinstance(a, Future) else "$" for a in argument]
            )
            nodes[node]["value"] = "python_workflow_definition.shared.get_list"
            edges.append({"start": node, "end": target, "label": label})
            for index, item in enumerate(argument):
                if isinstance(item, Future):
                    add(item, node, str(index))
        elif isinstance(argument, dict) and any(isinstance(a, Future) for a in argument.values()):
            shown = {k: v if not isinstance(v, Future) else "$" for k, v in argument.items()}
            node = _container_node(nodes, shown)
            nodes[node]["value"] = "python_workflow_definition.shared.get_dict"
            edges.append({"start": node, "end": target, "label": label})
            for key, item in argument.items():
                add(item, node, str(key))
        else:
            node = inputs.get(str(argument))
            if node is None:
                node = inputs[str(argument)] = len(nodes)
                nodes.append(
                    {
                        "name": label,
                        "value": argument,
                        "id": node,
                        "type": "input",
                        "shape": "circle",
                    }
                )
            edges.append({"start": node, "end": target, "label": label})

    for fn, args, kwargs, future in calls:
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs).arguments
        except (TypeError, ValueError):  # no signature (a builtin), or it does not bind
            bound = {**{str(i): a for i, a in enumerate(args)}, **kwargs}
        for name, value in bound.items():
            add(value, node_of_future[future], str(name))
    return nodes, edges


def _container_node(nodes, shown):
    nodes.append(
        {"name": str(shown), "value": None, "id": len(nodes), "type": "function", "shape": "box"}
    )
    return len(nodes) - 1


def export_json(calls, path):
    """Write the graph in executorlib's export format (python-workflow-definition 0.1.0)."""
    nodes, edges = nodes_and_edges(calls)
    exported = []
    for node in nodes:
        if node["type"] == "function":
            exported.append({"id": node["id"], "type": "function", "value": node["value"]})
        else:
            value = node["value"]
            if hasattr(value, "tolist"):  # a numpy array
                value = value.tolist()
            exported.append(
                {"id": node["id"], "type": "input", "value": value, "name": node["name"]}
            )
    links = [
        {
            "target": e["end"],
            "targetPort": e.get("end_label", e["label"]),
            "source": e["start"],
            "sourcePort": e.get("start_label"),
        }
        for e in edges
    ]
    result = {"id": len(exported), "type": "output", "name": "result"}
    exported.append(result)
    if links:
        last = max(link["target"] for link in links)
        links.append(
            {"target": result["id"], "targetPort": None, "source": last, "sourcePort": None}
        )
    with open(path, "w") as file:
        json.dump({"version": "0.1.0", "nodes": exported, "edges": links}, file, indent=4)


def svg(calls, states=None, colours=None, names=None):
    """The graph as SVG text: graphviz's where `dot` is installed, else
    pmp's own layout. For a live graph, `states` ({node id: "done" |
    "running" | ...}) and `colours` ({state: colour}, which a legend under
    the graph explains) fill the function nodes; `names` as in
    `nodes_and_edges`."""
    nodes, edges = nodes_and_edges(calls, names)
    style = _Style(states, colours)
    dot = shutil.which("dot")
    if dot:
        try:
            return subprocess.run(
                [dot, "-Tsvg"],
                input=to_dot(nodes, edges, style),
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            pass  # a broken graphviz: pmp's own drawing still works
    return own_svg(nodes, edges, style)


def check_picture_name(path):
    """A picture file name pmp can write: SVG always, other formats through `dot`."""
    kind = os.path.splitext(os.fspath(path))[1][1:].lower()
    if kind != "svg" and not shutil.which("dot"):
        raise ValueError(
            f"plot_dependency_graph_filename {os.fspath(path)!r}: pmp draws .svg itself; "
            f"{'.' + kind if kind else 'a name without an extension'} needs graphviz's dot"
        )


def publish(calls, picture=None, workflow=None):
    """What executorlib does at shutdown: write the JSON (`workflow`), else
    the picture (`picture`), else show the SVG in a notebook."""
    if workflow is not None:
        export_json(calls, workflow)
        return
    if picture is not None:
        kind = os.path.splitext(os.fspath(picture))[1][1:].lower()
        if kind == "svg":
            with open(picture, "w") as file:
                file.write(svg(calls))
        else:
            nodes, edges = nodes_and_edges(calls)
            drawn = subprocess.run(
                [shutil.which("dot") or "dot", f"-T{kind}"],
                input=to_dot(nodes, edges).encode(),
                capture_output=True,
                check=True,
                timeout=30,
            ).stdout
            with open(picture, "wb") as file:
                file.write(drawn)
        return
    try:  # imported here: IPython is optional, and a script never loads it
        from IPython import get_ipython
        from IPython.display import SVG, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(SVG(svg(calls)))


class _Style:
    """How a node is filled: by its state's colour, with white text; white
    with black text where it has none (an input, or a graph not live)."""

    def __init__(self, states=None, colours=None):
        self.states = states or {}
        self.colours = colours or {}

    def of(self, node):
        """(fill, text colour) of `node`."""
        colour = self.colours.get(self.states.get(node["id"]))
        return (colour, "#fff") if colour else ("white", "#000")


def _label(node):
    if node["type"] == "input":
        text = str(node["value"])
        return text if len(text) <= 20 else text[:20] + "…"
    return str(node["name"])


def to_dot(nodes, edges, style=None):
    style = style or _Style()
    lines = ["digraph workflow {", "  rankdir=TB;"]
    for node in nodes:
        fill, ink = style.of(node)
        label = json.dumps(_label(node))
        lines.append(
            f"  n{node['id']} [label={label}, shape={node['shape']}, style=filled, "
            f'fillcolor="{fill}", fontcolor="{ink}"];'
        )
    for edge in edges:
        lines.append(f"  n{edge['start']} -> n{edge['end']} [label={json.dumps(edge['label'])}];")
    if style.colours:
        # The legend: a row of the states' colours, below the graph.
        cells = "".join(
            f'<td bgcolor="{colour}"><font color="#fff">{state}</font></td>'
            for state, colour in style.colours.items()
        )
        lines.append(
            '  legend [shape=plaintext, fontsize=10, label=<<table border="0" '
            f'cellspacing="2"><tr><td>states:</td>{cells}</tr></table>>];'
        )
        lines.append("  {rank=sink; legend}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def own_svg(nodes, edges, style=None):
    """A layered drawing: each node one row below the deepest node it
    depends on; with the states' colours, their legend in a row below."""
    style = style or _Style()
    depth = {node["id"]: 0 for node in nodes}
    for _ in range(len(nodes)):  # longest path; a DAG settles within len(nodes) rounds
        changed = False
        for edge in edges:
            if depth[edge["end"]] < depth[edge["start"]] + 1:
                depth[edge["end"]] = depth[edge["start"]] + 1
                changed = True
        if not changed:
            break
    rows = {}
    for node in nodes:
        rows.setdefault(depth[node["id"]], []).append(node)
    width, height, gap_x, gap_y = 120, 36, 30, 60
    columns = max((len(r) for r in rows.values()), default=1)
    legend_w, legend_h = 60 + len(style.colours) * 80, 30 if style.colours else 0
    total_w = max(columns * (width + gap_x) + gap_x, legend_w + gap_x)
    graph_h = len(rows) * (height + gap_y) + gap_y
    total_h = graph_h + legend_h
    centre = {}
    for level, row in rows.items():
        offset = (total_w - len(row) * (width + gap_x) + gap_x) / 2
        for index, node in enumerate(row):
            x = offset + index * (width + gap_x) + width / 2
            y = gap_y + level * (height + gap_y) + height / 2
            centre[node["id"]] = (x, y)
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        'font-family="monospace" font-size="12">'
    )
    arrow = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    )
    parts = [header, arrow]
    for edge in edges:
        (x1, y1), (x2, y2) = centre[edge["start"]], centre[edge["end"]]
        y1, y2 = y1 + height / 2, y2 - height / 2
        parts.append(
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="#555" '
            'marker-end="url(#arrow)"/>'
        )
        parts.append(
            f'<text x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + y2) / 2:.0f}" fill="#555">'
            f"{html.escape(edge['label'])}</text>"
        )
    for node in nodes:
        x, y = centre[node["id"]]
        fill, ink = style.of(node)
        if node["shape"] == "circle":
            shape = f'<ellipse cx="{x:.0f}" cy="{y:.0f}" rx="{width / 2:.0f}" ry="{height / 2:.0f}"'
        else:
            shape = (
                f'<rect x="{x - width / 2:.0f}" y="{y - height / 2:.0f}" width="{width}" '
                f'height="{height}" rx="4"'
            )
        parts.append(f'{shape} fill="{fill}" stroke="#333" data-node="{node["id"]}"/>')
        parts.append(
            f'<text x="{x:.0f}" y="{y + 4:.0f}" text-anchor="middle" fill="{ink}">'
            f"{html.escape(_label(node))}</text>"
        )
    if style.colours:
        parts.append(f'<g class="legend"><text x="{gap_x}" y="{graph_h + 4}">states:</text>')
        for index, (state, colour) in enumerate(style.colours.items()):
            x = gap_x + 60 + index * 80
            parts.append(
                f'<rect x="{x}" y="{graph_h - 12}" width="74" height="22" rx="3" '
                f'fill="{colour}"/><text x="{x + 37}" y="{graph_h + 4}" text-anchor="middle" '
                f'fill="#fff">{html.escape(state)}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
