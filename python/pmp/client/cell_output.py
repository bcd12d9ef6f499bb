"""Where a task's printed output goes when no status display shows it: the
notebook cell that submitted the task, even if another cell runs by the time
the output arrives (pmp-kernel and ipykernel); in a script or a terminal
IPython, the client's own sys.stdout and sys.stderr.
"""

import sys


def submitting_cell_writer():
    """A function returning, when called during a cell, a ``write(name, text)``
    that publishes a `stream` message to that cell; None outside a kernel."""
    host = sys.modules.get("_pmp_kernel_host")
    if host is not None:
        return lambda: _pmp_kernel_writer(host)
    if "ipykernel" in sys.modules:
        kernel = _ipykernel()
        if kernel is not None:
            return lambda: _ipykernel_writer(kernel)
    return None


def write_to_client(name, text):
    """The fallback: the client's own stream of that name."""
    stream = sys.stderr if name == "stderr" else sys.stdout
    if stream is not None:
        stream.write(text)
        stream.flush()


def _pmp_kernel_writer(host):
    parent = host.current_parent()
    if parent is None:
        return None
    return lambda name, text: host.publish_stream_to(parent, name, text)


def _ipykernel():
    try:  # imported here: IPython is optional, and a script never loads it
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    return kernel if hasattr(kernel, "session") and hasattr(kernel, "iopub_socket") else None


def _ipykernel_writer(kernel):
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # ipykernel < 6.?: no channel argument
        parent = kernel.get_parent()
    if not parent:
        return None

    def write(name, text):
        # iopub_socket is ipykernel's thread-safe socket wrapper.
        kernel.session.send(
            kernel.iopub_socket,
            "stream",
            {"name": name, "text": text},
            parent=parent,
            ident=f"stream.{name}".encode(),
        )

    return write
