"""executorlib 1.x's executor classes as thin fronts of `pmp.Executor`:
`from pmp import SingleNodeExecutor` in place of `from executorlib import
SingleNodeExecutor` is the whole change for code written for executorlib.

- SingleNodeExecutor: processes on this machine (the local backend);
- SlurmJobExecutor / FluxJobExecutor: srun steps / `flux run` jobs inside an
  allocation or a Flux instance the client runs in (srun outside one too:
  each worker's srun is then a job of its own);
- SlurmClusterExecutor / FluxClusterExecutor: each call a batch job of the
  cluster (`sbatch` / `flux submit`), which outlives the client and reads
  its input from the task store.

Each takes executorlib's constructor arguments, with `resource_dict` at the
executor level: the keys `pmp.Executor` has as parameters become those, the
others are every call's defaults. A key or an argument pmp cannot honour
where it is used is a ValueError, never silently dropped.
"""

import datetime
import logging
import os
import shutil
import subprocess
import traceback

from pmp.client import serialize
from pmp.client.batch_checks import check_batch_value, check_priority
from pmp.client.executor import Executor
from pmp.client.resources import check_bool, check_count, check_plain
from pmp.client.workflow_graph import GraphRecorder, check_picture_name, publish

# resource_dict keys as executorlib names them, executor level and per call.
EXECUTORLIB_KEYS = (
    "cores",
    "threads_per_core",
    "gpus_per_core",
    "cwd",
    "openmpi_oversubscribe",
    "slurm_cmd_args",
    "num_nodes",
    "exclusive",
    "error_log_file",
    "restart_limit",
    "run_time_max",
    "memory_max",
    "partition",
    "priority",
    "cache_key",
    "cache_directory",
)
# Keys that a batch job honours (the cluster executors'), and inside an
# allocation a call's own srun step or Flux job too (`_NODE_KEYS`), and
# memory_max everywhere: the scheduler keeps it free on the call's node.
_NODE_KEYS = ("num_nodes", "exclusive")
_EVERYWHERE_KEYS = (*_NODE_KEYS, "memory_max")
_JOB_KEYS = (
    "num_nodes",
    "exclusive",
    "run_time_max",
    "memory_max",
    "partition",
    "submission_template",
)


