"""`%pmp` and `%%pmp`: submit notebook cells and calls to a pmp Executor and
watch them in live status displays.

    %%pmp submit [--cores N] [--gpus N] [--threads N] [--cwd DIR] [--name VAR] [--key K] [--block]
    %pmp submit [options] f(args)
    %pmp status | %pmp graph | %pmp cancel VAR|all | %pmp resources | %pmp cache clear [KEY]
    %pmp config [--max-workers N] [--max-cores N] [--backend B] [--block-allocation]
                [--cache-directory DIR]

Loaded by pmp-kernel on first use, and by `%load_ext pmp` in IPython or ipykernel.
"""

import argparse
import ast
import keyword
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from pmp.notebook import status_display, status_table


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as a UsageError (a cell error with
    the usage text), never by exiting the kernel."""

    def error(self, message):
        raise UsageError(f"{self.format_usage().strip()}\n%pmp: error: {message}")

    def exit(self, status=0, message=None):
        raise UsageError(message or self.format_help())


def _at_least(minimum):
    """argparse type: a whole number >= `minimum` (a count of workers,
    cores, ranks, GPUs)."""

    def count(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return count


_positive_int = _at_least(1)
_count = _at_least(0)


def _variable_name(text):
    """argparse type: a name a cell can use afterwards."""
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python variable name")
    return text


def _parser():
    parser = _Parser(prog="%pmp", add_help=True)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    submit = commands.add_parser("submit", help="run a cell (%%pmp) or one call (%pmp) remotely")
    submit.add_argument("--cores", type=_positive_int, default=None, help="MPI ranks")
    submit.add_argument("--gpus", type=_count, default=None, help="GPUs per core")
    submit.add_argument("--threads", type=_positive_int, default=None, help="threads per core")
    submit.add_argument("--cwd", default=None, help="working directory of the task")
    submit.add_argument(
        "--name", type=_variable_name, default=None, help="variable bound to the Future"
    )
    submit.add_argument("--block", action="store_true", help="wait and show the result")
    submit.add_argument("--key", default=None, help="the task's name in the task store")
    submit.add_argument("call", nargs=argparse.REMAINDER, help="%%pmp submit: f(args)")
    commands.add_parser("status", help="the tasks submitted from this notebook")
    commands.add_parser("graph", help="the dependency graph of this notebook's tasks, live")
    cancel = commands.add_parser("cancel", help="cancel a queued task")
    cancel.add_argument("target", help="a Future's variable name, or all")
    commands.add_parser("resources", help="backend, allocation, cores, memory, GPUs")
    config = commands.add_parser("config", help="(re)create the Executor the magics use")
    config.add_argument("--max-workers", type=_positive_int, default=None)
    config.add_argument("--max-cores", type=_positive_int, default=None)
    config.add_argument("--backend", default="auto")
    config.add_argument("--block-allocation", action="store_true")
    config.add_argument("--cache-directory", default=None, help="a task store: results kept")
    cache = commands.add_parser("cache", help="the task store of the magics' Executor")
    cache.add_argument("action", choices=["clear"])
    cache.add_argument("key", nargs="?", default=None, help="one entry (default: all)")
    return parser


def _cell_function(cell, namespace, name, filename, magic_line):
    """The cell as a function of no arguments returning its last expression;
    its globals are the notebook's, so the names it uses travel with it.

    Its code is numbered as the cell shows it (line 1 is `magic_line`) and
    carries the cell's text, so that a traceback, on the worker or here,
    shows the cell's lines (see `pmp.worker.task_traceback`)."""
    from pmp.worker.task_traceback import CELL_SOURCE, remember_cell_source

    # A blank first line stands for the %%pmp line: every line keeps its number.
    tree = ast.parse("\n" + cell, filename)
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        tree.body[-1] = ast.Return(value=tree.body[-1].value)
    function = ast.FunctionDef(
        name=name,
        args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=tree.body or [ast.Pass()],
        decorator_list=[],
        returns=None,
        type_params=[],
        lineno=1,
    )
    module = ast.Module(body=[function], type_ignores=[])
    ast.fix_missing_locations(module)
    scope = {}
    exec(compile(module, filename, "exec"), namespace, scope)  # noqa: S102 - the user's cell
    function = scope[name]
    setattr(function, CELL_SOURCE, (filename, f"{magic_line}\n{cell}"))
    remember_cell_source(function)
    return function


