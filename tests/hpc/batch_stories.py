"""Stories that batch mode must tell alike on Slurm and on Flux."""

# A failing chain, a call submitted after it failed, and shutdown with
# cancel_futures: `make(directory)` makes the executor (Slurm's or Flux's).
CHAIN_AND_CANCEL = """
from concurrent.futures import CancelledError

def outcome(future):
    try:
        return repr(future.exception(timeout=120))
    except CancelledError as error:
        return type(error).__name__

with make("store") as exe:
    a = exe.submit(fail)
    b = exe.submit(add, a, 1)
    c = exe.submit(add, b, 1)
    print([outcome(f) for f in (a, b, c)])
    late = exe.submit(add, c, 2)  # the chain failed already: no job, the same error
    print(outcome(late), late.job)
exe = make("store2")
running = exe.submit(slow_add, 1, 2)
waiting = exe.submit(add, running, 1)
while not (running.job_state or "").startswith("RUNNING"):
    time.sleep(0.1)
exe.shutdown(wait=False, cancel_futures=True)
print(outcome(running).split("(")[0], outcome(waiting))
"""

CHAIN_AND_CANCEL_OUTPUT = [
    "[\"KeyError('no such thing')\", \"KeyError('no such thing')\", \"KeyError('no such thing')\"]",
    "KeyError('no such thing') None",
    "CancelledError CancelledError",
]