class _ExecutorlibFront(Executor):
    """What the five classes share: executorlib's arguments turned into
    `pmp.Executor`'s, and its per-call names into pmp's."""

    _backend_name = "local"
    _api_name = "SingleNodeExecutor"

    def _setup(
        self,
        max_workers,
        cache_directory,
        max_cores,
        resource_dict,
        hostname_localhost,
        block_allocation,
        init_function,
        disable_dependencies,
        refresh_rate,
        plot_dependency_graph,
        plot_dependency_graph_filename,
        export_workflow_filename,
        log_obj_size,
        wait,
        restart_limit,
        openmpi_oversubscribe,
        pmi_mode=None,
        flux_executor=None,
        flux_executor_nesting=False,
        flux_log_files=False,
        pysqa_config_directory=None,
    ):
        name = self._api_name
        self._graph = None
        if plot_dependency_graph or plot_dependency_graph_filename or export_workflow_filename:
            # Recorded, not run: every Future is done with None, and the graph
            # is drawn or written when the executor shuts down.
            # Written at shutdown: a name that cannot be written fails now instead.
            if plot_dependency_graph_filename is not None:
                _check_file_name("plot_dependency_graph_filename", plot_dependency_graph_filename)
                check_picture_name(plot_dependency_graph_filename)
            if export_workflow_filename is not None:
                _check_file_name("export_workflow_filename", export_workflow_filename)
            self._graph = GraphRecorder()
            self._graph_files = (plot_dependency_graph_filename, export_workflow_filename)
        for argument, value, default in (
            ("flux_executor_nesting", flux_executor_nesting, False),
            ("pysqa_config_directory", pysqa_config_directory, None),
        ):
            if value != default:
                raise ValueError(f"{name}({argument}={value!r}) is not supported by pmp yet")
        check_bool("log_obj_size", log_obj_size)
        check_bool("wait", wait)
        check_bool("flux_log_files", flux_log_files)
        # executorlib's default is None, which means False.
        if hostname_localhost is not None:
            check_bool("hostname_localhost", hostname_localhost)
        check_bool("openmpi_oversubscribe", openmpi_oversubscribe)
        check_count("restart_limit", restart_limit)
        if log_obj_size and self._cluster_jobs:
            raise ValueError(
                f"{name}(log_obj_size=True): calls travel through the task store as files, "
                "not messages; their sizes are the files' (get_cache_data)"
            )
        self._log_obj_size = log_obj_size
        resource_dict = _checked_keys(resource_dict, "resource_dict")
        call_defaults = {}
        for key in ("error_log_file", "restart_limit", "priority", "slurm_cmd_args", *_JOB_KEYS):
            if key in resource_dict:
                call_defaults[key] = resource_dict.pop(key)
        # Every call's defaults, checked once here rather than at each call.
        self._check_call_keys(call_defaults)
        if restart_limit:
            call_defaults.setdefault("restart_limit", restart_limit)
        if "cache_key" in resource_dict:
            raise ValueError(
                "resource_dict key 'cache_key' names one call's entry in the task store: give "
                "it in submit()'s resource_dict, not the executor's"
            )
        cores = resource_dict.pop("cores", 1)
        extra = []
        if pmi_mode is not None:
            extra = self._pmi_arguments(pmi_mode)
        if flux_log_files:
            # One pair per worker job (executorlib writes flux.out / flux.err).
            extra += ["--output=flux-{{id}}.out", "--error=flux-{{id}}.err"]
        if call_defaults.get("slurm_cmd_args") and not self._cluster_jobs:
            extra += call_defaults.pop("slurm_cmd_args")
        # The Executor's own: a block-allocated pool's workers keep it for
        # their life, and every call's worker by default.
        memory_max = None if self._cluster_jobs else call_defaults.pop("memory_max", None)
        self._call_defaults = call_defaults
        self._wait_on_exit = wait
        check_count("resource_dict key 'cores'", cores, "cores")
        gpus_per_core = check_count(
            "resource_dict key 'gpus_per_core'",
            resource_dict.pop("gpus_per_core", 0),
            "gpus_per_core",
        )
        oversubscribe = check_bool(
            "resource_dict key 'openmpi_oversubscribe'",
            resource_dict.pop("openmpi_oversubscribe", False),
        )
        # `info`'s keys under executorlib's names, where they mean what pmp's do.
        self._executorlib_info = {
            "cores": cores,
            "gpus_per_core": gpus_per_core,
            "cwd": resource_dict.get("cwd"),
            "openmpi_oversubscribe": openmpi_oversubscribe or oversubscribe,
            "hostname_localhost": hostname_localhost,
            "log_obj_size": log_obj_size,
        }
        if block_allocation:
            self._executorlib_info.update(init_function=init_function, restart_limit=restart_limit)
        if self._api_name.startswith(("Slurm", "Flux")):
            self._executorlib_info["pmi_mode"] = pmi_mode
        super().__init__(
            max_workers=max_workers,
            max_cores=max_cores,
            cores_per_worker=cores,
            threads_per_core=resource_dict.pop("threads_per_core", 1),
            gpus_per_worker=gpus_per_core * cores,
            oversubscribe=openmpi_oversubscribe or oversubscribe,
            cwd=resource_dict.pop("cwd", None),
            executor=flux_executor,
            hostname_localhost=bool(hostname_localhost),
            backend=self._backend_name,
            block_allocation=block_allocation,
            init_function=init_function,
            command_line_argument_lst=extra,
            memory_max=memory_max,
            disable_dependencies=disable_dependencies,
            refresh_rate=refresh_rate,
            cache_directory=(
                cache_directory
                if cache_directory is not None
                else resource_dict.pop("cache_directory", None)
            ),
        )
        nodes = {key: call_defaults[key] for key in _NODE_KEYS if key in call_defaults}
        if nodes and not self._cluster_jobs:
            # Refused once here rather than at every call (a pool, the local backend).
            self._engine.check_call(nodes)

    def _check_call_keys(self, given):
        """The keys of `given` (a resource_dict) that this class handles itself
        rather than pmp.Executor: refused where they cannot be honoured,
        checked where they can. Their values change in place."""
        if not self._cluster_jobs:
            for key in _NODE_KEYS:
                # executorlib's defaults: the scheduler chooses.
                if key in given and given[key] in (None, False):
                    del given[key]
            if "memory_max" in given and given["memory_max"] is None:
                del given["memory_max"]  # none kept
            for key in _JOB_KEYS:
                if key in given and key not in _EVERYWHERE_KEYS:
                    raise ValueError(
                        f"resource_dict key {key!r} is for batch jobs: "
                        f"{self._api_name} does not submit any (SlurmClusterExecutor and "
                        "FluxClusterExecutor do)"
                    )
        for key in (*_JOB_KEYS, "slurm_cmd_args"):
            if key in given:
                given[key] = check_batch_value(key, given[key])
        if "restart_limit" in given:
            check_count(
                "resource_dict key 'restart_limit'", given["restart_limit"], "restart_limit"
            )
        if "openmpi_oversubscribe" in given:
            check_bool("resource_dict key 'openmpi_oversubscribe'", given["openmpi_oversubscribe"])
        if given.get("error_log_file") is not None:
            given["error_log_file"] = _check_file_name(
                "resource_dict key 'error_log_file'", given["error_log_file"]
            )

    def _pmi_arguments(self, pmi_mode):
        raise ValueError(f"{self._api_name} has no pmi_mode")

    def _place_priority(self, merged):
        """`priority` outside the cluster classes: Flux's urgency of the
        call's own `flux run` job; nothing else has a queue to order."""
        priority = check_priority("resource_dict key 'priority'", merged.pop("priority"))
        if self._backend.name != "flux" or self._block:
            raise ValueError(
                "resource_dict key 'priority' is a queueing system's: it is honoured for "
                "Flux jobs (FluxJobExecutor without block_allocation, FluxClusterExecutor, "
                "as --urgency); here calls are not queued by Flux"
            )
        extra = merged.get("command_line_argument_lst", self._defaults["command_line_argument_lst"])
        merged["command_line_argument_lst"] = [*extra, f"--urgency={priority}"]

    # ---- executorlib's behaviour where it differs from pmp.Executor's ----

    def submit(self, fn, /, *args, resource_dict=None, **kwargs):
        given = _checked_keys(resource_dict, "resource_dict")
        self._check_call_keys(given)
        merged = {**self._call_defaults, **given}
        error_log_file = merged.pop("error_log_file", None)
        if "priority" in merged and not self._cluster_jobs:
            self._place_priority(merged)
        if "openmpi_oversubscribe" in merged:
            merged["oversubscribe"] = merged.pop("openmpi_oversubscribe")
        if not self._cluster_jobs and "slurm_cmd_args" in merged:
            merged["command_line_argument_lst"] = merged.pop("slurm_cmd_args")
        if self._graph is not None:
            return self._graph.record(fn, args, kwargs)
        future = super().submit(fn, *args, resource_dict=merged or None, **kwargs)
        if self._log_obj_size:
            _log_sizes(fn, args, kwargs, future)
        if error_log_file is not None:
            future.add_done_callback(_error_logger(error_log_file, fn))
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        graph, self._graph = self._graph, None  # drawn at the first shutdown only
        if graph is not None:
            publish(graph.calls, *self._graph_files)

    def __exit__(self, exc_type, exc_value, traceback):
        # executorlib's `wait`: whether leaving the `with` waits for the calls.
        self.shutdown(wait=self._wait_on_exit)
        return False

    @property
    def info(self):
        """As pmp.Executor's, with executorlib's keys beside pmp's (cores,
        gpus_per_core, cwd, openmpi_oversubscribe, hostname_localhost,
        log_obj_size; init_function and restart_limit under block
        allocation; pmi_mode for Slurm and Flux); None after shutdown, as
        executorlib's."""
        if self._shutdown_called:
            return None
        return {**super().info, **self._executorlib_info}

    @property
    def max_workers(self):
        """As pmp.Executor's; None after shutdown, as executorlib's."""
        return None if self._shutdown_called else Executor.max_workers.fget(self)

    @max_workers.setter
    def max_workers(self, value):
        Executor.max_workers.fset(self, value)


