"""Futures made from other Futures, as executorlib has them: one item of a
pending result (`get_item_from_future`, `split_future`) and batches of
results in the order they finish (`Executor.batched`).

They are plain `concurrent.futures.Future`s resolved by done callbacks:
passed to `submit`, they count as any other Future argument (the call waits
for them and gets their result).
"""

import threading
from concurrent.futures import CancelledError, Future


def get_item_from_future(future, key):
    """A Future of `future.result()[key]`."""
    item = Future()

    def resolve(done):
        if done.cancelled():
            item.cancel()
            item.set_running_or_notify_cancel()
            return
        error = done.exception()
        if error is None:
            try:
                value = done.result()[key]
            except Exception as lookup:  # noqa: BLE001 - e.g. KeyError: the item's Future fails
                item.set_exception(lookup)
                return
            item.set_result(value)
        else:
            item.set_exception(error)

    item._pmp_item_of = (future, key)  # for the dependency graph (workflow_graph)
    future.add_done_callback(resolve)
    return item


def split_future(future, n):
    """`n` Futures, one for each item of `future.result()` (a tuple or list of `n`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return [get_item_from_future(future, i) for i in range(n)]


def batched(iterable, n):
    """Futures of lists of `n` results, as executorlib's: each batch takes the
    next `n` calls that succeeded, in the order of `iterable` among those
    done, skipping failed and cancelled ones; the last batch may be shorter.
    Once only failed calls are left, the batches still open fail with their
    exceptions (up to `n` failed calls a batch)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    futures = list(iterable)
    batches = [Future() for _ in range(-(-len(futures) // n))]
    state = {"next": 0, "open": list(futures)}  # the next batch; calls no batch took yet
    lock = threading.Lock()

    def failure(future):
        if future.cancelled():
            return CancelledError("a Future of this batch was cancelled")
        return future.exception()

    def fill():
        """Resolve every batch that can be now; (batch, result or exception) pairs."""
        filled = []
        while state["next"] < len(batches) and state["open"]:
            open_ = state["open"]
            done = [f for f in open_ if f.done()]
            ok = [f for f in done if failure(f) is None]
            wanted = min(n, len(open_))
            if len(ok) >= wanted:
                taken = ok[:wanted]
                outcome = [f.result() for f in taken]
            elif len(done) == len(open_):  # nothing left to wait for
                taken = ok or [f for f in done if failure(f) is not None][:wanted]
                outcome = [f.result() for f in taken] if ok else failure(taken[0])
            else:
                break
            taken_ids = {id(f) for f in taken}
            state["open"] = [f for f in open_ if id(f) not in taken_ids]
            filled.append((batches[state["next"]], outcome))
            state["next"] += 1
        return filled

    def on_done(_):
        with lock:
            filled = fill()
        for batch, outcome in filled:
            if isinstance(outcome, BaseException):
                batch.set_exception(outcome)
            else:
                batch.set_result(outcome)

    for future in futures:
        future.add_done_callback(on_done)
    return batches
