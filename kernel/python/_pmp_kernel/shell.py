"""The IPython shell as a kernel sees it: no terminal, output as messages,
pager and exit requests as payloads of the execute reply."""

import os
import sqlite3
import threading

import _pmp_kernel_host as host
from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.inputtransformer2 import TransformerManager
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Any, CBool, Instance, Type, default
from traitlets.config import Config

from .display import DisplayHook, DisplayPublisher
from .jsonutil import dumps
from .transform import QuickTransformerManager


class HistoryConnection(sqlite3.Connection):
    """IPython's history database without an fsync per cell.

    IPython commits every cell's input from a thread that holds the history
    lock while it syncs to disk, so the next cell waits for the disk (about
    a millisecond here, far more on the network file systems of clusters).
    Commits still reach the operating system at once, so a kernel crash
    loses nothing; only an OS crash could lose the latest history."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous = OFF")


# Larger than any session: IPython's store_inputs never wakes its saving
# thread itself; `save_history` does, when the kernel is idle.
NEVER = 2**62


def history_config():
    config = Config()
    config.HistoryManager.connection_options = {
        "check_same_thread": False,
        "factory": HistoryConnection,
    }
    config.HistoryManager.db_cache_size = NEVER
    return config


def save_history(shell):
    """Have IPython's saving thread write the history stored since the last
    call.

    IPython wakes that thread as each cell starts, so it competes with the
    cell and its reply for the GIL and the CPU. The host calls this instead
    once the kernel has been idle for a moment (20 ms): a cell's history
    still reaches the database right after it, and cells run back to back
    are written in one transaction. Exit writes what is left, as in IPython;
    history requests write the cache out first, as in IPython."""
    history = shell.history_manager
    if history is None or not history.using_thread:
        return
    if history.db_input_cache or history.db_output_cache:
        history._restart_thread_if_stopped()
        if history.save_flag is not None:
            history.save_flag.set()


class _CellState(threading.local):
    """What a request's handling keeps between its steps, per thread: the
    main shell and each subshell (JEP 91) run cells in this one shell at
    the same time. Class attributes are each thread's starting values."""

    # None: a thread that handles no requests sees the main shell's.
    parent = None
    last_traceback = None
    last_traceback_during_displayhook = False


class PmpShell(InteractiveShell):
    displayhook_class = Type(DisplayHook)
    display_pub_class = Type(DisplayPublisher)
    # IPython's, with a shortcut for cells its transformations leave alone.
    input_transformer_manager = Instance(TransformerManager)

    @default("input_transformer_manager")
    def _quick_transformer_manager(self):
        return QuickTransformerManager()

    # No readline, no auto-indent: the frontend edits the code.
    readline_use = CBool(False)
    autoindent = CBool(False)
    # ipywidgets' Output widget looks for `get_ipython().kernel`.
    kernel = Any()

    def __init__(self, *args, **kwargs):
        self._cell_state = _CellState()
        self._main_thread = threading.get_ident()
        self._main_parent = {}
        super().__init__(*args, **kwargs)

    @property
    def _last_traceback(self):
        return self._cell_state.last_traceback

    @_last_traceback.setter
    def _last_traceback(self, stb):
        self._cell_state.last_traceback = stb

    @property
    def _last_traceback_during_displayhook(self):
        return self._cell_state.last_traceback_during_displayhook

    @_last_traceback_during_displayhook.setter
    def _last_traceback_during_displayhook(self, during):
        self._cell_state.last_traceback_during_displayhook = during

    def init_environment(self):
        env = os.environ
        env["TERM"] = "xterm-color"
        env["CLICOLOR"] = "1"
        env["FORCE_COLOR"] = "1"
        env["CLICOLOR_FORCE"] = "1"
        # A pager cannot be driven from a notebook.
        env["PAGER"] = "cat"
        env["GIT_PAGER"] = "cat"

    def init_virtualenv(self):
        # The kernel already runs the environment's own interpreter.
        pass

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self._page_payload), 99)

    def enable_gui(self, gui=None):
        if gui not in (None, "inline"):
            raise UsageError(f"pmp-kernel has no event loop integration for GUI {gui!r}")

    def _page_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def ask_exit(self):
        self.exit_now = True
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": False})

    def set_next_input(self, text, replace=False):
        self.payload_manager.write_payload(
            {"source": "set_next_input", "text": text, "replace": replace}
        )

    def run_cell(self, *args, **kwargs):
        self._last_traceback = None
        self._last_traceback_during_displayhook = False
        return super().run_cell(*args, **kwargs)

    def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
        # Only `await`, `async for` and `async with` make a cell a coroutine;
        # IPython compiles every cell to find out.
        cell = transformed_cell
        if cell is not None and "await" not in cell and "async" not in cell:
            return False
        return super().should_run_async(
            raw_cell,
            transformed_cell=transformed_cell,
            preprocessing_exc_tuple=preprocessing_exc_tuple,
        )

    def _showtraceback(self, etype, evalue, stb):
        # One `error` message and nothing printed: frontends render the
        # traceback themselves.
        if getattr(self.displayhook, "content", None) is not None:
            self._last_traceback_during_displayhook = True
        content = {"ename": str(etype.__name__), "evalue": str(evalue), "traceback": stb}
        host.publish("error", dumps(content))
        self._last_traceback = stb

    # The request being handled, as ipykernel exposes it (ipywidgets' Output
    # widget reads it to tag captured output): a subshell's on its thread,
    # the main shell's everywhere else.
    def get_parent(self):
        parent = self._cell_state.parent
        return self._main_parent if parent is None else parent

    def set_parent(self, parent):
        if threading.get_ident() == self._main_thread:
            self._main_parent = parent
        else:
            self._cell_state.parent = parent