@magics_class
class PmpMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self._executor = None
        self._tasks = []  # status_table.NotebookTask, in submit order

    @property
    def executor(self):
        if self._executor is None:
            from pmp import Executor

            self._executor = Executor()
        return self._executor

    @line_cell_magic
    def pmp(self, line, cell=None):
        arguments = _parser().parse_args(shlex.split(line))
        if arguments.command is None:
            raise UsageError(_parser().format_help())
        if arguments.command == "submit":
            return self._submit(arguments, line, cell)
        return getattr(self, f"_{arguments.command}")(arguments, cell)

    def _submit(self, arguments, line, cell):
        resources = {}
        if arguments.cores is not None:
            resources["cores"] = arguments.cores
        if arguments.gpus is not None:
            resources["gpus_per_core"] = arguments.gpus
        if arguments.threads is not None:
            resources["threads_per_core"] = arguments.threads
        if arguments.cwd is not None:
            resources["cwd"] = arguments.cwd
        if arguments.key is not None:
            resources["cache_key"] = arguments.key
        namespace = self.shell.user_ns
        if cell is not None:
            if arguments.call:
                raise UsageError("%%pmp submit takes the cell as the function: no call after it")
            # Named as IPython names a cell in its tracebacks. IPython counts
            # the running cell before it runs it: its number is the one before.
            filename = f"Cell In[{self.shell.execution_count - 1}]"
            # Named after its variable: the name a batch job, a store entry
            # and a traceback show.
            function = _cell_function(
                cell, namespace, arguments.name or "pmp_cell", filename, f"%%pmp {line}".rstrip()
            )
            args = ()
            label = arguments.name or "cell"
        else:
            call = " ".join(arguments.call).strip()
            if not call:
                raise UsageError("%pmp submit needs a call, e.g. %pmp submit f(1, x=2)")
            try:
                expression = ast.parse(call, mode="eval").body
            except SyntaxError as error:
                raise UsageError(f"%pmp submit: not a call: {call!r} ({error.msg})") from None
            if not isinstance(expression, ast.Call):
                raise UsageError(f"%pmp submit: not a call: {call!r}")
            function = eval(ast.unparse(expression.func), namespace)
            args = [eval(ast.unparse(a), namespace) for a in expression.args]
            kwargs = {k.arg: eval(ast.unparse(k.value), namespace) for k in expression.keywords}
            label = arguments.name or call
        try:
            future = self.executor.submit(
                function, *args, resource_dict=resources or None, **({} if cell else kwargs)
            )
        except ValueError as error:
            # A request that can never run (too many cores or GPUs for any
            # node, a bad resource): the Executor's words, as one line.
            raise UsageError(f"%pmp submit: {error}") from None
        call = (function, tuple(args), {} if cell else kwargs)
        self._tasks.append(status_table.NotebookTask(label, future, call))
        if arguments.name:
            namespace[arguments.name] = future
        status_display.show(future, label)
        if arguments.block:
            return future.result()
        return None

    def _status(self, arguments, cell):
        status_table.show(self._tasks, self.executor, self.executor.info["cache_directory"])

    def _graph(self, arguments, cell):
        from pmp.notebook import graph_display

        graph_display.show(self._tasks)

    def _cache(self, arguments, cell):
        from pmp.client.store import clear_cache

        directory = self.executor.info["cache_directory"]
        if directory is None:
            raise UsageError("%pmp cache: no task store; use %pmp config --cache-directory DIR")
        try:
            removed = clear_cache(directory, arguments.key)
        except ValueError as error:
            raise UsageError(f"%pmp cache clear: {error}") from None
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {directory}")

    def _cancel(self, arguments, cell):
        if arguments.target == "all":
            futures = [task.future for task in self._tasks]
        else:
            future = self.shell.user_ns.get(arguments.target)
            if future is None or not hasattr(future, "cancel"):
                raise UsageError(
                    f"%pmp cancel: {arguments.target!r} is not a Future in this notebook"
                )
            futures = [future]
        cancelled = sum(1 for f in futures if f.cancel())
        print(f"cancelled {cancelled} of {len(futures)}")

    def _resources(self, arguments, cell):
        import os

        info = self.executor.info
        lines = [f"backend: {info['backend']} ({info['backend_reason']})"]
        if "partitions" in info:
            # Outside an allocation there is nothing here to count: what
            # matters is what a job can get.
            if info["max_cores"] is not None:
                lines.append(f"max_cores: {info['max_cores']}")
            lines.append("what a job can get (sinfo), per partition:")
            lines += [f"  {name}: {words}" for name, words in info["partitions"].items()]
            if not info["partitions"]:
                lines.append("  nothing: sinfo did not answer (sbatch will say what it refuses)")
        else:
            if info["backend"] == "local":
                gpus = ", ".join(info["gpus"]) or "none detected"
            else:
                picker = "srun" if info["backend"] == "slurm" else "flux"
                gpus = (
                    f"{info['gpu_count']} in the {info['backend']} allocation ({picker} picks them)"
                )
            lines.append(f"max_cores: {info['max_cores']}  cpus here: {os.cpu_count()}")
            lines.append(f"gpus: {gpus}")
        try:
            import psutil

            lines.append(f"memory: {psutil.virtual_memory().total / 2**30:.1f} GiB")
        except ImportError:
            pass
        print("\n".join(lines))

    def _config(self, arguments, cell):
        from pmp import Executor

        # The new Executor first: a mistake in the options must leave the
        # current one, and the tasks it runs, as they were.
        try:
            executor = Executor(
                max_workers=arguments.max_workers,
                max_cores=arguments.max_cores,
                backend=arguments.backend,
                block_allocation=arguments.block_allocation,
                cache_directory=arguments.cache_directory,
            )
        except ValueError as error:
            raise UsageError(f"%pmp config: {error}") from None
        if self._executor is not None:
            # Its queued and running tasks still finish; it takes no new ones.
            self._executor.shutdown(wait=False)
        self._executor = executor
        print(f"pmp magics now use: {executor.info['backend']} backend")


def load_ipython_extension(shell):
    shell.register_magics(PmpMagics(shell))
