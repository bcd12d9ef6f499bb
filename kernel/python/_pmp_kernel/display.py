"""Rich output: the display publisher (`display()`, `clear_output()`) and the
display hook (a cell's value → `execute_result`). Both publish on IOPub with
the request being handled as parent; the host flushes pending stream output
first, so text and displays keep their order."""

import threading

import _pmp_kernel_host as host
from IPython.core import displayhook, displaypub

from .jsonutil import dumps
from .plaintext import PlainText


class DisplayPublisher(displaypub.DisplayPublisher):
    def publish(self, data, metadata=None, *, transient=None, update=False, **kwargs):
        self._validate_data(data, metadata)
        content = {
            "data": data,
            "metadata": {} if metadata is None else metadata,
            "transient": {} if transient is None else transient,
        }
        host.publish("update_display_data" if update else "display_data", dumps(content))

    def clear_output(self, wait=False):
        host.publish("clear_output", dumps({"wait": bool(wait)}))


class _Pending(threading.local):
    # The execute_result being built; per thread, as a subshell's cell may
    # show its value while the main shell's does (JEP 91).
    content = None


class DisplayHook(displayhook.DisplayHook):
    """Collects the parts IPython computes and sends one execute_result."""

    _plain_text = None
    # A plain attribute in place of IPython's Instance trait: run_cell sets
    # it twice per cell, and nothing observes it; validating and notifying
    # cost more than the rest of what those lines do.
    exec_result = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = _Pending()

    @property
    def content(self):
        return self._pending.content

    @content.setter
    def content(self, content):
        self._pending.content = content

    @staticmethod
    def semicolon_at_end_of_expression(expression):
        # Tokenizing the cell is most of what `quiet()` costs; without a ';'
        # anywhere there is no ';' token either.
        if ";" not in expression:
            return False
        return displayhook.DisplayHook.semicolon_at_end_of_expression(expression)

    def compute_format_data(self, result):
        # A builtin scalar nobody registered a formatter for has one format,
        # text/plain, and it is its repr: skip asking twelve formatters.
        formatter = self.shell.display_formatter
        if self._plain_text is None or self._plain_text.formatter is not formatter:
            self._plain_text = PlainText(formatter)
        text = self._plain_text(result)
        if text is not None:
            return {"text/plain": text}, {}
        return super().compute_format_data(result)

    def start_displayhook(self):
        super().start_displayhook()
        self.content = {"execution_count": self.prompt_count, "data": {}, "metadata": {}}

    def write_output_prompt(self):
        self.content["execution_count"] = self.prompt_count

    def write_format_data(self, format_dict, md_dict=None):
        self.content["data"] = format_dict
        self.content["metadata"] = md_dict or {}

    def finish_displayhook(self):
        content, self.content = self.content, None
        self._is_active = False
        if content and content["data"]:
            host.publish("execute_result", dumps(content))