class SingleNodeExecutor(_ExecutorlibFront):
    """executorlib's SingleNodeExecutor: workers on this machine."""

    _backend_name = "local"
    _api_name = "SingleNodeExecutor"

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        restart_limit=0,
        openmpi_oversubscribe=False,
    ):
        self._setup(**_arguments(locals()))


class TestClusterExecutor(SingleNodeExecutor):
    """executorlib.api's TestClusterExecutor, which tries the cluster
    executors' way on this machine: every call's outcome goes to the task
    store (`cache_directory`, by default ./pmp_cache as for the cluster
    classes), where `get_cache_data` and a later run find it. The calls
    reach the workers as messages, not through files as executorlib's do."""

    __test__ = False  # not a pytest test class, despite its name
    _api_name = "TestClusterExecutor"

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        openmpi_oversubscribe=False,
    ):
        given = _arguments(locals())
        in_resources = isinstance(resource_dict, dict) and "cache_directory" in resource_dict
        if cache_directory is None and not in_resources:
            given["cache_directory"] = os.path.abspath("pmp_cache")
        self._setup(**given, restart_limit=0)


class SlurmJobExecutor(_ExecutorlibFront):
    """executorlib's SlurmJobExecutor: srun steps inside a Slurm allocation."""

    _backend_name = "slurm"
    _api_name = "SlurmJobExecutor"
    # srun even outside an allocation, as executorlib's: each worker's srun
    # then waits for a job of its own (SlurmClusterExecutor submits batch jobs).
    _cluster_jobs = False

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        pmi_mode=None,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        restart_limit=0,
        openmpi_oversubscribe=False,
    ):
        self._setup(**_arguments(locals()))

    def _pmi_arguments(self, pmi_mode):
        return [f"--mpi={_check_slurm_pmi_mode(pmi_mode)}"]


