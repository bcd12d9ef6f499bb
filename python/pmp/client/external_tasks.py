"""Tasks of the native scheduler that the client resolves, not a worker:
a Future of another executor given as an argument (resolved when it is),
a call whose result the task store has already, and a call another live
process runs (its worker found the key's lock held: resolved from that
run's entry). The scheduler holds their dependents until the client says
how they ended (`add_external` / `resolve_external`)."""

import contextlib

from pmp.client import serialize, store
from pmp.client.follow import Following


class ExternalTasks:
    """The tasks of `scheduler` (ids from `table`) that the client resolves.
    `resubmit(fn, *args, resource_dict=..., **kwargs)` submits a call again
    (the Executor's submit), or is None once the Executor is gone."""

    def __init__(self, table, scheduler, resubmit):
        self._table = table
        self._scheduler = scheduler
        self._resubmit = resubmit
        self._foreign = {}  # id(Future) -> (Future, task)
        self._following = Following()

    def from_store(self, future, stored):
        """A call whose result is stored: its Future resolves from the store
        now, and its task is one the client resolves (as a foreign Future's),
        so that dependents get the stored frames without unpickling them here."""
        future.resolve_from_store(stored)  # before any event can: a display shows it at once
        task = self._table.new_id()
        self._table.register(task, future)
        self._scheduler.add_external(task)
        self._scheduler.resolve_external(task, True, stored.frames)
        return future

    def attach(self, future, task_store, key, fn, args, kwargs, resource_dict, task):
        """`task`'s key is run by another live process (its worker found the
        lock held): the Future resolves from that run's entry, and the task,
        now one the client resolves, with it. Should that run end without an
        entry (its process died), the call is submitted again.
        Called in the events thread."""

        def on_stored(entry):
            if entry.state == "done":
                with contextlib.suppress(Exception):  # InvalidStateError: cancelled meanwhile
                    future.resolve_from_store(entry)
                with contextlib.suppress(RuntimeError):  # the scheduler already stopped
                    self._scheduler.resolve_external(task, True, entry.frames)
            else:  # that run failed: this call fails the same way
                with contextlib.suppress(RuntimeError):
                    self._scheduler.resolve_external(task, False, entry.frames)

        def on_released():
            # That run ended without an entry: this call runs it again.
            future.earlier_run = future.earlier_run._replace(fate="ended", gone=True)
            try:
                submit = self._resubmit()
                if submit is None:
                    raise RuntimeError("cannot run the call again: its Executor is gone")
                again = submit(fn, *args, resource_dict=resource_dict, **kwargs)
            except BaseException as error:  # noqa: BLE001 - e.g. shut down meanwhile
                with contextlib.suppress(RuntimeError):
                    self._scheduler.resolve_external(task, False, exception_frames(error))
                return

            def finished(done):
                future.from_store = done.from_store
                self.resolve(task, done)

            again.add_done_callback(finished)

        future.earlier_run = store.earlier_run(task_store, key, "attached")
        self._following.key(task_store, key, on_stored, on_released)
        return future

    def task_of(self, future):
        """A task id for a Future of another executor, resolved when it is."""
        known = self._foreign.get(id(future))
        if known is not None and known[0] is future:
            return known[1]
        task = self._table.new_id()
        self._scheduler.add_external(task)
        self._foreign[id(future)] = (future, task)
        # The value is that of `future` itself, not of whatever object the
        # callback receives: a Future that wraps another (executorlib's
        # split_future and get_item_from_future selectors) passes on its
        # add_done_callback, so the callback gets the wrapped Future.
        future.add_done_callback(lambda _: self.resolve(task, future))
        return task

    def resolve(self, task, future):
        """`task` ends as the done `future` did."""
        self._foreign.pop(id(future), None)
        if future.cancelled():
            ok, frames = False, None
        elif future.exception() is not None:
            ok, frames = False, exception_frames(future.exception())
        else:
            try:
                ok, frames = True, serialize.dumps_value(future.result())
            except Exception as error:  # noqa: BLE001 - an unpicklable result fails the dependents
                ok, frames = False, exception_frames(error)
        with contextlib.suppress(RuntimeError):  # the scheduler already stopped
            self._scheduler.resolve_external(task, ok, frames)


def exception_frames(exception):
    try:
        return serialize.dumps_value(exception)
    except Exception:  # noqa: BLE001 - an unpicklable exception travels as its repr
        return serialize.dumps_value(RuntimeError(repr(exception)))
