"""A task's traceback as its author should read it: the task's own frames
only (pmp's runtime, which called the function, is hidden), and the lines of
a notebook cell submitted with `%%pmp submit` shown where they ran, numbered
as the cell shows them.

A cell's function carries its source (`CELL_SOURCE`, set by the magics):
the worker has no other copy of it, and Python's traceback reads source
lines from `linecache`.

Kept free of heavy imports: every worker loads it at start.
"""

import linecache
import os

# The function attribute holding (filename, source) of a `%%pmp submit` cell.
CELL_SOURCE = "__pmp_cell_source__"

_PMP_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def remember_cell_source(function):
    """Make a cell function's source lines known to `linecache` here, and
    its code (cloudpickle sends every code object as `<dynamic-code>`) name
    the cell's file again."""
    filename, source = getattr(function, CELL_SOURCE, (None, None))
    if filename is None:
        return
    lines = source.splitlines(keepends=True)
    # mtime None: `linecache.checkcache` keeps the entry (as IPython does for cells).
    linecache.cache[filename] = (len(source), None, lines, filename)
    if function.__code__.co_filename != filename:
        function.__code__ = _in_file(function.__code__, filename)


def _in_file(code, filename):
    """`code`, and the code of the functions and classes defined in it, as
    compiled from `filename`."""
    constants = tuple(
        _in_file(constant, filename) if isinstance(constant, type(code)) else constant
        for constant in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=constants)


def format_failure(exception):
    """The traceback text of a task's exception, pmp's frames left out."""
    import traceback

    _hide_runtime_frames(exception)
    return "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))


def _hide_runtime_frames(exception, seen=None):
    """Drop the leading frames of pmp's own code, in the exception and in
    those it chains to: the user's function is where their traceback starts.
    Frames of pmp after the user's (a task calling pmp) stay, and so does a
    traceback of pmp's frames only (pmp itself failed)."""
    seen = set() if seen is None else seen
    if exception is None or id(exception) in seen:
        return
    seen.add(id(exception))
    frames = exception.__traceback__
    while frames is not None and _is_pmp(frames.tb_frame.f_code.co_filename):
        frames = frames.tb_next
    if frames is not None:
        exception.__traceback__ = frames
    _hide_runtime_frames(exception.__cause__, seen)
    _hide_runtime_frames(exception.__context__, seen)


def _is_pmp(filename):
    return not filename.startswith("<") and os.path.abspath(filename).startswith(_PMP_DIRECTORY)
