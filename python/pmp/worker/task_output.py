"""A task's `sys.stdout` and `sys.stderr` on the worker.

While a task runs, both are replaced by writers whose text goes back to the
client with the task (to its status display in a notebook, to the client's
own streams in a script) instead of into the worker's file descriptors,
which end up in the log of whatever started the worker. Text is sent in
chunks: at once when the last send is older than `_INTERVAL`, otherwise by a
timer, so a task printing in a tight loop costs a message per interval, not
per line. Whatever is left is sent when the task ends, before its result.

Output written straight to file descriptors 1 and 2 (C extensions,
subprocesses) is not captured here: those are pipes to the scheduler, which
gives what it reads from them to the task the worker runs (worker/src/pipes.rs).
"""

import contextlib
import io
import os
import sys
import threading
import time

_INTERVAL = 0.1
_CHUNK = 64 * 1024


class _Outbox:
    """Text both streams wrote and not yet sent, in order, under one lock, so
    stdout and stderr arrive interleaved as they were written."""

    def __init__(self, send):
        self._send = send
        self._parts = []  # [(name, text)]
        self._size = 0
        self._last_sent = 0.0
        self._timer = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.open = True

    def put(self, name, text):
        """False once the task has ended, or in a process the task forked
        (the caller writes to the original stream)."""
        if os.getpid() != self._pid:
            return False
        with self._lock:
            if not self.open:
                return False
            self._parts.append((name, text))
            self._size += len(text)
            now = time.monotonic()
            # Whole lines go at once unless the last send was very recent;
            # stderr lines always at once, as a crash may follow them.
            line = "\n" in text
            if (
                self._size >= _CHUNK
                or (line and name == "stderr")
                or (line and now - self._last_sent >= _INTERVAL)
            ):
                self._send_locked(now)
            elif self._timer is None:
                self._timer = threading.Timer(_INTERVAL, self.flush)
                self._timer.daemon = True
                self._timer.start()
            return True

    def flush(self):
        with self._lock:
            self._timer = None
            self._send_locked(time.monotonic())

    def close(self):
        """Send what is left; later writes go to the original streams."""
        with self._lock:
            self._send_locked(time.monotonic())
            self.open = False
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _send_locked(self, now):
        parts, self._parts = self._parts, []
        self._size = 0
        self._last_sent = now
        # Consecutive parts of one stream travel as one message.
        start = 0
        for i in range(1, len(parts) + 1):
            if i == len(parts) or parts[i][0] != parts[start][0]:
                text = "".join(part for _, part in parts[start:i])
                self._send(parts[start][0], text.encode("utf-8", "surrogateescape"))
                start = i


class TaskStream(io.TextIOBase):
    """sys.stdout or sys.stderr of a running task."""

    def __init__(self, name, outbox, original):
        super().__init__()
        self.name = name
        self._outbox = outbox
        self._original = original

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        # For code that hands sys.stdout to a subprocess: its output goes to
        # the worker's real stream, which the scheduler reads as the task's.
        return self._original.fileno()

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text and not self._outbox.put(self.name, text):
            # A thread the task left behind, writing after the task ended.
            return self._original.write(text)
        return len(text)

    def flush(self):
        self._outbox.flush()


class Capture:
    """Entered around every task: sys.stdout/sys.stderr send to
    ``send(name, data)`` while it runs. Made once per worker, so a task pays
    for two attribute swaps, not for new stream objects. Text a thread writes
    between tasks goes to the worker's own streams; during a later task, to
    that task (as a thread's output goes to the running cell in ipykernel)."""

    def __init__(self, send):
        self._outbox = _Outbox(send)
        self._outbox.open = False
        self._streams = None
        self._originals = None

    def __enter__(self):
        originals = sys.stdout, sys.stderr
        if originals != self._originals:
            self._originals = originals
            self._streams = (
                TaskStream("stdout", self._outbox, originals[0]),
                TaskStream("stderr", self._outbox, originals[1]),
            )
        self._outbox.open = True
        sys.stdout, sys.stderr = self._streams
        return self

    def __exit__(self, *exc_info):
        self._outbox.close()
        # A task that replaced sys.stdout itself and did not restore it gets
        # the worker's streams back all the same.
        sys.stdout, sys.stderr = self._originals


class Collector:
    """A `send` that keeps the text, for ranks above 0: their output travels
    to rank 0 with their outcome, and rank 0 sends it on."""

    def __init__(self):
        self.chunks = []

    def __call__(self, name, data):
        self.chunks.append((name, data))

    def take(self):
        chunks, self.chunks = self.chunks, []
        return chunks


def relay_rank_output(send, rank, chunks):
    """Send a follower rank's collected output, each line marked with its rank."""
    for name in ("stdout", "stderr"):
        data = b"".join(d for n, d in chunks if n == name)
        if data:
            lines = data.splitlines(keepends=True)
            if not data.endswith(b"\n"):
                lines[-1] += b"\n"
            send(name, b"".join(b"[rank %d] " % rank + line for line in lines))


def flush():
    """Empty this process's streams (at a task's end, before its outcome
    leaves; at the worker's end)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
