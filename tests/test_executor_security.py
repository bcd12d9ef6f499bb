"""Anyone on the machine can connect to the scheduler's port. Nothing they send
may be unpickled, and nothing they send may stop the executor.

Each forged message carries a pickle that creates a marker file when it is
unpickled; the tests first prove that the pickle does so, then send it
unsigned, wrongly signed and behind plausible headers, and check that the
marker never appears while the executor keeps computing correct results.
(The peer, executorlib, unpickles whatever reaches its sockets.)
"""

import json
import os
import pickle
import re
import resource
import socket
import struct
import subprocess
import sys
import time

import psutil
import pytest
import zmq
from gates import wait_for_file
from pmp import Executor
from unpickle_traps import OpenOnUnpickle, TouchOnUnpickle

RESULT_TIMEOUT = 60
SIGNATURE_LEN = 32


def add(a, b):
    return a + b


def payloads(marker):
    """Pickles that create ``marker`` when loaded, in the framings pmp uses."""
    touch = pickle.dumps(TouchOnUnpickle(marker), protocol=5)
    opener = pickle.dumps(OpenOnUnpickle(marker), protocol=5)
    as_result = pickle.dumps((TouchOnUnpickle(marker), 666), protocol=5)
    return [touch, opener, as_result]


def prove_payloads_are_live(tmp_path):
    """The test would be empty if loading these pickles did nothing."""
    for index in range(len(payloads(tmp_path))):
        control = tmp_path / f"control-{index}"
        subprocess.run(
            [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
            input=payloads(control)[index],
            check=True,
            timeout=60,
        )
        assert control.exists(), f"payload {index} did not create its marker"


# Headers shaped like pmp's (scheduler/src/protocol.rs, bincode): FromWorker::Hello
# {worker: u32, pid: u32, host: String}, ::InitDone {outcome}, ::Done {task: u64, outcome}.
def hello_header(worker, pid):
    host = socket.gethostname().encode()
    return struct.pack("<IIIQ", 0, worker, pid, len(host)) + host


def init_done_header(outcome):
    return struct.pack("<II", 1, outcome)


def done_header(task, outcome):
    return struct.pack("<IQI", 2, task, outcome)


def forged_messages(marker, worker_pids):
    """Multipart messages no worker signed, each carrying the marker pickles."""
    pickles = payloads(marker)
    messages = [[]]  # an empty message is dropped by ZeroMQ itself; harmless
    for payload in pickles:
        messages += [
            [payload],
            [payload, payload],
            [b"", payload],
            [b"\0" * SIGNATURE_LEN, payload],
            [os.urandom(SIGNATURE_LEN), payload, payload],
            [os.urandom(SIGNATURE_LEN - 1), done_header(1, 0), payload],
            [os.urandom(SIGNATURE_LEN + 1), done_header(1, 0), payload],
        ]
        for pid in [*worker_pids, os.getpid()]:
            for worker in range(3):
                messages.append([os.urandom(SIGNATURE_LEN), hello_header(worker, pid)])
                messages.append([hello_header(worker, pid), payload])
        for task in range(40):
            for outcome in (0, 1):
                messages.append([os.urandom(SIGNATURE_LEN), done_header(task, outcome), payload])
                messages.append([done_header(task, outcome), payload])
                messages.append([b"\0" * SIGNATURE_LEN, done_header(task, outcome), payload])
        for outcome in (0, 1):
            messages.append([os.urandom(SIGNATURE_LEN), init_done_header(outcome), payload])
    messages.append([os.urandom(SIGNATURE_LEN), done_header(1, 0), os.urandom(9 << 20)])
    return messages


def attack_with_dealers(address, marker, worker_pids):
    context = zmq.Context()
    try:
        dealers = []
        for identity in (None, b"\x00\x00\x00\x00", b"0", b"worker-0"):
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 2000)
            dealer.setsockopt(zmq.SNDTIMEO, 5000)
            if identity is not None:
                dealer.setsockopt(zmq.ROUTING_ID, identity)
            dealer.connect(address)
            dealers.append(dealer)
        for dealer in dealers:
            for message in forged_messages(marker, worker_pids):
                if not message:
                    continue
                try:
                    dealer.send_multipart(message)
                except zmq.Again:
                    break  # the scheduler stopped reading this peer: its right
        # Whatever the scheduler answers (if anything) must not be a crash;
        # read a little so the sends have surely been taken off the socket.
        for dealer in dealers:
            dealer.poll(200)
    finally:
        context.destroy(linger=2000)


