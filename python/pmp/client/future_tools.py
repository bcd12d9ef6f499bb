"""Futures made from other Futures, as executorlib has them: one item of a
pending result (`get_item_from_future`, `split_future`) and batches of
results in the order they finish (`Executor.batched`).

They are plain `concurrent.futures.Future`s resolved by done callbacks:
passed to `submit`, they count as any other Future argument (the call waits
for them and gets their result).
"""

import threading
from concurrent.futures import Future


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
    """Futures of lists of `n` results, in the order the Futures finish."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    futures = list(iterable)
    batches = [Future() for _ in range(-(-len(futures) // n))]
    finished = []  # results, or the Future that failed, in finishing order
    lock = threading.Lock()

    def on_done(done):
        with lock:
            finished.append(done)
            count = len(finished)
            if count % n and count != len(futures):
                return
            index = (count - 1) // n
            members = finished[index * n : count]
        target = batches[index]
        for member in members:
            if member.cancelled() or member.exception() is not None:
                error = (
                    member.exception()
                    if not member.cancelled()
                    else _cancelled("a Future of this batch was cancelled")
                )
                target.set_exception(error)
                return
        target.set_result([member.result() for member in members])

    for future in futures:
        future.add_done_callback(on_done)
    return batches


def _cancelled(message):
    from concurrent.futures import CancelledError

    return CancelledError(message)
