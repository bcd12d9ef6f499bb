"""A batch job's states, in Slurm's words (PENDING, RUNNING, COMPLETED,
TIMEOUT, ...), which every job system of batch mode speaks (the scheduler's
`jobs` module translates Flux's to them): which ones mean the job is over, and how a
state is said. Batch mode (`batch_futures`) and the notebook's words for earlier
runs (`pmp.notebook.earlier_runs`) both use them.
"""

import collections

# A batch job's state as its job system said it (Slurm's words), for the
# displays to word: "Slurm" or "Flux", "PENDING", "Priority", "node[1-2]".
JobStatus = collections.namedtuple("JobStatus", "system state reason nodes")

# The states that mean a job will not run any more.
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "TIMEOUT",
}
# How each of them is said when a job ended so.
ENDED_WORDS = {
    "BOOT_FAIL": "its node failed to boot",
    "CANCELLED": "it was cancelled",
    "DEADLINE": "it reached its deadline",
    "FAILED": "it failed",
    "NODE_FAIL": "its node failed",
    "OUT_OF_MEMORY": "it ran out of memory",
    "PREEMPTED": "it was preempted",
    "TIMEOUT": "it reached its time limit",
}


def describe(state, reason, nodes):
    """A job's state in a display: `PENDING (Priority)`, `RUNNING on node1`."""
    if state == "PENDING":
        return f"PENDING ({reason})" if reason and reason != "None" else "PENDING"
    if state == "RUNNING" and nodes:
        return f"RUNNING on {nodes}"
    return state
