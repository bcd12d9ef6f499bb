"""`input()` and `getpass()` answered by the frontend over the stdin channel."""

import builtins
import getpass
import threading

import _pmp_kernel_host as host
from IPython.core.error import StdinNotImplementedError


class Stdin:
    """Replaces `input` and `getpass.getpass` once; whether the frontend may be
    asked is decided per execute request (`allow_stdin`), so per thread: a
    subshell's request runs beside the main shell's."""

    def __init__(self):
        self._request = threading.local()
        builtins.input = self.input
        getpass.getpass = self.getpass

    @property
    def allowed(self):
        return getattr(self._request, "allowed", False)

    @allowed.setter
    def allowed(self, allowed):
        self._request.allowed = allowed

    def _ask(self, prompt, password):
        if not self.allowed:
            raise StdinNotImplementedError(
                "input was called, but this frontend does not support input requests."
            )
        # May raise KeyboardInterrupt (interrupt while waiting).
        value = host.input(str(prompt), password)
        if value == "\x04":
            # Ctrl-D in the frontend's input box.
            raise EOFError
        return value

    def input(self, prompt=""):
        return self._ask(prompt, False)

    def getpass(self, prompt="Password: ", stream=None):
        return self._ask(prompt, True)
