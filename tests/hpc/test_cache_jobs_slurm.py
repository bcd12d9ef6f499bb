"""executorlib's view of a task store's batch jobs, against the real Slurm
on loopback from outside any allocation (as on a login node): the
`queue_id`, `input_args`, `input_kwargs` and `resource_dict` columns, `get_cache_data_queue`
and `terminate_task_in_cache`."""

import os
import subprocess
import sys
import textwrap

import pytest

OUTSIDE = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}

SCRIPT = """
import os, time
from pmp import SlurmClusterExecutor, get_cache_data, get_cache_data_queue, terminate_task_in_cache

def add(a, b):
    return a + b

def wait_for_go(a, b):
    while not os.path.exists("go"):  # never made: the job runs until cancelled
        time.sleep(0.05)
    return a + b

exe = SlurmClusterExecutor(cache_directory="store")
waiting = exe.submit(wait_for_go, 1, b=2, resource_dict={"cache_key": "waiting"})
quick = exe.submit(add, 3, b=4, resource_dict={"cache_key": "quick"})
print(quick.result(timeout=120))
# A Future argument: the stored call names its upstream entry, whose result
# executorlib's input_args show in its place.
chained = exe.submit(add, quick, b=1, resource_dict={"cache_key": "chained", "run_time_max": 60})
print(chained.result(timeout=120))
while waiting.job_state is None or not waiting.job_state.startswith("RUNNING"):
    time.sleep(0.2)
rows = {row["key"]: row for row in get_cache_data_queue("store")}
done, running = rows["quick"], rows["waiting"]
print(done["status"], done["input_args"], done["input_kwargs"], done["runtime"] >= 0)
print(running["status"], running["input_args"], running["input_kwargs"])
print(running["queue_id"] == int(waiting.job), "output" in running)
stored = {row["key"]: row for row in get_cache_data("store")}
print(sorted(stored), stored["chained"]["input_args"], stored["chained"]["input_kwargs"])
print(stored["chained"]["resource_dict"])
print(terminate_task_in_cache("store", "waiting") == int(waiting.job))
error = waiting.exception(timeout=120)
print(type(error).__name__, "cancelled" in str(error))
print(terminate_task_in_cache("store", "quick"))
exe.shutdown()
"""


@pytest.fixture
def outside(slurm, tmp_path):
    """Run a script in tmp_path with no SLURM_* variable; cancel what it left."""

    def run(body):
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(body))
        return subprocess.run(
            [sys.executable, str(path)],
            capture_output=True,
            text=True,
            timeout=200,
            cwd=tmp_path,
            env=OUTSIDE,
            check=False,
        )

    yield run
    shown = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False
    ).stdout
    left = [line.split()[0] for line in shown.splitlines() if " wait_for_go." in line]
    if left:
        subprocess.run(["scancel", *left], check=False, capture_output=True)


@pytest.mark.timeout(240)
def test_batch_jobs_in_cache_data_and_one_cancelled_by_its_key(outside):
    done = outside(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "7",
        "8",
        "finished (3,) {'b': 4} True",
        "running (1,) {'b': 2}",
        "True False",
        "['chained', 'quick'] (7,) {'b': 1}",
        "{'cores': 1, 'threads_per_core': 1, 'gpus_per_core': 0, 'run_time_max': 60}",
        "True",
        "JobFailedError True",
        "None",
    ]
