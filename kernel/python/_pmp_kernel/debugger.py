"""The Python half of the Jupyter debugger; the kernel's `debugger.rs` owns
the protocol and the connection to debugpy and calls these functions.

Loaded only when a frontend first sends a debug request, so a kernel whose
debugger is never enabled imports none of it (nor debugpy). Arguments and
results are JSON text where they are structured.

The cell files follow ipykernel's scheme, which JupyterLab relies on: a
cell's code is dumped to `<tmp prefix><murmur2 hash of the code><suffix>`,
the frontend computes the same name from `debugInfo` to place breakpoints,
and while the debugger is on the cell is compiled under that file name so
that debugpy's breakpoints in the file hit in the running cell."""

import json
import os
import sys

from .jsonutil import dumps

# ipykernel's seed: frontends take it from debugInfo, but keeping the same
# one names a cell's file the same way in both kernels.
HASH_SEED = 0xC70F6907
FILE_SUFFIX = ".py"

# The adapter's port once debugpy listens (it can listen only once per process).
_port = None
# IPython's cleanup transformations taken out while debugging, by position.
_removed_cleanup = {}
# Variables shown while no thread is stopped; kept so that the frontend can
# expand them in later `variables` requests.
_explorer = None


def murmur2_x86(data, seed):
    """MurmurHash2 (x86, 32 bit) of the UTF-8 bytes of `data`, as JupyterLab
    computes it to name a cell's file."""
    m = 0x5BD1E995
    raw = data.encode("utf-8")
    length = len(raw)
    h = (seed ^ length) & 0xFFFFFFFF
    rounded_end = length & 0xFFFFFFFC
    for i in range(0, rounded_end, 4):
        k = raw[i] | (raw[i + 1] << 8) | (raw[i + 2] << 16) | (raw[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & 0x03
    k = 0
    if tail == 3:
        k = raw[rounded_end + 2] << 16
    if tail in (2, 3):
        k |= raw[rounded_end + 1] << 8
    if tail in (1, 2, 3):
        k |= raw[rounded_end]
        h ^= k
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def tmp_directory():
    """Where this kernel dumps cells (one folder per kernel process). The
    name holds `ipykernel_` because JupyterLab names a source `Cell [n]` in
    the call stack and the breakpoints only where its path does (its
    notebook display provider's test); elsewhere it shows the file's path."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"pmp_ipykernel_{os.getpid()}")


def cell_file(code):
    """The file a cell with this code is dumped to and compiled as."""
    return os.path.join(tmp_directory(), f"{murmur2_x86(code, HASH_SEED)}{FILE_SUFFIX}")


def _code_name(raw_code, transformed_code, number):
    # IPython's CachingCompiler.get_code_name, while the debugger is on.
    return cell_file(raw_code)


def _shell():
    from IPython.core.getipython import get_ipython

    return get_ipython()


def start():
    """Have debugpy listen (once) and compile cells under their dumped
    file's name; returns the adapter's port. Runs on the Python thread, so
    that debugpy traces the thread that runs cells."""
    global _port
    if _port is None:
        # pydevd warns that frozen standard modules cannot be stepped into
        # (Python 3.11+), on the cell's output; ipykernel silences it too.
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        import debugpy  # noqa: T100 - starting debugpy is this module's job

        os.makedirs(tmp_directory(), mode=0o700, exist_ok=True)
        # The adapter is a separate process started with sys.executable.
        _, _port = debugpy.listen(("127.0.0.1", 0))  # noqa: T100
    else:
        _pydevd().enable_tracing()
    shell = _shell()
    shell.compile.get_code_name = _code_name
    # A cell's leading blank lines must stay, or its lines would not match
    # those of the dumped file that breakpoints are set in.
    from IPython.core.inputtransformer2 import leading_empty_lines

    cleanup = shell.input_transformer_manager.cleanup_transforms
    if leading_empty_lines in cleanup:
        index = cleanup.index(leading_empty_lines)
        _removed_cleanup[index] = cleanup.pop(index)
    return _port


def _pydevd():
    # On sys.path since debugpy.listen.
    from _pydevd_bundle.pydevd_constants import get_global_debugger

    return get_global_debugger()


def untrace():
    """Stop tracing the Python thread once the debugger is disabled (on that
    thread, between requests). debugpy cannot stop listening, and while
    pydevd traces, every Python call in a cell costs several times more;
    `start` traces again."""
    if _port is not None:
        _pydevd().disable_tracing()


def stop():
    """Undo `start` but for debugpy listening: cells compile as usual again."""
    shell = _shell()
    shell.compile.__dict__.pop("get_code_name", None)
    cleanup = shell.input_transformer_manager.cleanup_transforms
    for index in sorted(_removed_cleanup):
        cleanup.insert(index, _removed_cleanup.pop(index))


def debug_info():
    """The parts of the debugInfo reply that Python knows, as JSON."""
    return dumps(
        {
            "hashMethod": "Murmur2",
            "hashSeed": HASH_SEED,
            "tmpFilePrefix": tmp_directory() + os.sep,
            "tmpFileSuffix": FILE_SUFFIX,
        }
    )


def dump_cell(code):
    """Write a cell's code to its file; returns the file's path."""
    path = cell_file(code)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    return path


class _Code:
    def __init__(self, co_filename, co_name):
        self.co_filename = co_filename
        self.co_name = co_name


class _Frame:
    """The user namespace dressed as a frame, for pydevd's variable views."""

    def __init__(self, f_code, f_globals, f_locals):
        self.f_code = f_code
        self.f_globals = f_globals
        self.f_locals = f_locals
        self.f_back = None


class _PyDB:
    def __init__(self):
        from _pydevd_bundle.pydevd_api import PyDevdAPI

        self.variable_presentation = PyDevdAPI.VariablePresentation()


class _VariableExplorer:
    """The user's globals through pydevd, as debugpy would show them in a
    stopped frame (ipykernel's VariableExplorer)."""

    def __init__(self):
        # Puts pydevd's bundle on sys.path for the imports below.
        from debugpy.server import api  # noqa: F401

        # isort: split
        from _pydevd_bundle import pydevd_frame_utils
        from _pydevd_bundle.pydevd_suspended_frames import (
            SuspendedFramesManager,
            _FramesTracker,
        )

        self.manager = SuspendedFramesManager()
        self.tracker = _FramesTracker(self.manager, _PyDB())
        namespace = _shell().user_ns
        self.frame = _Frame(_Code(cell_file("sys._getframe()"), "<module>"), namespace, namespace)
        self.tracker.track("thread1", pydevd_frame_utils.create_frames_list_from_frame(self.frame))

    def children(self, reference=None):
        variable = self.manager.get_variable(reference or id(self.frame))
        return [child.get_var_data() for child in variable.get_children_variables()]


def inspect_variables():
    """The user's globals as DAP variables (JSON list), freshly read."""
    global _explorer
    if _explorer is not None:
        _explorer.tracker.untrack_all()
    _explorer = _VariableExplorer()
    return dumps(_explorer.children())


def variables(reference):
    """The children of a variable from `inspect_variables` (JSON list)."""
    if _explorer is None:
        return dumps([])
    try:
        return dumps(_explorer.children(int(reference)))
    except KeyError:
        return dumps([])


def rich_inspect(name):
    """A user global's display data and metadata, as the notebook would show
    it: {"data": ..., "metadata": ...} as JSON."""
    result = _shell().user_expressions({name: name})[name]
    if result.get("status") != "ok":
        return dumps({"data": {}, "metadata": {}})
    return dumps({"data": result.get("data", {}), "metadata": result.get("metadata", {})})


def rich_expression(name):
    """What the kernel evaluates in a stopped frame to get `name`'s display
    data (its repr comes back through debugpy, see `parse_rich`)."""
    return f"get_ipython().display_formatter.format({name})"


def parse_rich(text):
    """The (data, metadata) repr that `rich_expression` evaluated to, as
    {"data": ..., "metadata": ...} JSON."""
    import ast

    data, metadata = ast.literal_eval(text)
    return dumps({"data": data, "metadata": metadata})


def modules(arguments):
    """The modules request: loaded modules that have Python source."""
    arguments = json.loads(arguments)
    loaded = list(sys.modules.copy().values())
    start = arguments.get("startModule", 0)
    count = arguments.get("moduleCount", len(loaded))
    found = []
    for i, module in enumerate(loaded[start : start + count], start):
        path = getattr(getattr(module, "__spec__", None), "origin", None)
        if path and path.endswith(".py"):
            found.append({"id": i, "name": module.__name__, "path": path})
    return dumps({"modules": found, "totalModules": len(loaded)})
