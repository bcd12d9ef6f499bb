"""`%pmp` and `%%pmp`: submit notebook cells and calls to a pmp Executor and
watch them in live status displays.

    %%pmp submit [--cores N] [--gpus N] [--threads N] [--cwd DIR] [--name VAR] [--key K] [--block]
    %%pmp submit --local [--name VAR]     (here in the kernel, under its debugger)
    %pmp submit [options] f(args)
    %pmp status | %pmp graph | %pmp cancel VAR|all | %pmp resources | %pmp cache clear [KEY]
    %pmp config [--max-workers N] [--max-cores N] [--backend B] [--block-allocation]
                [--cache-directory DIR] [--allocation K=V,...]

`%pmp` alone or `%pmp --help` lists the commands, `%pmp COMMAND --help` one
command's options; Tab completes them (`completion`).

Loaded by pmp-kernel on first use, and by `%load_ext pmp` in IPython or ipykernel.
"""

import argparse
import ast
import keyword
import shlex
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from pmp.client.backends import BACKENDS
from pmp.client.task_names import CELL_FUNCTION, name_task, task_name
from pmp.notebook import status_display, status_table


class _HelpShown(Exception):
    """`--help` printed the help: the magic has nothing more to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as a UsageError (a cell error with
    the usage text), never by exiting the kernel."""

    def error(self, message):
        raise UsageError(f"{self.format_usage().strip()}\n%pmp: error: {message}")

    def exit(self, status=0, message=None):
        # Only `--help` exits (errors go through `error`), after printing
        # the help: the cell ends there, without an error.
        raise _HelpShown

    def add_argument(self, *args, help=None, **kwargs):
        return super().add_argument(*args, help=_literal(help), **kwargs)


def _literal(text):
    """A help text as argparse prints it: argparse reads `%` as the start
    of a format, and these texts name %pmp and %%pmp."""
    return None if text is None else text.replace("%", "%%")


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


# pmp.Allocation's fields as `%pmp config --allocation` reads them: counts,
# times (seconds, a Slurm time string or a Flux duration), and words.
_ALLOCATION_COUNTS = ("nodes", "max_allocations", "min_allocations", "backlog")
_ALLOCATION_TIMES = ("time_limit", "idle_timeout", "drain")


def _allocation_fields(text):
    """`nodes=1,time_limit=30:00,...` as pmp.Allocation's keyword arguments;
    extra_args is the rest of its value split at spaces (quote the option)."""
    fields = {}
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not value:
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        if key in _ALLOCATION_COUNTS:
            if not value.isdigit():
                raise argparse.ArgumentTypeError(f"{key} must be a whole number, got {value!r}")
            fields[key] = int(value)
        elif key in _ALLOCATION_TIMES:
            fields[key] = int(value) if value.isdigit() else value
        elif key == "partition":
            fields[key] = value
        elif key == "extra_args":
            fields[key] = value.split()
        else:
            known = ", ".join((*_ALLOCATION_COUNTS, *_ALLOCATION_TIMES, "partition", "extra_args"))
            raise argparse.ArgumentTypeError(f"{key!r} is not one of {known}")
    return fields