class SlurmClusterExecutor(_ExecutorlibFront):
    """executorlib's SlurmClusterExecutor: each call a batch job (sbatch)."""

    _backend_name = "slurm"
    _api_name = "SlurmClusterExecutor"
    _cluster_jobs = True

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        pysqa_config_directory=None,
        pmi_mode=None,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        openmpi_oversubscribe=False,
    ):
        self._setup(**_arguments(locals()), restart_limit=0)

    def _setup(self, **given):
        pmi_mode = given.pop("pmi_mode")
        if pmi_mode is not None and given["block_allocation"]:
            raise ValueError(
                "SlurmClusterExecutor(pmi_mode=...) with block_allocation=True is not "
                "supported by pmp yet: pilot jobs start their ranks with pmp's choice of --mpi"
            )
        if pmi_mode is not None:
            _check_slurm_pmi_mode(pmi_mode)
        super()._setup(**given)
        self._executorlib_info["pmi_mode"] = pmi_mode
        if pmi_mode is not None:
            # The ranks inside each batch job: `srun --mpi=<pmi_mode>`.
            self._engine.pmi_mode = pmi_mode


class FluxJobExecutor(_ExecutorlibFront):
    """executorlib's FluxJobExecutor: `flux run` jobs inside a Flux instance."""

    _backend_name = "flux"
    _api_name = "FluxJobExecutor"

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        pmi_mode=None,
        flux_executor=None,
        flux_executor_nesting=False,
        flux_log_files=False,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        restart_limit=0,
        openmpi_oversubscribe=False,
    ):
        if not os.environ.get("FLUX_URI"):
            raise ValueError(
                "FluxJobExecutor runs flux run jobs inside a Flux instance, and FLUX_URI is "
                "not set (run inside `flux start` or `flux alloc`); FluxClusterExecutor "
                "submits each call to the instance the flux command reaches"
            )
        self._setup(**_arguments(locals()))

    def _pmi_arguments(self, pmi_mode):
        return ["-o", f"pmi={_check_flux_pmi_mode(pmi_mode)}"]


class FluxClusterExecutor(_ExecutorlibFront):
    """executorlib's FluxClusterExecutor: each call a Flux job (flux submit)."""

    _backend_name = "flux"
    _api_name = "FluxClusterExecutor"
    _cluster_jobs = True

    def __init__(
        self,
        max_workers=None,
        cache_directory=None,
        max_cores=None,
        resource_dict=None,
        pysqa_config_directory=None,
        pmi_mode=None,
        hostname_localhost=None,
        block_allocation=False,
        init_function=None,
        disable_dependencies=False,
        refresh_rate=0.01,
        plot_dependency_graph=False,
        plot_dependency_graph_filename=None,
        export_workflow_filename=None,
        log_obj_size=False,
        wait=True,
        openmpi_oversubscribe=False,
    ):
        self._setup(**_arguments(locals()), restart_limit=0)

    def _pmi_arguments(self, pmi_mode):
        return ["-o", f"pmi={_check_flux_pmi_mode(pmi_mode)}"]


def _arguments(given):
    return {k: v for k, v in given.items() if k not in ("self", "__class__")}


def _checked_keys(resource_dict, name):
    """A copy of `resource_dict` (None: empty) whose keys are executorlib's."""
    if resource_dict is None:
        return {}
    if not isinstance(resource_dict, dict):
        raise ValueError(
            f"{name} must be a dict of resource names to values, e.g. {{'cores': 2}}; got "
            f"{type(resource_dict).__name__} {resource_dict!r}"
        )
    resource_dict = dict(resource_dict)
    for key in resource_dict:
        if key not in EXECUTORLIB_KEYS:
            raise ValueError(f"{name} key {key!r} is not one of {', '.join(EXECUTORLIB_KEYS)}")
    return resource_dict


