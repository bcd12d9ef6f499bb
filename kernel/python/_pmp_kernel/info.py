"""The kernel_info reply, and the same reply before IPython is imported.

Importing IPython is most of a kernel's start-up. A frontend waits for the
kernel_info reply before it shows the kernel as ready, and everything in
that reply is known without IPython except its version, which the banner
names. `early(version)` reads that version (and the start-up tip IPython
adds to the banner) from IPython's own standalone modules, `release.py` and
`tips.py`, without importing the package, so the host can answer
kernel_info while IPython loads; requests that need IPython wait for it."""

import importlib.util
import os
import sys

from .jsonutil import dumps


def content(version, banner):
    """The kernel_info reply content."""
    # Only whether debugpy is there: it is imported when a frontend
    # enables the debugger (see debugger.py).
    debugger = importlib.util.find_spec("debugpy") is not None
    return {
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "pmp",
        "implementation_version": version,
        "language_info": {
            "name": "python",
            # platform.python_version(), without importing platform.
            "version": sys.version.split()[0],
            "mimetype": "text/x-python",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "pygments_lexer": "ipython3",
            "nbconvert_exporter": "python",
            "file_extension": ".py",
        },
        "banner": banner,
        "help_links": [
            {
                "text": "Python Reference",
                "url": "https://docs.python.org/{}.{}".format(*sys.version_info[:2]),
            },
            {"text": "IPython Reference", "url": "https://ipython.org/documentation.html"},
        ],
        "debugger": debugger,
        # JEP 91: create/list/delete_subshell_request on the control channel.
        "supported_features": (["debugger"] if debugger else []) + ["kernel subshells"],
    }


def _standalone(directory, name):
    """Execute IPython/core/<name>.py on its own (it imports nothing of
    IPython's), under a private module name."""
    spec = importlib.util.spec_from_file_location(
        f"_pmp_kernel._ipython_{name}", os.path.join(directory, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ipython_banner():
    """The banner PmpShell will have (InteractiveShell.banner with its
    defaults: banner1, no banner2, the default profile, a tip), or None when
    it cannot be known without importing IPython."""
    # IPython replaces the whole banner then; leave it to IPython.
    if "SOURCE_DATE_EPOCH" in os.environ or "IPython" in sys.modules:
        return None
    spec = importlib.util.find_spec("IPython")
    if spec is None or not spec.submodule_search_locations:
        return None
    core = os.path.join(next(iter(spec.submodule_search_locations)), "core")
    release = _standalone(core, "release")
    # The tip line is IPython 9's; an older banner is left to IPython.
    if release.version_info[0] != 9:
        return None
    tips = _standalone(core, "tips")
    # IPython.core.usage.default_banner, then the tip line of
    # InteractiveShell.banner.
    return (
        f"Python {sys.version.splitlines()[0]}\n"
        + "Type 'copyright', 'credits' or 'license' for more information\n"
        + f"IPython {release.version} -- An enhanced Interactive Python. Type '?' for help.\n"
        + f"Tip: {tips.pick_tip()}\n"
    )


def early(version):
    """The kernel_info reply as JSON before IPython is imported, or None."""
    try:
        banner = ipython_banner()
    except Exception:  # noqa: BLE001 - any failure means: wait for IPython
        # An IPython laid out differently: the reply waits for IPython.
        return None
    return None if banner is None else dumps(content(version, banner))