def host_and_port(address):
    match = re.fullmatch(r"tcp://(.+):(\d+)", address)
    assert match, address
    return match.group(1).strip("[]"), int(match.group(2))


ZMTP_GREETING = (
    b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31
)


def zmtp_ready(socket_type):
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return b"\x04" + bytes([len(body)]) + body


def zmtp_frame(data, more=False):
    flags = 0x01 if more else 0x00
    if len(data) < 256:
        return bytes([flags, len(data)]) + data
    return bytes([flags | 0x02]) + struct.pack(">Q", len(data)) + data


def attack_with_raw_tcp(address, marker):
    """Garbage, a valid greeting followed by garbage, absurd frame lengths,
    pickles as raw bytes, and a connection that never says anything."""
    host, port = host_and_port(address)
    pickles = payloads(marker)
    streams = [
        os.urandom(4096),
        b"".join(pickles),
        ZMTP_GREETING + os.urandom(2048),
        ZMTP_GREETING
        + zmtp_ready(b"DEALER")
        + zmtp_frame(os.urandom(SIGNATURE_LEN), more=True)
        + zmtp_frame(done_header(1, 0), more=True)
        + zmtp_frame(pickles[0]),
        ZMTP_GREETING + zmtp_ready(b"DEALER") + os.urandom(4096),
        # long frames claiming absurd sizes, with and without a handshake, then
        # a short one claiming 255 bytes
        ZMTP_GREETING + b"\x02" + struct.pack(">Q", 2**63 - 1) + pickles[0],
        ZMTP_GREETING + b"\x02" + struct.pack(">Q", 2**62) + pickles[0],
        ZMTP_GREETING + zmtp_ready(b"DEALER") + b"\x02" + struct.pack(">Q", 2**62) + pickles[0],
        ZMTP_GREETING + zmtp_ready(b"DEALER") + b"\x02" + struct.pack(">Q", 2**40) + pickles[0],
        ZMTP_GREETING + zmtp_ready(b"DEALER") + b"\x06" + struct.pack(">Q", 2**62),
        ZMTP_GREETING + b"\x00\xff" + pickles[1],
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ]
    silent = socket.create_connection((host, port), timeout=10)
    for stream in streams:
        try:
            connection = socket.create_connection((host, port), timeout=10)
        except ConnectionRefusedError:
            break  # the listener is gone: the caller reports how it died
        with connection:
            try:
                connection.sendall(stream)
                connection.settimeout(0.2)
                connection.recv(4096)
            except OSError:
                pass  # the scheduler may hang up on us: that is fine
    return silent  # closed by the caller, after the executor was used


@pytest.fixture
def marker(tmp_path):
    prove_payloads_are_live(tmp_path)
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a forged message was unpickled"


