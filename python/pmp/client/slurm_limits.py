"""What a Slurm partition can ever hold, asked once per executor (one
`sinfo` call): a batch job or pilot job larger than its partition would
stay pending forever, so it is refused before it is submitted (`check_job`).
"""

import os
import subprocess


class Partition:
    """One partition's size: its nodes, and the CPUs and GPUs they have."""

    def __init__(self, name):
        self.name = name
        self.nodes = 0
        self.cpus = 0  # all of its nodes' together
        self.cpus_per_node = 0  # the largest node's
        self.gpus = 0
        self.gpus_per_node = 0

    def add(self, nodes, cpus, gpus):
        """`nodes` more nodes of `cpus` CPUs and `gpus` GPUs each."""
        self.nodes += nodes
        self.cpus += nodes * cpus
        self.cpus_per_node = max(self.cpus_per_node, cpus)
        self.gpus += nodes * gpus
        self.gpus_per_node = max(self.gpus_per_node, gpus)

    def never_fits(self, cores, threads_per_core, gpus_per_core, num_nodes):
        """Why a job of `cores` tasks of `threads_per_core` CPUs and
        `gpus_per_core` GPUs each (on `num_nodes` nodes, if given) can never
        start in this partition, or None."""
        cpus, gpus = cores * threads_per_core, cores * gpus_per_core
        if cpus > self.cpus:
            return f"its {cpus} CPUs are more than all the nodes have"
        if threads_per_core > self.cpus_per_node:
            return f"a task's {threads_per_core} CPUs are more than any node has"
        if gpus > self.gpus:
            return f"its {gpus} GPUs are more than all the nodes have"
        if gpus_per_core > self.gpus_per_node:
            return f"a task's {gpus_per_core} GPUs are more than any node has"
        if num_nodes and num_nodes > self.nodes:
            return f"its {num_nodes} nodes are more than the partition has"
        return None

    def __str__(self):
        gpus = f" (at most {self.gpus_per_node} on a node)" if self.gpus else ""
        return (
            f"{self.nodes} nodes, {self.cpus} CPUs (at most {self.cpus_per_node} on a node), "
            f"{self.gpus} GPUs{gpus}"
        )


class PartitionLimits:
    """The partitions `sinfo` lists, read at the first question only;
    `launcher` is sbatch, whose directory has sinfo."""

    def __init__(self, launcher):
        self._sinfo = os.path.join(os.path.dirname(launcher), "sinfo")
        self._partitions = None
        self._default = None

    def partition(self, name=None):
        """The partition `name` (None: the default one), or None where sinfo
        does not say (sbatch then answers for itself)."""
        self._read_once()
        return self._partitions.get(name or self._default)

    def described(self):
        """{name: what a job there can get, in words}, the default partition
        first and marked so: what `%pmp resources` shows outside an allocation."""
        self._read_once()
        names = sorted(self._partitions, key=lambda name: (name != self._default, name))
        return {
            name: f"{self._partitions[name]}" + (" (the default)" if name == self._default else "")
            for name in names
        }

    def _read_once(self):
        if self._partitions is None:
            self._partitions, self._default = _read(self._sinfo)


def check_job(limits, resources, partition, arguments, what, choose):
    """Refuse a Slurm job (`what`: a batch job or pilot job) that its
    partition can never hold: it would pend forever. `partition` is the one
    a resource_dict names, which a --partition among `arguments` overrides
    (as for sbatch); `choose` says where the user picks another."""
    found = limits.partition(named_partition(arguments) or partition)
    if found is None:
        return  # a partition sinfo does not list: sbatch refuses it itself
    why = found.never_fits(
        resources["cores"],
        resources["threads_per_core"],
        resources["gpus_per_core"],
        resources.get("num_nodes"),
    )
    if why is not None:
        asked = ", ".join(
            f"{key}={resources[key]}"
            for key in ("cores", "threads_per_core", "gpus_per_core", "num_nodes")
            if resources.get(key) is not None
        )
        raise ValueError(
            f"{what} asks for {asked}, which Slurm partition {found.name!r} can never "
            f"hold: {why} ({found}), so it would pend forever. Ask for less, or for a "
            f"partition that holds it ({choose})"
        )


def named_partition(arguments):
    """The partition sbatch `arguments` name (`--partition=P`, `-p P`,
    `-pP`), or None; the last one counts, as for sbatch."""
    name = None
    arguments = list(arguments)
    for i, argument in enumerate(arguments):
        if argument.startswith("--partition="):
            name = argument.split("=", 1)[1]
        elif argument in ("--partition", "-p") and i + 1 < len(arguments):
            name = arguments[i + 1]
        elif argument.startswith("-p") and not argument.startswith("--"):
            name = argument[2:]
    return name


def _read(sinfo):
    """({name: Partition}, the default partition's name) from one sinfo call;
    empty where it fails. `-e` lists each node configuration on its own line."""
    try:
        done = subprocess.run(
            [sinfo, "-h", "-e", "-o", "%P|%D|%c|%G"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}, None
    partitions, default = {}, None
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        name = parts[0]
        if name.endswith("*"):  # sinfo marks the default partition so
            name = name[:-1]
            default = name
        partitions.setdefault(name, Partition(name)).add(
            int(parts[1]), int(parts[2]), _gpus(parts[3])
        )
    return partitions, default


def _gpus(gres):
    """The GPUs of a node's GRES (`gpu:2`, `gpu:a100:4(S:0-1)`, `(null)`)."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total
