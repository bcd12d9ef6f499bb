"""Objects whose unpickling leaves a file behind: the proof, in tests of
what pmp refuses to unpickle (forged messages, forged or planted store
entries), that something was unpickled. Their pickles name only builtins,
so they load anywhere, as an attacker's would."""

import pathlib


class TouchOnUnpickle:
    """Unpickling this creates ``path`` (no shell involved)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


class OpenOnUnpickle:
    """Unpickling this opens ``path`` for writing, creating it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")