def _check_file_name(name, value):
    """A file pmp writes later (a log, a graph), as an absolute path whose
    directory exists now: a mistake there fails the constructor or the call,
    not the callback or the shutdown that writes it."""
    if not isinstance(value, (str, os.PathLike)) or os.fspath(value) == "":
        raise ValueError(f"{name} must be a file's path, got {type(value).__name__} {value!r}")
    path = os.path.abspath(os.fspath(value))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(
            f"{name} {path!r}: its directory {directory!r} does not exist; create it first, "
            "or name a file in a directory that exists"
        )
    if os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a directory; name a file in it")
    return path


# srun --mpi types seen by this process (asked once: a process each time).
_slurm_mpi_types = None


def _check_slurm_pmi_mode(pmi_mode):
    """pmi_mode is srun's --mpi: one of the MPI types this Slurm lists."""
    global _slurm_mpi_types
    if not isinstance(pmi_mode, str):
        raise ValueError(f"pmi_mode must be a str, got {type(pmi_mode).__name__} {pmi_mode!r}")
    check_plain("pmi_mode", pmi_mode)
    srun = shutil.which("srun")
    if srun is None:  # the backend's own check says srun is missing
        return pmi_mode
    if _slurm_mpi_types is None:
        listed = subprocess.run(
            [srun, "--mpi=list"], capture_output=True, text=True, timeout=30, check=False
        )
        _slurm_mpi_types = _parse_mpi_list(listed.stdout + listed.stderr)
    if _slurm_mpi_types and pmi_mode not in _slurm_mpi_types:
        raise ValueError(
            f"pmi_mode={pmi_mode!r} is not an MPI type of this Slurm: srun --mpi=list gives "
            f"{', '.join(sorted(_slurm_mpi_types))}; pass one of those, or None for pmp's choice"
        )
    return pmi_mode


def _parse_mpi_list(text):
    """The MPI types in `srun --mpi=list`'s answer: one per indented line
    (after "MPI plugin types are..."), then versions after a colon
    ("specific pmix plugin versions available: pmix_v4,pmix_v5")."""
    types = set()
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and line.strip():
            types.add(line.strip())
        elif "versions available:" in line:
            types.update(t.strip() for t in line.split(":", 1)[1].split(",") if t.strip())
    return types


# The PMI implementations of the Flux shell's `pmi` option (flux-shell(1)):
# its own, and those of flux-pmix and flux-coral2.
_FLUX_PMI = ("simple", "pmi1", "pmi2", "pmix", "cray-pals", "none")


def _check_flux_pmi_mode(pmi_mode):
    """pmi_mode is the Flux shell's `-o pmi=`: a comma-separated list of PMI names."""
    if not isinstance(pmi_mode, str) or not all(name in _FLUX_PMI for name in pmi_mode.split(",")):
        raise ValueError(
            f"pmi_mode={pmi_mode!r} is not the Flux shell's pmi option: give one of "
            f"{', '.join(_FLUX_PMI)}, or several joined by ',', or None for Flux's default"
        )
    return pmi_mode


def _error_logger(path, fn):
    """A done callback that appends a failed call's traceback (remote, as
    raised in the worker) and what it printed to stderr to `path`."""

    def log(future):
        if future.cancelled() or future.exception() is None:
            return
        error = future.exception()
        name = getattr(fn, "__qualname__", None) or repr(fn)
        lines = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        stderr = "".join(text for stream, text in future.output_chunks() if stream == "stderr")
        when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        with open(path, "a") as file:
            file.write(f"--- {when} {name} failed\n{lines}")
            if stderr:
                file.write(f"stderr:\n{stderr}")
                if not stderr.endswith("\n"):
                    file.write("\n")

    return log


def _log_sizes(fn, args, kwargs, future):
    """executorlib's log_obj_size: the pickled sizes of a call's function and
    arguments now, and of its result when it ends, on the logger "pmp". At
    WARNING, as executorlib logs them on its logger "executorlib": so that,
    with logging not configured, they reach stderr (a notebook shows it
    under the cell) rather than being dropped as INFO records are."""
    logger = logging.getLogger("pmp")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    function = len(serialize.dumps_function(fn))
    frames = serialize.dumps_call(args, kwargs, lambda f: serialize.as_value(None))
    arguments = sum(len(memoryview(frame)) for frame in frames)
    logger.warning("submit %s: function %d bytes, arguments %d bytes", name, function, arguments)

    def on_done(done):
        if done.cancelled() or done.exception() is not None:
            return
        size = sum(len(memoryview(f)) for f in serialize.dumps_value(done.result()))
        logger.warning("result of %s: %d bytes", name, size)

    future.add_done_callback(on_done)
