"""The values only batch jobs take (`BATCH_KEYS` of resource_dict), checked
when a call is submitted, and a site's job script template, rendered with
pmp's values under pysqa's names (as executorlib's)."""

from pmp import _pmp
from pmp.client.resources import (
    check_arguments,
    check_bool,
    check_int,
    check_memory_max,
    check_plain,
)

# resource_dict keys that only batch jobs have (each job system honours those it can).
BATCH_KEYS = (
    "num_nodes",
    "exclusive",
    "run_time_max",
    "memory_max",
    "partition",
    "slurm_cmd_args",
    "priority",
    "submission_template",
)


def check_priority(name, value):
    """Flux's urgency: 0 (lowest) to 31 (highest), 16 by default."""
    check_int(name, value, 0)
    if value > 31:
        raise ValueError(f"{name} is Flux's urgency, 0 to 31 (16 by default), got {value}")
    return value


def check_batch_value(key, value):
    name = f"resource_dict key {key!r}"
    if key in ("num_nodes", "run_time_max"):
        return check_int(name, value, 1)
    if key == "priority":
        return check_priority(name, value)
    if key == "exclusive":
        return check_bool(name, value)
    if key == "slurm_cmd_args":
        return check_arguments(name, value)
    if key == "memory_max":
        return check_memory_max(name, value)
    if key == "submission_template":
        return check_template(name, value)
    if not isinstance(value, str) or not value:  # partition
        raise ValueError(f"{name} must be a partition's name, got {value!r}")
    return check_plain(name, value)


def check_template(name, value):
    """A site's job script template: jinja2, as executorlib's (through
    pysqa), checked for its syntax now rather than at its job."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a job script template (a str), got {value!r}")
    try:
        import jinja2  # lazy on purpose: only a call with a template needs it
    except ImportError:
        raise ValueError(
            f"{name} is a jinja2 template, as executorlib's are (rendered by pysqa): "
            "install jinja2 (pip install jinja2) to use it"
        ) from None
    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(
            f"{name} is not a valid jinja2 template: {error} (line {error.lineno})"
        ) from None
    return value


def rendered_template(template, name, resources, cwd, dependencies):
    """`template` with pmp's values under pysqa's names (so that a site's
    executorlib template works unchanged; `cores` is ranks x threads, as
    pysqa counts them), and the scheduler's mark where pmp's command goes."""
    import jinja2  # lazy on purpose; check_template found it

    values = {
        "job_name": name,
        "working_directory": cwd,
        "cores": resources["cores"] * resources["threads_per_core"],
        "threads_per_core": resources["threads_per_core"],
        "gpus_per_core": resources["gpus_per_core"],
        "num_nodes": resources.get("num_nodes"),
        "exclusive": resources.get("exclusive"),
        "memory_max": resources.get("memory_max"),
        "run_time_max": resources.get("run_time_max"),
        "partition": resources.get("partition"),
        "dependency": list(dependencies),
        "dependency_list": list(dependencies),
        "command": _pmp.COMMAND_MARK,
    }
    return jinja2.Template(template).render(**values)
