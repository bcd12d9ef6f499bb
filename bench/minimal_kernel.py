"""The floor for the kernel rows: a minimal pure-Python Jupyter kernel on
pyzmq, about what any kernel must do per request and nothing more (no
IPython, no output capture, no completion, no interrupts).

    python bench/minimal_kernel.py -f CONNECTION_FILE

kernel.py registers it as the kernelspec `pmp-bench-floor` in a temporary
Jupyter path when asked for `--kernels ... floor`.
"""

import ast
import hashlib
import hmac
import json
import os
import sys
import threading
import uuid
from datetime import datetime, timezone

import zmq

DELIM = b"<IDS|MSG>"


class Kernel:
    def __init__(self, config):
        self.key = config["key"].encode()
        self.session = str(uuid.uuid4())
        self.count = 0
        self.namespace = {"__name__": "__main__"}
        context = zmq.Context.instance()
        url = f"{config['transport']}://{config['ip']}:"
        self.shell = context.socket(zmq.ROUTER)
        self.shell.bind(url + str(config["shell_port"]))
        self.control = context.socket(zmq.ROUTER)
        self.control.bind(url + str(config["control_port"]))
        self.iopub = context.socket(zmq.PUB)
        self.iopub.bind(url + str(config["iopub_port"]))
        self.stdin = context.socket(zmq.ROUTER)
        self.stdin.bind(url + str(config["stdin_port"]))
        heartbeat = context.socket(zmq.ROUTER)  # echoes whatever arrives, as ipykernel does
        heartbeat.bind(url + str(config["hb_port"]))
        threading.Thread(target=zmq.proxy, args=(heartbeat, heartbeat), daemon=True).start()

    def sign(self, parts):
        digest = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in parts:
            digest.update(part)
        return digest.hexdigest().encode()

    def send(self, socket, msg_type, content, parent, identities=()):
        header = {
            "msg_id": str(uuid.uuid4()),
            "session": self.session,
            "username": "bench",
            "date": datetime.now(timezone.utc).isoformat(),
            "msg_type": msg_type,
            "version": "5.3",
        }
        parts = [json.dumps(p).encode() for p in (header, parent, {}, content)]
        socket.send_multipart([*identities, DELIM, self.sign(parts), *parts])

    def handle(self, socket, frames):
        split = frames.index(DELIM)
        identities, (signature, *parts) = frames[:split], frames[split + 1 :]
        if not hmac.compare_digest(signature, self.sign(parts[:4])):
            return True  # never act on an unsigned message
        header = json.loads(parts[0])
        msg_type = header["msg_type"]
        self.send(self.iopub, "status", {"execution_state": "busy"}, header)
        going_on = True
        if msg_type == "kernel_info_request":
            reply = {
                "status": "ok",
                "protocol_version": "5.3",
                "implementation": "pmp-bench-floor",
                "implementation_version": "1",
                "language_info": {
                    "name": "python",
                    "version": sys.version.split()[0],
                    "mimetype": "text/x-python",
                    "file_extension": ".py",
                },
                "banner": "",
            }
        elif msg_type == "execute_request":
            reply = self.execute(json.loads(parts[3])["code"], header)
        elif msg_type == "shutdown_request":
            reply, going_on = {"status": "ok", "restart": False}, False
        else:
            reply = None
        if reply is not None:
            self.send(socket, msg_type.replace("_request", "_reply"), reply, header, identities)
        self.send(self.iopub, "status", {"execution_state": "idle"}, header)
        return going_on

    def execute(self, code, parent):
        self.count += 1
        self.send(
            self.iopub, "execute_input", {"code": code, "execution_count": self.count}, parent
        )
        try:
            tree = ast.parse(code)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<cell>", "exec"), self.namespace)  # noqa: S102 - the cell
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.namespace)
                if value is not None:
                    data = {"text/plain": repr(value)}
                    self.send(
                        self.iopub,
                        "execute_result",
                        {"execution_count": self.count, "data": data, "metadata": {}},
                        parent,
                    )
        except Exception as error:  # noqa: BLE001 - the cell's error is its reply
            return {
                "status": "error",
                "ename": type(error).__name__,
                "evalue": str(error),
                "traceback": [],
            }
        return {"status": "ok", "execution_count": self.count, "user_expressions": {}}

    def serve(self):
        poller = zmq.Poller()
        for socket in (self.shell, self.control):
            poller.register(socket, zmq.POLLIN)
        while True:
            for socket, _ in poller.poll():
                if not self.handle(socket, socket.recv_multipart()):
                    return


if __name__ == "__main__":
    with open(sys.argv[sys.argv.index("-f") + 1]) as file:
        kernel = Kernel(json.load(file))
    try:
        kernel.serve()
    except KeyboardInterrupt:  # how jupyter_client stops a kernel it does not wait for
        pass
    os._exit(0)