def test_scheduler_listens_on_loopback_only():
    with Executor(max_workers=1, block_allocation=True) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        host, port = host_and_port(exe.info["address"])
        assert host in ("127.0.0.1", "::1")
        listening = [
            c
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening, f"nothing of ours listens on port {port}"
        for connection in listening:
            assert connection.laddr.ip in ("127.0.0.1", "::1"), connection


def test_key_is_not_on_worker_command_lines(wait_until):
    with Executor(max_workers=2, block_allocation=True) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        workers = wait_until(
            lambda: all(w["pid"] for w in exe.info["workers"]) and exe.info["workers"],
            timeout=30,
        )
        for worker in workers:
            arguments = psutil.Process(worker["pid"]).cmdline()[1:]
            for argument in arguments:
                assert not re.search(r"[0-9a-fA-F]{32,}|[A-Za-z0-9+/=_-]{43,}", argument), (
                    f"worker command line carries something key-like: {arguments}"
                )


def test_forged_zmq_messages_are_never_unpickled(block_allocation, marker, wait_until):
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        if block_allocation:
            wait_until(lambda: all(w["pid"] for w in exe.info["workers"]), timeout=30)
        pids = [w["pid"] for w in exe.info["workers"] if w["pid"]]
        attack_with_dealers(exe.info["address"], marker, pids)
        futures = [exe.submit(add, i, i) for i in range(20)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [2 * i for i in range(20)]
        assert not marker.exists()
    assert not marker.exists()


def test_forged_results_do_not_complete_running_tasks(block_allocation, marker, make_gate):
    gate = make_gate()
    with Executor(max_workers=2, block_allocation=block_allocation) as exe:
        running = [exe.submit(wait_for_file, gate.path, i) for i in range(2)]
        queued = [exe.submit(add, i, 100) for i in range(4)]
        attack_with_dealers(exe.info["address"], marker, [])
        assert not any(f.done() for f in running)
        gate.open()
        assert [f.result(timeout=RESULT_TIMEOUT) for f in running] == [0, 1]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in queued] == [100, 101, 102, 103]


RAW_TCP_HOST = """
import json, sys
from pmp import Executor

def add(a, b):
    return a + b

with Executor(max_workers=1, block_allocation=BLOCK_VALUE) as exe:
    print(json.dumps(exe.info["address"]), flush=True)
    sys.stdin.readline()
    print(json.dumps([exe.submit(add, i, 1).result(timeout=60) for i in range(10)]), flush=True)
    sys.stdin.readline()
    print(json.dumps([exe.submit(add, i, 2).result(timeout=60) for i in range(10)]), flush=True)
"""


def test_raw_tcp_garbage_neither_unpickled_nor_fatal(block_allocation, marker, start_script):
    # The executor lives in a child process: should garbage crash the
    # scheduler, this test fails instead of taking pytest down with it.
    host = start_script(RAW_TCP_HOST.replace("BLOCK_VALUE", str(block_allocation)))
    address = json.loads(host.stdout.readline() or "null")
    assert address, host.stderr.read()
    silent = attack_with_raw_tcp(address, marker)
    try:
        time.sleep(0.2)  # not a speed assertion: lets a crash, if any, happen first
        if host.poll() is not None:
            pytest.fail(
                f"raw TCP bytes killed the process hosting the Executor (exit status "
                f"{host.returncode}); its stderr ends:\n{host.stderr.read()[-2000:]}"
            )
        host.stdin.write("go\n")
        host.stdin.flush()
        first = host.stdout.readline()
        assert first, f"executor host died: {host.stderr.read() if host.poll() is not None else ''}"
        assert json.loads(first) == list(range(1, 11))
        attack_with_dealers(address, marker, [])
        host.stdin.write("go\n")
        host.stdin.flush()
        second = host.stdout.readline()
        assert second, (
            f"executor host died: {host.stderr.read() if host.poll() is not None else ''}"
        )
        assert json.loads(second) == list(range(2, 12))
    finally:
        silent.close()
    host.stdin.close()
    assert host.wait(timeout=60) == 0, host.stderr.read()
    assert not marker.exists()


def closed_by_scheduler(connection, patience=60):
    """True once the scheduler has closed ``connection`` (read to its end);
    False if it is still open after ``patience`` seconds, which only keeps a
    broken scheduler from hanging the test: pmp closes it in seconds."""
    connection.settimeout(patience)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset by the scheduler
    return True


# Run by the second user: connect, send the bytes given in hex, then stream
# zeros; print "closed" if the scheduler closed the connection before
# `total` bytes went, else "open".
HUGE_FRAME = """
import socket, sys
host, port, head, total = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
connection = socket.create_connection((host, port))
connection.sendall(head)
chunk = bytes(1 << 20)
try:
    for _ in range(total // len(chunk)):
        connection.sendall(chunk)
    connection.settimeout(60)
    while connection.recv(65536):
        pass
    print("closed")
except TimeoutError:
    print("open")
except OSError:
    print("closed")
"""


def test_a_huge_frame_from_a_peer_without_the_key_is_refused_unread(as_other, other_users_python):
    # The scheduler runs in this process: what it buffers shows in our RSS.
    # The peer is another user of the machine, who can reach loopback ports.
    with Executor(max_workers=1, block_allocation=True) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        before = psutil.Process().memory_info().rss
        host, port = host_and_port(exe.info["address"])
        head = ZMTP_GREETING + zmtp_ready(b"DEALER") + b"\x02" + struct.pack(">Q", 3 << 30)
        peer = as_other(
            other_users_python,
            "-c",
            HUGE_FRAME,
            host,
            str(port),
            head.hex(),
            str(256 << 20),
            timeout=180,  # the peer waits up to 60 s for the close before saying "open"
        )
        assert peer.stdout.split() == ["closed"], (
            "a peer that never authenticated announced a 3 GiB frame and streamed "
            "256 MiB of it without being disconnected"
        )
        grown = psutil.Process().memory_info().rss - before
        assert grown < 64 << 20, f"the client grew by {grown >> 20} MiB"
        assert exe.submit(add, 2, 2).result(timeout=RESULT_TIMEOUT) == 4


def test_connections_that_do_not_authenticate_are_closed():
    with Executor(max_workers=1, block_allocation=True) as exe:
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        address = host_and_port(exe.info["address"])
        silent = socket.create_connection(address)
        after_handshake = socket.create_connection(address)
        after_handshake.sendall(ZMTP_GREETING + zmtp_ready(b"DEALER"))
        unsigned = socket.create_connection(address)
        unsigned.sendall(
            ZMTP_GREETING
            + zmtp_ready(b"DEALER")
            + zmtp_frame(os.urandom(SIGNATURE_LEN), more=True)
            + zmtp_frame(hello_header(0, os.getpid()))
        )
        for name, connection in [
            ("a wrongly signed hello", unsigned),
            ("a silent connection", silent),
            ("a connection silent after the handshake", after_handshake),
        ]:
            with connection:
                assert closed_by_scheduler(connection), f"the scheduler kept {name} open"
        assert exe.submit(add, 2, 2).result(timeout=RESULT_TIMEOUT) == 4


IDLE_CONNECTIONS = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(count):
    try:
        held.append(socket.create_connection((host, port), timeout=5))
    except OSError:
        break  # the scheduler is out of descriptors and accepts no more
print(len(held), flush=True)
sys.stdin.read()
"""


def test_thousands_of_idle_connections_do_not_keep_new_workers_out(as_other, other_users_python):
    # This process (and the scheduler in it) may open 2048 descriptors; a
    # flood of 3000 connections, from another user of the machine, would take
    # them all if the scheduler kept every connection that never authenticates.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, soft), hard))
    try:
        with Executor(max_workers=2) as exe:  # a fresh worker for every call
            assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
            host, port = host_and_port(exe.info["address"])
            flood = as_other(
                other_users_python,
                "-c",
                IDLE_CONNECTIONS,
                host,
                str(port),
                "3000",
                popen=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert int(flood.stdout.readline() or 0) > 0
                futures = [exe.submit(add, i, 10) for i in range(6)]
                assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [
                    i + 10 for i in range(6)
                ]
            finally:
                flood.stdin.close()
                flood.wait(timeout=60)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
