"""Comms (the channel ipywidgets talk over). The `comm` package is meant to
have `create_comm` and `get_comm_manager` replaced by the kernel; ours send
comm messages on IOPub with the current request as parent."""

import _pmp_kernel_host as host
import comm
from comm.base_comm import BaseComm, CommManager

from .jsonutil import dumps


class Comm(BaseComm):
    # ipywidgets only sends state when a comm's `kernel` is not None.
    kernel = True

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
        if buffers:
            buffers = [bytes(b) for b in buffers]
        host.publish(msg_type, dumps(content), dumps(metadata or {}), buffers or None)


manager = CommManager()


def _create_comm(*args, **kwargs):
    return Comm(*args, **kwargs)


def _get_comm_manager(*args, **kwargs):
    return manager


def install():
    """(Re)install the hooks. Importing ipykernel replaces them with its own,
    which cannot work here, so this is repeated after every cell."""
    if comm.create_comm is not _create_comm:
        comm.create_comm = _create_comm
    if comm.get_comm_manager is not _get_comm_manager:
        comm.get_comm_manager = _get_comm_manager


def info(target_name=None):
    return {
        comm_id: {"target_name": c.target_name}
        for comm_id, c in manager.comms.items()
        if target_name is None or c.target_name == target_name
    }
