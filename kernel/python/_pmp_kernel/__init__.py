"""pmp-kernel's Python side: IPython wired to the Rust host (`_pmp_kernel_host`).

The host loads these modules from the kernel binary and calls `start()` once
on the Python thread, after installing its stream writers as sys.stdout and
sys.stderr."""

import os
import signal
import sys


def start(version):
    """Create the shell; returns (kernel, kernel_info reply as JSON)."""
    # Figures go through the display publisher, as in ipykernel.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Modules next to the notebook are importable, as with ipykernel.
    if not sys.path or sys.path[0] != "":
        sys.path.insert(0, "")

    from . import comms
    from .jsonutil import dumps
    from .kernel import Kernel
    from .magics import register_pmp_magics
    from .shell import PmpShell, history_config
    from .stdin import Stdin

    # Before any user code can import ipywidgets.
    comms.install()
    shell = PmpShell.instance(config=history_config())
    kernel = Kernel(shell, Stdin(), version)
    shell.kernel = kernel
    register_pmp_magics(shell)
    # Idle: an interrupt between requests is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return kernel, dumps(kernel.kernel_info())


def at_exit():
    """Run at shutdown: what `atexit` would run at interpreter exit (IPython
    saves history there; executors stop their workers)."""
    import atexit

    atexit._run_exitfuncs()
