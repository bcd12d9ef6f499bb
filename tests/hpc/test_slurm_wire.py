"""The wire between the client's scheduler and the workers Slurm starts, on
the test Slurm (its nodes reach the client over loopback, as a cluster's
reach it over a network others can read): what crosses it is encrypted and
authenticated, and the executor's key is on no command line, in no job's
environment, in no file others can read.

What is on the wire is seen as an eavesdropper would: a capture of the
loopback interface (a raw socket, as tcpdump does; root only), and a relay
put between the workers and the scheduler by an `srun` in front of the real
one that points the step at the relay."""

import os
import pickle
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest
from unpickle_traps import TouchOnUnpickle

SALLOC = ("salloc", "-Q", "-n", "2", "--time=5")
ETH_P_ALL = 0x0003


class LoopbackCapture:
    """Every byte that crosses the loopback interface while it runs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                self.packets.append(self.sock.recv(1 << 17))
            except TimeoutError:
                continue

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()
        return b"\n".join(self.packets)


@pytest.fixture
def capture():
    if os.geteuid() != 0:
        pytest.skip("capturing the loopback interface needs root (CAP_NET_RAW)")
    capture = LoopbackCapture()
    # Proof that the capture sees what crosses loopback in the clear.
    control = secrets.token_hex(16).encode()
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        peer, _ = server.accept()
        client.sendall(control)
        peer.recv(64)
        peer.close()
    yield capture, control


@pytest.mark.timeout(240)
def test_a_slurm_runs_traffic_on_loopback_holds_no_argument_or_result_in_the_clear(
    slurm, run_script, capture
):
    capturing, control = capture
    argument = "argument-" + secrets.token_hex(16)
    result = "result-" + secrets.token_hex(16)
    try:
        done = run_script(
            f"""
            from pmp import Executor

            def answer(argument):
                assert argument == {argument!r}
                return {result!r}

            with Executor(max_workers=1, backend="slurm", block_allocation=True) as exe:
                print(exe.submit(answer, {argument!r}).result(timeout=120))
            """,
            SALLOC,
        )
    finally:
        wire = capturing.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [result]
    assert control in wire, "the capture saw nothing that crossed loopback"
    assert argument.encode() not in wire, "the call's argument crossed loopback in the clear"
    assert result.encode() not in wire, "the call's result crossed loopback in the clear"


# ZMTP 3 (what pmp's sockets speak): a 64-byte greeting, then frames, each
# `flags (1) | size (1, or 8 with flag 0x02) | body`; flag 0x04 a command.
GREETING = 64
LONG = 0x02
COMMAND = 0x04
LARGE = 64 << 10


class Relay:
    """A TCP relay on loopback between workers and the scheduler. It replaces
    the body of the first large frame a worker sends (its result) by a pickle
    that leaves a trace when unpickled, padded to the same length (pickle
    ignores what follows its end)."""

    def __init__(self, marker):
        self.trap = pickle.dumps(TouchOnUnpickle(marker), protocol=5)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.upstream = None  # told by the srun in front, before a worker connects
        self.replaced = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        host, port = self.listener.getsockname()
        return f"tcp://{host}:{port}"

    def _accept(self):
        while True:
            try:
                worker, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream().removeprefix("tcp://").rsplit(":", 1)
            scheduler = socket.create_connection((host, int(port)))
            threading.Thread(target=self._pump, args=(scheduler, worker), daemon=True).start()
            threading.Thread(target=self._tamper, args=(worker, scheduler), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    @staticmethod
    def _read(source, count):
        data = b""
        while len(data) < count:
            more = source.recv(count - len(data))
            if not more:
                raise OSError("closed")
            data += more
        return data

    def _tamper(self, source, sink):
        try:
            sink.sendall(self._read(source, GREETING))
            while True:
                flags = self._read(source, 1)
                size_bytes = self._read(source, 8 if flags[0] & LONG else 1)
                size = struct.unpack(">Q", size_bytes)[0] if flags[0] & LONG else size_bytes[0]
                body = self._read(source, size)
                if not flags[0] & COMMAND and size >= LARGE and not self.replaced.is_set():
                    body = self.trap.ljust(size, b"\0")
                    self.replaced.set()
                sink.sendall(flags + size_bytes + body)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self):
        self.listener.close()


def srun_in_front(directory, relay):
    """An `srun` that points the step at the relay, first telling the relay
    where the scheduler is (through a file the test reads)."""
    upstream = directory / "upstream"
    shim = directory / "srun"
    shim.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            printf '%s' "$PMP_SCHEDULER" > {upstream}
            PMP_SCHEDULER={relay.address} exec {shutil.which("srun")} "$@"
            """
        )
    )
    shim.chmod(0o755)
    relay.upstream = upstream.read_text
    return directory


