"""How a task's state looks, in every display of the notebook (a task's
status, a map's progress, `%pmp status`, `%pmp graph`): one colour and one
badge per state, and the legend that explains them. One owner, so that a
state reads the same wherever it is shown.

Colours are readable on JupyterLab's light and dark themes (white text on
a saturated background)."""

import html

STATES = ("queued", "running", "done", "failed", "cancelled")

COLOURS = {
    "queued": "#6c757d",
    "running": "#1a6fb5",
    "done": "#2b8a3e",
    "failed": "#c92a2a",
    "cancelled": "#9c6500",
}

MEANINGS = {
    "queued": "waiting: for a worker, for its dependencies, or in the job system's queue",
    "running": "started: on a worker, or as a batch job",
    "done": "ended with a result",
    "failed": "ended with an exception",
    "cancelled": "cancelled before it ran, or its batch job cancelled",
}


def colour(state):
    """A state's colour; an unknown state shows as a failure would."""
    return COLOURS.get(state, COLOURS["failed"])


def badge(state, text=None):
    """`state` (or `text`) as a small coloured badge, in HTML."""
    words = html.escape(state if text is None else text)
    return (
        f'<span class="pmp-badge" data-state="{html.escape(state)}" '
        f'title="{html.escape(MEANINGS.get(state, state))}" '
        f'style="background: {colour(state)}; color: #fff; border-radius: 3px; '
        f'padding: 0 0.4em; white-space: nowrap">{words}</span>'
    )


def legend():
    """Every state's badge and what it means, in HTML (one line)."""
    items = " ".join(
        f'<span title="{html.escape(MEANINGS[state])}">{badge(state)}</span>' for state in STATES
    )
    return f'<div class="pmp-legend" style="margin-top: 0.3em; font-size: 90%">{items}</div>'
