"""`%pmp graph`: the dependency graph of this notebook's tasks as one live
SVG display, each call's box named as every display names its task
(`task_names`) and filled with its state's colour (`state_style`), which
a legend under the graph explains, until all of them end."""

from pmp.client.workflow_graph import svg
from pmp.notebook import state_style
from pmp.notebook.status_display import LiveDisplay, _ticker, state_of


class GraphStatus:
    def __init__(self, tasks):
        self.tasks = [task for task in tasks if task.call is not None]
        self._drawn = None  # (states, svg): drawn again only when a state changed

    def bundle(self):
        states = tuple(state_of(task.future) for task in self.tasks)
        if self._drawn is None or self._drawn[0] != states:
            calls = [(*task.call, task.future) for task in self.tasks]
            names = {index: task.label for index, task in enumerate(self.tasks)}
            drawn = svg(calls, dict(enumerate(states)), state_style.COLOURS, names)
            self._drawn = (states, drawn)
        counts = {state: states.count(state) for state in dict.fromkeys(states)}
        summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no tasks"
        unfinished = any(state in ("queued", "running") for state in states)
        return ("running" if unfinished else "done"), {
            "image/svg+xml": self._drawn[1],
            "text/plain": f"dependency graph of {len(states)} tasks: {summary}",
        }


def show(tasks):
    live = LiveDisplay(GraphStatus(tasks))
    if not live.finished:
        _ticker.watch(live)
    return live.handle
