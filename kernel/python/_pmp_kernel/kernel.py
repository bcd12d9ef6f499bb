"""Shell requests, handled as ipykernel handles them. The host calls
`Kernel.dispatch` on the Python thread for each request it does not answer
itself; it publishes busy/idle, flushes output and sends the reply.

Subshells (JEP 91) call `dispatch` too, each from its own thread, while the
main shell may be in a cell: what one request sets for the next step of its
own handling is kept per thread."""

# `_signal`, the C module: `signal.signal` wraps it to turn handlers into
# enums, which costs more than the call itself, twice per request.
import _signal
import json
import signal
import threading

import _pmp_kernel_host as host
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.utils.tokenutil import token_at_cursor

from . import comms, info
from .jsonutil import dumps
from .shell import save_history


def _ignore_sigint():
    # Between requests an interrupt must do nothing. A SIGINT that arrived just
    # as the request finished is still pending and raises in the first
    # attempt; retry until the handler is swapped.
    while True:
        try:
            _signal.signal(_SIGINT, _signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


_SIGINT = int(signal.SIGINT)


def _error(ename, evalue):
    return {"status": "error", "ename": ename, "evalue": evalue, "traceback": []}


class Kernel:
    def __init__(self, shell, stdin, version):
        self.shell = shell
        self.stdin = stdin
        self.version = version
        # Signals reach Python's main thread only: the main shell's.
        self._main_thread = threading.get_ident()
        # `abort_queued`: set by execute_request, read by dispatch.
        self._request = threading.local()
        self.handlers = {
            "execute_request": self.execute_request,
            "complete_request": self.complete_request,
            "inspect_request": self.inspect_request,
            "is_complete_request": self.is_complete_request,
            "history_request": self.history_request,
            "comm_info_request": self.comm_info_request,
            "comm_open": self.comm_message,
            "comm_msg": self.comm_message,
            "comm_close": self.comm_message,
        }

    # ipywidgets' Output widget asks the kernel for the current request.
    def get_parent(self, channel="shell"):
        return self.shell.get_parent()

    def dispatch(self, msg_type, header, content, metadata, buffers):
        """Handle one request; returns (reply content as JSON or None,
        abort queued executes?, shut the kernel down?)."""
        handler = self.handlers.get(msg_type)
        if handler is None:
            if msg_type.endswith("_request"):
                reply = _error("UnknownMessageType", f"pmp-kernel does not handle {msg_type}")
                return dumps(reply), False, False
            return None, False, False
        header = json.loads(header)
        parent = {
            "header": header,
            "msg_id": header.get("msg_id"),
            "msg_type": msg_type,
            "parent_header": {},
            "metadata": json.loads(metadata) if metadata and metadata != b"{}" else {},
            "content": json.loads(content) if content else {},
            "buffers": buffers,
        }
        self.shell.set_parent(parent)
        self._request.abort_queued = False
        if threading.get_ident() != self._main_thread:
            reply = handler(parent["content"], parent)
        else:
            try:
                _signal.signal(_SIGINT, signal.default_int_handler)
                reply = handler(parent["content"], parent)
            finally:
                _ignore_sigint()
        exit_now = bool(self.shell.exit_now)
        abort = self._request.abort_queued
        return (None if reply is None else dumps(reply)), abort, exit_now

    def save_history(self):
        """Called by the host once the kernel has been idle for a moment."""
        save_history(self.shell)

    def execute_request(self, content, parent):
        shell = self.shell
        code = content.get("code", "")
        silent = bool(content.get("silent", False))
        store_history = bool(content.get("store_history", not silent))
        if not silent:
            execute_input = {"code": code, "execution_count": shell.execution_count}
            host.publish("execute_input", dumps(execute_input))
        self.stdin.allowed = bool(content.get("allow_stdin", False))
        cell_id = parent["metadata"].get("cellId")
        try:
            result = shell.run_cell(
                code, store_history=store_history, silent=silent, cell_id=cell_id
            )
        finally:
            self.stdin.allowed = False
            comms.install()
        failed = not result.success or shell._last_traceback_during_displayhook
        reply = {
            "status": "error" if failed else "ok",
            "execution_count": shell.execution_count - 1,
        }
        if failed:
            error = result.error_before_exec
            if error is None:
                error = result.error_in_exec
            reply["ename"] = type(error).__name__
            reply["evalue"] = str(error)
            reply["traceback"] = shell._last_traceback or []
            reply["user_expressions"] = {}
            self._request.abort_queued = not silent and bool(content.get("stop_on_error", True))
        else:
            reply["user_expressions"] = shell.user_expressions(
                content.get("user_expressions") or {}
            )
        payload = shell.payload_manager.read_payload()
        reply["payload"] = payload
        # Clearing sets a trait; an empty payload (most cells) stays as it is.
        if payload:
            shell.payload_manager.clear_payload()
        return reply

    def complete_request(self, content, parent):
        code = content.get("code", "")
        cursor_pos = content.get("cursor_pos")
        if cursor_pos is None:
            cursor_pos = len(code)
        with provisionalcompleter():
            completions = list(
                rectify_completions(code, self.shell.Completer.completions(code, cursor_pos))
            )
        types = [
            {
                "start": c.start,
                "end": c.end,
                "text": c.text,
                "type": c.type,
                "signature": c.signature,
            }
            for c in completions
        ]
        start, end = (
            (completions[0].start, completions[0].end) if completions else (cursor_pos,) * 2
        )
        return {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {"_jupyter_types_experimental": types},
        }

    def inspect_request(self, content, parent):
        code = content.get("code", "")
        name = token_at_cursor(code, content.get("cursor_pos", len(code)))
        reply = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        try:
            bundle = self.shell.object_inspect_mime(
                name, detail_level=content.get("detail_level", 0), omit_sections=()
            )
        except KeyError:
            return reply
        bundle.pop("text/html", None)
        reply["data"] = bundle
        reply["found"] = True
        return reply

    def is_complete_request(self, content, parent):
        status, indent = self.shell.input_transformer_manager.check_complete(
            content.get("code", "")
        )
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    def history_request(self, content, parent):
        history = self.shell.history_manager
        raw = bool(content.get("raw", True))
        output = bool(content.get("output", False))
        kind = content.get("hist_access_type", "tail")
        if kind == "tail":
            n = content.get("n") or 10
            entries = history.get_tail(n, raw=raw, output=output, include_latest=True)
        elif kind == "range":
            entries = history.get_range(
                content.get("session", 0),
                content.get("start", 0),
                content.get("stop"),
                raw=raw,
                output=output,
            )
            # IPython numbers the running session 0 here but not in tail or
            # search results; answer with its real number throughout.
            session = history.session_number
            entries = ((s or session, line, entry) for s, line, entry in entries)
        elif kind == "search":
            entries = history.search(
                content.get("pattern", "*"),
                raw=raw,
                output=output,
                n=content.get("n"),
                unique=bool(content.get("unique", False)),
            )
        else:
            entries = []
        return {"status": "ok", "history": list(entries)}

    def comm_info_request(self, content, parent):
        return {"status": "ok", "comms": comms.info(content.get("target_name"))}

    def comm_message(self, content, parent):
        handle = getattr(comms.manager, parent["msg_type"])
        handle(None, None, parent)

    def kernel_info(self):
        return info.content(self.version, self.shell.banner)