def parser():
    """What %pmp accepts: its commands and their options, with the help that
    `%pmp`, `%pmp --help` and `%pmp COMMAND --help` print. Tab completion
    offers the same words (`completion`)."""
    top = _Parser(
        prog="%pmp",
        description="Run notebook cells and calls in pmp workers and watch them live.",
        epilog="%pmp COMMAND --help shows the options of one command.",
    )
    commands = top.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_Parser
    )

    def command(name, summary):
        return commands.add_parser(name, help=_literal(summary), description=summary)

    submit = command(
        "submit", "run the cell (%%pmp submit) or one call (%pmp submit f(x)) in a worker"
    )
    submit.add_argument("--cores", metavar="N", type=_positive_int, help="MPI ranks (default 1)")
    submit.add_argument("--gpus", metavar="N", type=_count, help="GPUs per core")
    submit.add_argument("--threads", metavar="N", type=_positive_int, help="threads per core")
    submit.add_argument("--cwd", metavar="DIR", help="working directory of the task")
    submit.add_argument(
        "--name", metavar="VAR", type=_variable_name, help="bind the task's Future to VAR"
    )
    submit.add_argument(
        "--key",
        metavar="K",
        help="the task's key in the task store (%pmp config --cache-directory)",
    )
    submit.add_argument(
        "--block",
        action="store_true",
        help="wait and show the result (an interrupt stops the wait, not the task)",
    )
    submit.add_argument(
        "--local",
        action="store_true",
        help="run it here in the kernel instead, and wait: the debugger stops at its breakpoints",
    )
    submit.add_argument(
        "call", nargs=argparse.REMAINDER, help="%pmp submit only: the call, e.g. f(1, x=2)"
    )
    command("status", "one live table of this notebook's tasks, the workers and the task store")
    command("graph", "the dependency graph of this notebook's tasks, live")
    cancel = command("cancel", "cancel queued tasks (running ones too where they are batch jobs)")
    cancel.add_argument("target", metavar="VAR|all", help="a Future's variable name, or all")
    command("resources", "backend, cores, memory and GPUs the tasks can use")
    config = command("config", "(re)create the Executor the magics use; its tasks still finish")
    config.add_argument(
        "--max-workers", metavar="N", type=_positive_int, help="workers at once, at most"
    )
    config.add_argument(
        "--max-cores", metavar="N", type=_positive_int, help="cores in use at once, at most"
    )
    config.add_argument(
        "--backend",
        metavar="B",
        default="auto",
        help=f"where workers run: {', '.join(BACKENDS)} (default auto: from the environment)",
    )
    config.add_argument(
        "--block-allocation",
        action="store_true",
        help="max-workers workers, started once, run every task",
    )
    config.add_argument(
        "--cache-directory", metavar="DIR", help="a task store: results kept across restarts"
    )
    config.add_argument(
        "--allocation",
        metavar="K=V,...",
        type=_allocation_fields,
        help="elastic Slurm or Flux allocations (pmp.Allocation's fields), e.g. "
        "nodes=1,time_limit=30:00,max_allocations=2",
    )
    cache = command("cache", "the task store of the magics' Executor")
    cache.add_argument("action", choices=["clear"], help="clear: remove entries")
    cache.add_argument("key", metavar="KEY", nargs="?", help="one entry (default: all)")
    return top


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


def _running_cell_name(shell):
    """The file name IPython compiled the running cell as (while the
    debugger is on, the file the frontend set its breakpoints in), found
    among the callers; None outside a cell."""
    cells = getattr(shell.compile, "_filename_map", {})
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in cells:
            return frame.f_code.co_filename
        frame = frame.f_back
    return None


class StoppedWaiting(KeyboardInterrupt):
    """An interrupt of `%pmp submit --block`: it stopped the wait, not the
    task. Still a KeyboardInterrupt, for code that catches one; shown as its
    one line, not as a traceback through pmp's and threading's waits."""

    def _render_traceback_(self):
        # IPython shows these lines in place of the traceback.
        return [str(self)]


def _show_and_wait(future, name, label):
    """`--block`: the task's display, then its result. An interrupt from the
    display on (the task is submitted) is StoppedWaiting."""
    try:
        status_display.show(future, label)
        return future.result()
    except KeyboardInterrupt:
        raise StoppedWaiting(_stopped_waiting(future, name, label)) from None