@pytest.mark.timeout(240)
def test_a_result_changed_on_the_wire_is_never_unpickled_and_fails_its_future(
    slurm, run_script, tmp_path
):
    marker = tmp_path / "unpickled"
    trap = pickle.dumps(TouchOnUnpickle(marker), protocol=5)
    control = tmp_path / "control"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickle.dumps(TouchOnUnpickle(control), protocol=5).ljust(len(trap) + 100, b"\0"),
        check=True,
        timeout=60,
    )
    assert control.exists(), "the trap pickle, padded, leaves no trace when unpickled"
    # The relay goes where the srun in front of the real one points the
    # step: a worker's own step (under node agents, srun starts the agents,
    # whose workers reach the scheduler at the address the agent is given
    # for them; the capture test above sees that traffic).
    relay = Relay(marker)
    (tmp_path / "shims").mkdir()
    shims = srun_in_front(tmp_path / "shims", relay)
    try:
        done = run_script(
            """
            from pmp import Executor

            def large():
                return "x" * 200_000

            with Executor(max_workers=1, backend="slurm", block_allocation=True,
                          launcher="step") as exe:
                try:
                    exe.submit(large).result(timeout=120)
                except Exception as e:
                    print("failed:", e)
                else:
                    print("returned")
            """,
            SALLOC,
            env={"PATH": f"{shims}:{os.environ['PATH']}"},
        )
    finally:
        relay.close()
    assert relay.replaced.is_set(), "the relay saw no large frame to change"
    assert not marker.exists(), "a message changed on the wire was unpickled"
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("failed:"), done.stdout
    assert "tampered" in done.stdout, done.stdout


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "launcher, options",
    # A worker forked by a node agent and one as an srun step inside an
    # allocation, and from outside any one forked by a pilot job's agent
    # and one as a pilot job of its own (sbatch, which keeps the job's
    # environment).
    [(SALLOC, ""), (SALLOC, ', launcher="step"'), ((), ""), ((), ', launcher="step"')],
    ids=["agent", "srun-step", "pilot-agent", "pilot-job"],
)
def test_the_key_is_in_no_worker_environment_command_line_or_job_listing(
    slurm, run_script, launcher, options
):
    done = run_script(
        """
        import os, re, subprocess
        from pmp import Executor

        def own_process():
            with open("/proc/self/environ", "rb") as f:
                environ = f.read()
            with open("/proc/self/cmdline", "rb") as f:
                cmdline = f.read()
            # Where the key's file was named: the worker's own environment,
            # or (forked by its zygote) its node agent's.
            named = environ
            pid = os.getpid()
            while b"PMP_KEY_FILE=" not in named and pid > 1:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/environ", "rb") as f:
                    named = f.read()
            return environ, cmdline, named, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")

        with Executor(max_workers=1, backend="slurm", block_allocation=True__OPTIONS__) as exe:
            environ, cmdline, named, job, step = exe.submit(own_process).result(timeout=120)
            job_listing = subprocess.run(
                ["scontrol", "show", "job", "-dd", job], capture_output=True
            ).stdout
            step_listing = subprocess.run(
                ["scontrol", "show", "step", f"{job}.{step}"], capture_output=True
            ).stdout
            accounting = subprocess.run(
                ["sacct", "-j", job, "--env-vars", "-P"], capture_output=True
            ).stdout
            key_file = re.search(rb"PMP_KEY_FILE=([^\\0]*)", named)
            print(b"PMP_KEY=" in environ, b"PMP_KEY=" in job_listing + step_listing + accounting)
            print(key_file is not None and not os.path.exists(key_file.group(1)))
            key_like = re.compile(rb"[0-9a-f]{64}")
            print(
                [
                    bool(key_like.search(text))
                    for text in (environ, cmdline, job_listing, step_listing, accounting)
                ]
            )
        """.replace("__OPTIONS__", options),
        launcher,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "False False",
        "True",
        str([False] * 5),
    ], done.stdout
