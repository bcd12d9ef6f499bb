"""One name per task, the same in every display (a task's status, a map's
progress, `%pmp status`, `%pmp graph`): its `--name`, else its function's
`__name__`. A `%%pmp` cell without `--name` is `cell [12]`, after the
prompt number the notebook shows beside it.

The Executor gives a Future its function's name at submit
(`function_name`); the magics give it its `--name` (`name_task`); every
display asks `task_name`.
"""

import functools
import re

from pmp.worker.task_traceback import CELL_SOURCE

# The function a `%%pmp` cell without --name becomes: not a name a person
# chose, so such a task is named after its cell instead.
CELL_FUNCTION = "pmp_cell"
# The cell's file name as IPython writes it in tracebacks: `Cell In[12]`.
_CELL_NUMBER = re.compile(r"In\[(\d+)\]")


def function_name(fn):
    """What a task calling `fn` is named: its `__name__` (`square`,
    `<lambda>`); a partial is named after the function it calls."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    filename, _ = getattr(fn, CELL_SOURCE, (None, None))
    if filename is not None and fn.__name__ == CELL_FUNCTION:
        number = _CELL_NUMBER.search(filename)
        return f"cell [{number.group(1)}]" if number else "cell"
    return getattr(fn, "__name__", None) or type(fn).__name__


def name_task(future, name):
    """Give `future` the name a person chose for it (`--name`)."""
    future._pmp_name = name


def task_name(future, name=None):
    """The task's one name: `name` when given (its `--name`), else the one
    it was given (`name_task`) or submitted with (its function's), else
    `task` (a Future pmp did not make)."""
    return name or getattr(future, "_pmp_name", None) or "task"