def _stopped_waiting(future, name, label):
    """One line: what became of the task the interrupted wait was for, and
    whether `%pmp cancel` can still stop it."""
    task = f"task {name or label}"
    if future.done():
        return f"stopped waiting; {task} has ended: its display shows how"
    # Without --name no variable holds the Future: only `all` reaches it.
    cancel = f"`%pmp cancel {name}`" if name else "`%pmp cancel all`"
    others = "" if name else ", with the notebook's other tasks"
    if future.job_state is not None:
        # A batch job: it goes on without this kernel, and cancel scancels
        # it, running or not (the Future may not know yet that it started).
        return f"stopped waiting; {task} keeps running ({cancel} stops it{others})"
    if not future.running():
        return f"stopped waiting; {task} is still queued ({cancel} cancels it{others})"
    return (
        f"stopped waiting; {task} keeps running to its end "
        "(%pmp cancel stops only queued tasks and batch jobs)"
    )


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
        try:
            arguments = parser().parse_args(shlex.split(line))
        except _HelpShown:
            return None
        if arguments.command is None:
            # `%pmp` alone, as a new user types it first.
            parser().print_help()
            return None
        if arguments.command == "submit":
            return self._submit(arguments, line, cell)
        return getattr(self, f"_{arguments.command}")(arguments, cell)

    def _submit(self, arguments, line, cell):
        if arguments.local:
            return self._run_locally(arguments, line, cell)
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
        # Named as IPython names a cell in its tracebacks. IPython counts
        # the running cell before it runs it: its number is the one before.
        filename = f"Cell In[{self.shell.execution_count - 1}]"
        function, args, kwargs = self._function_and_arguments(arguments, line, cell, filename)
        try:
            future = self.executor.submit(
                function, *args, resource_dict=resources or None, **kwargs
            )
        except ValueError as error:
            # A request that can never run (too many cores or GPUs for any
            # node, a bad resource): the Executor's words, as one line.
            raise UsageError(f"%pmp submit: {error}") from None
        if arguments.name:
            name_task(future, arguments.name)
        label = task_name(future)
        call = (function, tuple(args), kwargs)
        self._tasks.append(status_table.NotebookTask(label, future, call))
        if arguments.name:
            namespace[arguments.name] = future
        if arguments.block:
            return _show_and_wait(future, arguments.name, label)
        status_display.show(future, label)
        return None

    def _run_locally(self, arguments, line, cell):
        """`--local`: the cell (or call) runs in the kernel, as a plain cell
        would, so that the debugger can stop in it; `--name` still binds a
        Future, already done when the cell ends."""
        import concurrent.futures

        given = [
            f"--{option}"
            for option in ("cores", "gpus", "threads", "cwd", "key")
            if getattr(arguments, option) is not None
        ]
        if given:
            raise UsageError(
                f"%pmp submit --local runs in the kernel, where {', '.join(given)} cannot "
                "apply: leave them out, or leave out --local to run in a worker"
            )
        filename = _running_cell_name(self.shell) or f"Cell In[{self.shell.execution_count - 1}]"
        function, args, kwargs = self._function_and_arguments(arguments, line, cell, filename)
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        if arguments.name:
            self.shell.user_ns[arguments.name] = future
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            future.set_exception(error)
            raise
        future.set_result(result)
        return result

    def _function_and_arguments(self, arguments, line, cell, filename):
        """What `%%pmp submit` runs: the cell as a function (compiled as
        `filename`), or the call of `%pmp submit f(x)`: (function, args, kwargs)."""
        namespace = self.shell.user_ns
        if cell is not None:
            if arguments.call:
                raise UsageError("%%pmp submit takes the cell as the function: no call after it")
            # Named after its variable: the name a batch job, a store entry
            # and a traceback show.
            function = _cell_function(
                cell, namespace, arguments.name or CELL_FUNCTION, filename, f"%%pmp {line}".rstrip()
            )
            return function, (), {}
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
            return function, args, kwargs

    def _status(self, arguments, cell):
        # Made only by use: a notebook of the user's own Executors needs none of the magics'.
        executor = self._executor
        store = None if executor is None else executor.info["cache_directory"]
        status_table.show(self._tasks, executor, store)

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
        cancelled, stopped = 0, []
        for future in futures:
            # cancel() stops a running batch job too (scancel, flux cancel) but
            # returns False: concurrent.futures cannot cancel a running Future.
            running_job = getattr(future, "job", None) is not None and future.running()
            if future.cancel():
                cancelled += 1
            elif running_job:
                stopped.append(future)
        line = f"cancelled {cancelled + len(stopped)} of {len(futures)}"
        if stopped:
            jobs = ", ".join(future.job for future in stopped)
            status = stopped[0].job_status
            system = status.system if status is not None else "its job system"
            if len(stopped) == 1:
                told = f"job {jobs} was running: {system} cancelled it; its Future fails"
            else:
                told = f"jobs {jobs} were running: {system} cancelled them; their Futures fail"
            line += f" ({told}, as a running Future cannot be cancelled)"
        print(line)

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
        from pmp import Allocation, Executor

        # The new Executor first: a mistake in the options must leave the
        # current one, and the tasks it runs, as they were.
        try:
            allocation = None
            if arguments.allocation is not None:
                allocation = Allocation(**arguments.allocation)
            executor = Executor(
                max_workers=arguments.max_workers,
                max_cores=arguments.max_cores,
                backend=arguments.backend,
                block_allocation=arguments.block_allocation,
                cache_directory=arguments.cache_directory,
                allocation=allocation,
            )
        except (ValueError, TypeError) as error:
            raise UsageError(f"%pmp config: {error}") from None
        if self._executor is not None:
            # Its queued and running tasks still finish; it takes no new ones.
            self._executor.shutdown(wait=False)
        self._executor = executor
        print(f"pmp magics now use: {executor.info['backend']} backend")
