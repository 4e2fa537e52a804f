#!/usr/bin/env python3
"""Run by hand (not in CI): a real Workerman 4.2.1 behind tideway, through a reload and a stop.

    git clone --depth 1 --branch v4.2.1 https://github.com/walkor/workerman /tmp/workerman-4.2.1
    cargo build --bin tideway
    scripts/workerman-reload.py /tmp/workerman-4.2.1 [target/debug/tideway]

Needs php-cli with pcntl and posix (Debian's php-cli has both). Port 2346 must be free
(examples/workerman/start.php listens there). Standard library only.

What it does, and prints as counts:
 1. starts tideway (upstream `app`, drain_timeout 3s) and examples/workerman/start.php on
    Workerman (4 processes), which registers 127.0.0.1:2346 through the PHP helper;
 2. opens 20 WebSockets through tideway; each sends a message and must get it echoed;
 3. `php start.php reload -g`; then for 3 TTLs (18 s) samples tideway's view of the backend
    every 0.5 s (present and active?), and each WebSocket sends again and must get its echo;
 4. `php start.php stop`; counts how each WebSocket ended (close code 1001 from tideway, or a
    cut: end of stream or reset without a close frame).
Exit status 0 when none was cut by the reload, the backend was registered and active at every
sample, and all 20 got 1001 on the stop.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = 20
TTL = 6
ADMIN_TOKEN = "by-hand-admin-token"
REGISTER_TOKEN = "by-hand-register-token"
BACKEND_ID = "workerman-2346"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_json(admin, path):
    req = urllib.request.Request(f"http://{admin}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.loads(r.read())


def backend_state(admin):
    try:
        for b in admin_json(admin, "/v1/upstreams/app")["backends"]:
            if b["id"] == BACKEND_ID:
                return b["state"]
    except OSError:
        return "admin unreachable"
    return None


def wait_for(what, pred, limit):
    end = time.time() + limit
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


class Client:
    """One WebSocket through tideway: sends masked text frames, reads frames on a thread."""

    def __init__(self, n, listen):
        self.n = n
        self.texts = []
        self.close_code = None  # the code of a close frame received
        self.ended = None  # "close", "eof" or "reset"
        self.lock = threading.Condition()
        self.sock = socket.create_connection(listen, timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /chat?uid={n} HTTP/1.1\r\nHost: {listen[0]}:{listen[1]}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit(f"client {n}: no handshake answer")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise SystemExit(f"client {n}: {status!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(None)
        threading.Thread(target=self.read, daemon=True).start()

    def recv_exact(self, k):
        while len(self.buf) < k:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:k], self.buf[k:]
        return out

    def read(self):
        try:
            while True:
                b0, b1 = self.recv_exact(2)
                op, ln = b0 & 0x0F, b1 & 0x7F
                if ln == 126:
                    ln = struct.unpack(">H", self.recv_exact(2))[0]
                elif ln == 127:
                    ln = struct.unpack(">Q", self.recv_exact(8))[0]
                mask = self.recv_exact(4) if b1 & 0x80 else None
                data = self.recv_exact(ln)
                if mask:
                    data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
                with self.lock:
                    if op == 0x8:
                        self.close_code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
                        self.ended = "close"
                        self.lock.notify_all()
                        try:
                            self.send(0x8, data[:2])
                        except OSError:
                            pass
                        return
                    if op == 0x1:
                        self.texts.append(data.decode(errors="replace"))
                        self.lock.notify_all()
        except EOFError:
            end = "eof"
        except OSError:
            end = "reset"
        with self.lock:
            self.ended = self.ended or end
            self.lock.notify_all()

    def send(self, op, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def echo(self, text, limit=5):
        """Send `text`; whether it came back (the chat echoes to the sender) within `limit`."""
        try:
            self.send(0x1, text.encode())
        except OSError:
            return False
        with self.lock:
            return self.lock.wait_for(lambda: text in self.texts or self.ended, limit) and text in self.texts

    def wait_end(self, limit):
        with self.lock:
            self.lock.wait_for(lambda: self.ended, limit)
            return self.ended, self.close_code


def by_process(clients):
    """How many of the clients each Workerman process serves (start.php answers "id" with
    host-port#worker-id, to the sender only)."""
    count = {}
    for c in clients:
        with c.lock:
            seen = len(c.texts)
        try:
            c.send(0x1, b"id")
        except OSError:
            continue
        with c.lock:
            c.lock.wait_for(lambda: any("#" in t for t in c.texts[seen:]) or c.ended, 5)
            ids = [t.rsplit("#", 1)[1] for t in c.texts[seen:] if "#" in t]
        if ids:
            count[f"#{ids[0]}"] = count.get(f"#{ids[0]}", 0) + 1
    return dict(sorted(count.items()))


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    workerman = os.path.abspath(sys.argv[1])
    tideway = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/debug/tideway"))
    if not os.path.isfile(os.path.join(workerman, "Worker.php")):
        raise SystemExit(f"{workerman}: no Worker.php (a walkor/workerman checkout at v4.2.1)")
    tmp = tempfile.mkdtemp(prefix="workerman-reload-")
    procs = []
    try:
        listen, admin = ("127.0.0.1", free_port()), f"127.0.0.1:{free_port()}"
        conf = os.path.join(tmp, "tideway.toml")
        with open(conf, "w") as f:
            f.write(f'[server]\nshutdown_grace = "5s"\n\n[admin]\nlisten = "{admin}"\n\n[store]\ndata_dir = "{tmp}/data"\n\n'
                    f'[[listener]]\nlisten = "{listen[0]}:{listen[1]}"\nupstream = "app"\n\n'
                    '[upstream.app]\nbalance = "round_robin"\ndrain_timeout = "3s"\n')
        env = dict(os.environ, TIDEWAY_ADMIN_TOKEN=ADMIN_TOKEN, TIDEWAY_REGISTER_TOKEN=REGISTER_TOKEN, RUST_LOG="info")
        tlog = open(os.path.join(tmp, "tideway.log"), "w")
        procs.append(subprocess.Popen([tideway, "run", "--config", conf], env=env, stdout=tlog, stderr=tlog))
        def ready():
            if procs[0].poll() is not None:
                raise SystemExit("tideway exited")
            try:
                return urllib.request.urlopen(f"http://{admin}/readyz", timeout=1).status == 200
            except OSError:
                return False
        wait_for("tideway's /readyz", ready, 20)

        app = os.path.join(tmp, "app")
        os.makedirs(os.path.join(app, "vendor"))
        os.makedirs(os.path.join(tmp, "run"), mode=0o700)
        for f in ("start.php", "TidewayRegistration.php"):
            shutil.copy(os.path.join(ROOT, "examples/workerman", f), app)
        with open(os.path.join(app, "vendor/autoload.php"), "w") as f:
            f.write(f"<?php\nrequire_once {json.dumps(os.path.join(workerman, 'Autoloader.php'))};\n")
        penv = dict(os.environ, TIDEWAY_ADMIN=f"http://{admin}", TIDEWAY_REGISTER_TOKEN=REGISTER_TOKEN,
                    TIDEWAY_ADVERTISE="127.0.0.1:2346", TIDEWAY_ID=BACKEND_ID, TIDEWAY_UPSTREAM="app",
                    TIDEWAY_TTL=str(TTL), TIDEWAY_DRAIN_WAIT="10s", TIDEWAY_SECRET_FILE=os.path.join(tmp, "run/secret"),
                    WORKERMAN_RUN_DIR=os.path.join(tmp, "run"))
        wout = open(os.path.join(tmp, "workerman.out"), "w")
        procs.append(subprocess.Popen(["php", "start.php", "start"], cwd=app, env=penv, stdout=wout, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))
        wait_for("the Workerman backend active in tideway", lambda: backend_state(admin) == "active", 20)
        print(f"tideway {listen[0]}:{listen[1]} (admin {admin}), Workerman 4.2.1 at 127.0.0.1:2346 registered as {BACKEND_ID}")

        clients = [Client(n, listen) for n in range(CLIENTS)]
        before = sum(c.echo(f"before-{c.n}") for c in clients)
        print(f"before reload: {before}/{CLIENTS} WebSockets echo; by Workerman process: {by_process(clients)}")

        r = subprocess.run(["php", "start.php", "reload", "-g"], cwd=app, env=penv, capture_output=True, text=True, timeout=30)
        print(f"php start.php reload -g: exit {r.returncode}")
        samples, bad = 0, []
        end = time.time() + 3 * TTL
        while time.time() < end:
            state = backend_state(admin)
            samples += 1
            if state != "active":
                bad.append(state)
            time.sleep(0.5)
        print(f"after reload, {3 * TTL} s: backend active in {samples - len(bad)}/{samples} samples (others: {sorted(set(map(str, bad)))})")
        after = sum(c.echo(f"after-{c.n}") for c in clients)
        cut = sum(1 for c in clients if c.ended)
        print(f"after reload: {after}/{CLIENTS} WebSockets echo, {cut} ended; by Workerman process: {by_process(clients)}")
        fresh = Client(CLIENTS, listen)
        print(f"a new WebSocket after the reload echoes: {fresh.echo('fresh')}")
        fresh.sock.close()

        r = subprocess.run(["php", "start.php", "stop"], cwd=app, env=penv, capture_output=True, text=True, timeout=60)
        print(f"php start.php stop: exit {r.returncode}")
        ends = [c.wait_end(30) for c in clients]
        codes = {}
        for how, code in ends:
            key = f"close {code}" if how == "close" else str(how)
            codes[key] = codes.get(key, 0) + 1
        print(f"stop: how the {CLIENTS} WebSockets ended: {codes}")
        print(f"backend after stop: {backend_state(admin)}")
        wout.flush()
        lines = [l.strip() for l in open(os.path.join(tmp, "workerman.out")) if "tideway" in l]
        print("Workerman's tideway lines:\n  " + "\n  ".join(lines))
        ok = before == CLIENTS and after == CLIENTS and not bad and codes == {"close 1001": CLIENTS}
        print("RESULT: " + ("ok" if ok else "NOT ok"))
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
