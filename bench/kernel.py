"""pmp-kernel against ipykernel, in one run, through the same client.

    python bench/kernel.py [--runs 200] [--starts 5] [--rounds 10] [--kernels pmp python3 floor]

For each kernelspec: start-to-ready (jupyter_client's start_new_kernel, which
waits for a kernel_info reply and IOPub traffic, then for 0.2 s of IOPub
quiet), start to the first execute_reply (launch, kernel_info, then `1+1` at
once: what a kernel that answers kernel_info early still makes a frontend
wait for before output), the kernel_info round trip on shell, and `1+1`
from execute_request to execute_reply and to the idle status on IOPub.
Medians; the client polls shell and IOPub together so each arrival is timed
when it happens. The kernels take turns (each start in turn; the request
rows with all kernels started at once, in interleaved rounds), so a change
in the machine's load during the run does not favour whichever came first. Both kernels must be registered
kernelspecs (`pmp-kernel install --sys-prefix`; ipykernel's is `python3`),
except `floor`: bench/minimal_kernel.py, a minimal pyzmq kernel run by this
interpreter, registered here in a temporary Jupyter path for the run. It is
the floor of what a Python kernel costs per request.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager, start_new_kernel


def start_to_ready(name):
    started = time.perf_counter()
    manager, client = start_new_kernel(kernel_name=name, startup_timeout=60)
    elapsed = time.perf_counter() - started
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return elapsed


def start_to_first_reply(name):
    """From launching the kernel to the reply of its first `1+1`, sent as
    soon as kernel_info is answered (what a notebook run from the top
    waits for; a kernel that answers kernel_info before it can run code
    is not ready sooner here)."""
    started = time.perf_counter()
    manager = KernelManager(kernel_name=name)
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.kernel_info(reply=True, timeout=60)
        client.execute("1+1", reply=True, timeout=60)
        return time.perf_counter() - started
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


class Probe:
    """Sends requests and timestamps the reply and the idle status."""

    def __init__(self, client):
        self.client = client
        self.session = client.session
        self.shell = client.shell_channel.socket
        self.iopub = client.iopub_channel.socket
        self.poller = zmq.Poller()
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)

    def _recv(self, socket):
        _, msg = self.session.recv(socket, mode=zmq.NOBLOCK)
        return msg

    def round_trip(self, msg_type, content):
        """Seconds from sending to the reply, and to the matching idle."""
        msg = self.session.msg(msg_type, content)
        msg_id = msg["header"]["msg_id"]
        started = time.perf_counter()
        self.session.send(self.shell, msg)
        replied = idle = None
        while replied is None or idle is None:
            for socket, _ in self.poller.poll(10_000):
                now = time.perf_counter()
                got = self._recv(socket)
                if got is None or got["parent_header"].get("msg_id") != msg_id:
                    continue
                if socket is self.shell:
                    replied = now - started
                elif got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
                    idle = now - started
        return replied, idle


EXECUTE = {
    "code": "1+1",
    "silent": False,
    "store_history": True,
    "user_expressions": {},
    "allow_stdin": False,
    "stop_on_error": True,
}


def measure_starts(names, starts):
    """The start-up rows, each kernel started in turn `starts` times."""
    samples = {name: {"ready": [], "first": []} for name in names}
    for _ in range(starts):
        for name in names:
            samples[name]["ready"].append(start_to_ready(name))
            samples[name]["first"].append(start_to_first_reply(name))
    return {
        name: {
            "start to ready": statistics.median(mine["ready"]),
            "start to first execute_reply": statistics.median(mine["first"]),
        }
        for name, mine in samples.items()
    }


def measure_requests(names, runs, rounds):
    """The request rows of every kernel, measured in `rounds` interleaved
    rounds (each kernel takes its turn in every round), so that the load
    of a shared machine changing during the run hits all kernels alike."""
    kernels = {}
    samples = {name: {"info": [], "executes": []} for name in names}
    try:
        for name in names:
            kernels[name] = start_new_kernel(kernel_name=name, startup_timeout=60)
        probes = {name: Probe(client) for name, (_, client) in kernels.items()}
        for probe in probes.values():
            for _ in range(20):  # warm up both paths
                probe.round_trip("kernel_info_request", {})
                probe.round_trip("execute_request", EXECUTE)
        per_round = max(1, runs // rounds)
        for _ in range(rounds):
            for name, probe in probes.items():
                mine = samples[name]
                mine["info"] += [
                    probe.round_trip("kernel_info_request", {})[0] for _ in range(per_round)
                ]
                mine["executes"] += [
                    probe.round_trip("execute_request", EXECUTE) for _ in range(per_round)
                ]
    finally:
        for manager, client in kernels.values():
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return {
        name: {
            "kernel_info round trip": statistics.median(mine["info"]),
            "execute 1+1 → reply": statistics.median(r for r, _ in mine["executes"]),
            "execute 1+1 → idle": statistics.median(i for _, i in mine["executes"]),
        }
        for name, mine in samples.items()
    }


FLOOR = "pmp-bench-floor"


def register_floor():
    """The minimal kernel as a kernelspec in a temporary Jupyter path."""
    root = tempfile.mkdtemp(prefix="pmp-bench-floor-")
    spec_dir = os.path.join(root, "kernels", FLOOR)
    os.makedirs(spec_dir)
    program = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minimal_kernel.py")
    with open(os.path.join(spec_dir, "kernel.json"), "w") as file:
        json.dump(
            {
                "argv": [sys.executable, program, "-f", "{connection_file}"],
                "display_name": "minimal pyzmq kernel (floor)",
                "language": "python",
            },
            file,
        )
    os.environ["JUPYTER_PATH"] = root + os.pathsep + os.environ.get("JUPYTER_PATH", "")


def describe(name):
    spec = KernelSpecManager().get_kernel_spec(name)
    return f"{name} ({spec.display_name}: {spec.argv[0]})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="requests per median")
    parser.add_argument("--starts", type=int, default=5, help="kernel starts per median")
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds the requests are split into"
    )
    parser.add_argument("--kernels", nargs="+", default=["pmp", "python3", "floor"])
    args = parser.parse_args()
    if "floor" in args.kernels:
        register_floor()
        args.kernels = [FLOOR if name == "floor" else name for name in args.kernels]
    for name in args.kernels:
        try:
            print("kernel", describe(name))
        except NoSuchKernel:
            sys.exit(f"no kernelspec {name!r}: register it first (see the docstring)")

    results = measure_starts(args.kernels, args.starts)
    requests = measure_requests(args.kernels, args.runs, args.rounds)
    for name in args.kernels:
        results[name].update(requests[name])
    rows = list(results[args.kernels[0]])
    width = max(map(len, rows))
    header = f"{'median':<{width}}" + "".join(f"{name:>17}" for name in args.kernels)
    header += "".join(f"{'1st/' + n[:10]:>17}" for n in args.kernels[1:])
    print(f"\n{header}")
    for row in rows:
        values = [results[name][row] for name in args.kernels]
        line = f"{row:<{width}}" + "".join(f"{v * 1e3:>14.2f} ms" for v in values)
        line += "".join(f"{values[0] / v:>17.2f}" for v in values[1:])
        print(line)
    print(
        f"\n{args.runs} requests per median in {args.rounds} interleaved rounds, "
        f"{args.starts} starts; 1st/X = first kernel / X"
    )


if __name__ == "__main__":
    main()
