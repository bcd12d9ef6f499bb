"""How a Future, or a group of Futures, is shown live in a notebook.

The client knows no notebook: the layer above it (`pmp/__init__.py`, for
`pmp.notebook`) registers the displays here. Until one does, a Future shows
nothing of its own and `Executor.map` shows no progress.
"""

_hooks = {"show_future": None, "progress_display": None}


def register(show_future, progress_display):
    """`show_future(future)` shows a Future's live status display;
    `progress_display(futures, label)` shows one for a group of Futures and
    returns an object whose `refresh()` redraws it."""
    _hooks["show_future"] = show_future
    _hooks["progress_display"] = progress_display


def show_future(future):
    """Show `future`'s live status display, if a notebook registered one."""
    show = _hooks["show_future"]
    if show is not None:
        show(future)


def progress_display(futures, label):
    """The live progress display of `futures`, or None when no notebook
    registered one."""
    make = _hooks["progress_display"]
    return None if make is None else make(futures, label)
