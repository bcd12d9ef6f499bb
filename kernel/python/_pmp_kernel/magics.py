"""`%pmp` and `%%pmp` in pmp-kernel without an explicit `%load_ext pmp`.

A stub is registered at start-up; its first use loads the `pmp` IPython
extension (which replaces the stub with the real magics) and runs the line
or cell again. Importing pmp at start-up instead would slow every kernel
start for users who never use the magics."""

from IPython.core.error import UsageError


def register_pmp_magics(shell):
    def pmp(line, cell=None):
        outcome = shell.extension_manager.load_extension("pmp")
        if outcome == "no load function":
            raise UsageError("the installed pmp package has no IPython extension")
        kind = "line" if cell is None else "cell"
        if shell.find_magic("pmp", kind) is pmp:
            raise UsageError(f"the pmp extension does not provide a {kind} magic %pmp")
        if cell is None:
            return shell.run_line_magic("pmp", line)
        return shell.run_cell_magic("pmp", line, cell)

    shell.register_magic_function(pmp, magic_kind="line_cell", magic_name="pmp")
    try:
        # Cheap to import; Tab completes %pmp lines before their first use.
        from pmp.notebook import completion
    except ImportError:
        return  # no pmp installed: the first use of %pmp says so
    completion.register(shell)
