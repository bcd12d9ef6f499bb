"""How a task's state looks, in every display of the notebook (a task's
status, a map's progress, `%pmp status`, `%pmp graph`): one colour and one
badge per state, the bar of a group's states, and the legend that explains
them. One owner, so that a state reads the same wherever it is shown.

Colours are readable on JupyterLab's light and dark themes (white text on
a saturated background); other text takes the theme's own colours, with
plain ones where there is no JupyterLab (nbconvert's HTML, classic Notebook).
"""

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

# The frame of a display: the theme's code font, a stripe in its state's colour.
FONT = (
    "font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 13px)"
)
# Text that explains rather than tells (where, how long, what it means).
MUTED = "color: var(--jp-ui-font-color2, #616161)"


def colour(state):
    """A state's colour; an unknown state shows as a failure would."""
    return COLOURS.get(state, COLOURS["failed"])


def frame(state):
    """The style of a display's outer box, striped in `state`'s colour."""
    return (
        f"{FONT}; line-height: 1.5; border-left: 4px solid {colour(state)}; "
        "padding: 2px 0 2px 8px; margin: 2px 0"
    )


def badge(state, text=None, title=None):
    """`state` (or `text`) as a small coloured badge, in HTML; its tooltip
    says what the state means (or `title`)."""
    words = html.escape(state if text is None else text)
    meaning = MEANINGS.get(state, state) if title is None else title
    return (
        f'<span class="pmp-badge" data-state="{html.escape(state)}" '
        f'title="{html.escape(meaning)}" '
        f'style="background: {colour(state)}; color: #fff; border-radius: 3px; '
        f'padding: 0 0.4em; white-space: nowrap">{words}</span>'
    )


def bar(counts, width="16em"):
    """A group's states as one bar, a segment per state in its colour and
    proportion (`counts`: state -> how many), in HTML. Each segment's
    tooltip says how many and what the state means."""
    total = sum(counts.values())
    segments = "".join(
        f'<span data-bar-state="{state}" title="{counts[state]} {state}: '
        f'{html.escape(MEANINGS[state])}" style="width: {100 * counts[state] / total:.3f}%; '
        f'background: {colour(state)}"></span>'
        for state in STATES
        if total and counts.get(state)
    )
    return (
        f'<span class="pmp-bar" style="display: inline-flex; width: {width}; height: 0.9em; '
        "vertical-align: middle; border-radius: 3px; overflow: hidden; "
        f'background: var(--jp-layout-color3, #d0d0d0)">{segments}</span>'
    )


def legend(counts=None):
    """Every state, its colour and what it means (the tooltip), in HTML (one
    line); with `counts` (state -> how many), how many are in each. Not
    badges: a display's `data-state` attributes stay those of its tasks."""
    items = []
    for state in STATES:
        number = "" if counts is None else f" {counts.get(state, 0)}"
        items.append(
            f'<span title="{html.escape(MEANINGS[state])}" style="margin-right: 1em; '
            f'white-space: nowrap"><span style="color: {colour(state)}">&#9632;</span> '
            f"{state}{number}</span>"
        )
    return f'<div class="pmp-legend" style="{MUTED}; font-size: 90%">{"".join(items)}</div>'
