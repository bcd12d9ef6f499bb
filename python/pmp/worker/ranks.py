"""Workers of several MPI ranks: rank 0 leads, the others follow.

Every rank runs the task, so `MPI.COMM_WORLD` inside the function is the
worker's ranks. Each rank packs its own outcome before the gather, so an
exception (or an unpicklable result) on any rank — rank 1 alone included —
reaches rank 0 as data and never leaves a rank behind in a collective.
Idle followers wait in a polled non-blocking barrier instead of a blocking
broadcast, which MPICH implements by spinning a core.
"""

import sys
import time

from pmp.client import serialize
from pmp.worker.outcome import pack
from pmp.worker.task_output import flush, relay_rank_output

_IDLE_POLL_MAX = 0.01


def _world():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError(
            "a worker with cores > 1 needs mpi4py in its Python environment "
            f"(pip install mpi4py): {error}"
        ) from error
    import cloudpickle

    # Functions and results defined in a notebook pickle by value.
    MPI.pickle.__init__(cloudpickle.dumps, cloudpickle.loads)
    return MPI


def _meet(comm, poll):
    """Wait for all ranks; followers poll so that waiting costs no CPU."""
    request = comm.Ibarrier()
    if not poll:
        request.Wait()
        return
    delay = 0.0001
    while not request.Test():
        time.sleep(delay)
        delay = min(delay * 2, _IDLE_POLL_MAX)


def _as_bytes(frames):
    return [bytes(frame) for frame in frames]


class Leader:
    def __init__(self, ranks):
        self._mpi = _world()
        self._comm = self._mpi.COMM_WORLD
        size = self._comm.Get_size()
        if size != ranks:
            raise RuntimeError(
                f"this worker was started for {ranks} ranks but MPI reports {size}; "
                "is mpi4py built for the MPI that launched it?"
            )

    def _everywhere(self, message, run_here, send=None):
        """Broadcast, run here too, gather every rank's packed outcome; the
        other ranks' output goes on to ``send``, marked with their rank."""
        _meet(self._comm, poll=False)
        self._comm.bcast(message, root=0)
        ok, frames = pack(*run_here())
        gathered = self._comm.gather((ok, _as_bytes(frames), []), root=0)
        for rank, (_, _, output) in enumerate(gathered):
            if output:
                # No sink (a batch job): into rank 0's own streams, the job's log.
                relay_rank_output(send or _write_own, rank, output)
        return [(ok, packed) for ok, packed, _ in gathered]

    def init(self, local, frames):
        frames = _as_bytes(frames)
        outcomes = self._everywhere(("init", (frames,)), lambda: local.init(frames))
        for ok, packed in outcomes:
            if not ok:
                return False, packed
        return True, []

    def run(self, local, slot, inline_function, call, dependencies):
        inline = None if inline_function is None else bytes(inline_function)
        args = (slot, inline, _as_bytes(call), [_as_bytes(d) for d in dependencies])
        outcomes = self._everywhere(("run", args), lambda: local.run(*args), local.send)
        for rank, (ok, packed) in enumerate(outcomes):
            if not ok:
                exception = serialize.loads(packed)
                if hasattr(exception, "add_note"):
                    exception.add_note(f"(raised on MPI rank {rank} of {len(outcomes)})")
                return pack(False, exception)
        return pack(True, [serialize.loads(packed) for _, packed in outcomes])

    def stop(self):
        _meet(self._comm, poll=False)
        self._comm.bcast(None, root=0)
        self._mpi.Finalize()


def _write_own(name, data):
    stream = sys.stderr if name == "stderr" else sys.stdout
    stream.write(data.decode(errors="replace"))
    stream.flush()


def follow(local):
    mpi = _world()
    comm = mpi.COMM_WORLD
    while True:
        _meet(comm, poll=True)
        message = comm.bcast(None, root=0)
        if message is None:
            break
        kind, args = message
        outcome = local.init(*args) if kind == "init" else local.run(*args)
        ok, frames = pack(*outcome)
        output = local.send.take() if local.send is not None else []
        comm.gather((ok, _as_bytes(frames), output), root=0)
    flush()
    mpi.Finalize()
