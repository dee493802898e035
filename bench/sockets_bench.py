"""Sockets through files: benchmark beside the Linux kernel, in one run.

    .venv/bin/python bench/sockets_bench.py [--echo N] [--bulk MB] [--conns N] [--json]

Runs io-pkt in this process with a TAP in a private namespace (10.9.0.2 stack, 10.9.0.1
kernel), and measures from separate client processes:

* 1-byte echo round trip through rmgr.libsocket (p50, p99) to a kernel echo server;
* bulk TCP through the socket files, each way (client writes to a kernel sink / reads
  from a kernel source), in Mbit/s;
* accepted connections per second: a libsocket server accepting kernel clients.

Each is printed beside the same work done by the kernel alone inside the namespace
(kernel client to kernel server over the namespace's own addresses).
Needs root, /dev/fuse and /dev/net/tun.

The roles run as subprocesses (``sockets_bench.py ROLE ARGS``); ``acceptor lib|real HOST
N [SECONDS [PORT]]`` is also what ``python -m bench`` runs for its accept-via-files row.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket as _std
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STACK_IP, KERNEL_IP = "10.9.0.2", "10.9.0.1"
CHUNK = 256 * 1024


# -- roles run as subprocesses -----------------------------------------------------------
def role_peer(host: str) -> None:
    """Kernel servers: echo 7100, sink 7101 (replies with the count), source 7102 (sends
    the number of bytes asked for in the first 8 bytes), accept-close 7103."""
    import threading

    def serve(port: int, fn) -> None:  # type: ignore[no-untyped-def]
        s = _std.socket()
        s.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(512)

        def loop() -> None:
            while True:
                c, _ = s.accept()
                threading.Thread(target=fn, args=(c,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()

    def echo(c: _std.socket) -> None:
        c.setsockopt(_std.IPPROTO_TCP, _std.TCP_NODELAY, 1)
        while d := c.recv(65536):
            c.sendall(d)
        c.close()

    def sink(c: _std.socket) -> None:
        n = 0
        buf = bytearray(CHUNK)
        while k := c.recv_into(buf):
            n += k
        c.sendall(str(n).encode())
        c.close()

    def source(c: _std.socket) -> None:
        want = int.from_bytes(c.recv(8), "big")
        block = b"\0" * CHUNK
        while want > 0:
            c.sendall(block[:min(want, CHUNK)])
            want -= CHUNK
        c.close()

    def closer(c: _std.socket) -> None:
        c.close()

    serve(7100, echo)
    serve(7101, sink)
    serve(7102, source)
    serve(7103, closer)
    print("ready", flush=True)
    time.sleep(3600)


def role_client(which: str, host: str, echo_n: int, bulk_mb: int) -> None:
    socket: Any = importlib.import_module("rmgr.libsocket") if which == "lib" else _std
    out: dict[str, float] = {}
    s = socket.create_connection((host, 7100))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(echo_n):
        t = time.perf_counter()
        s.sendall(b"x")
        s.recv(1)
        rtts.append(time.perf_counter() - t)
    s.close()
    rtts.sort()
    out["echo_p50_us"] = rtts[len(rtts) // 2] * 1e6
    out["echo_p99_us"] = rtts[int(len(rtts) * 0.99)] * 1e6
    total = bulk_mb << 20
    block = b"\0" * CHUNK
    s = socket.create_connection((host, 7101))
    t = time.perf_counter()
    sent = 0
    while sent < total:
        s.sendall(block)
        sent += CHUNK
    s.shutdown(socket.SHUT_WR)
    got = int(s.recv(100))
    dt = time.perf_counter() - t
    s.close()
    assert got == total, (got, total)
    out["bulk_send_mbit"] = total * 8 / dt / 1e6
    s = socket.create_connection((host, 7102))
    t = time.perf_counter()
    s.sendall(total.to_bytes(8, "big"))
    buf = bytearray(CHUNK)
    n = 0
    while k := s.recv_into(buf):
        n += k
    dt = time.perf_counter() - t
    s.close()
    assert n == total, (n, total)
    out["bulk_recv_mbit"] = total * 8 / dt / 1e6
    print(json.dumps(out), flush=True)


def role_acceptor(which: str, host: str, n: int, seconds: float = 0.0,
                  port: int = 7200) -> None:
    """Accept and close ``n`` connections (with ``seconds``, stop early once that long has
    passed since the first); the clock starts at the first accept. Prints "ready" once
    listening, then ``{"accepts_per_s", "accepts", "seconds"}`` (the first accept is not
    counted). ``python -m bench`` runs this per run for its accept-via-files row."""
    socket: Any = importlib.import_module("rmgr.libsocket") if which == "lib" else _std
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1024)
    print("ready", flush=True)
    c, _ = srv.accept()  # the first one starts the clock
    c.close()
    now = time.perf_counter
    t = now()
    deadline = t + seconds if seconds > 0 else float("inf")
    count = 0
    while count < n - 1:
        c, _ = srv.accept()
        c.close()
        count += 1
        if now() >= deadline:
            break
    dt = now() - t
    print(json.dumps({"accepts_per_s": count / dt, "accepts": count, "seconds": dt}),
          flush=True)
    srv.close()


def role_connector(host: str, n: int) -> None:
    for _ in range(n):
        s = _std.socket()
        s.connect((host, 7200))
        s.close()


# -- orchestration ----------------------------------------------------------------------
def ns_cmd(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def run_roles(ns: str, prefix: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    env = dict(os.environ, SOCK=prefix, PYTHONPATH=REPO)
    me = [sys.executable, os.path.abspath(__file__)]
    peer = subprocess.Popen(ns_cmd(ns, *me, "peer", KERNEL_IP), stdout=subprocess.PIPE, env=env)
    results: dict[str, dict[str, float]] = {"stack": {}, "kernel": {}}
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == b"ready"
        for label, cmd in (("stack", [*me, "client", "lib", KERNEL_IP]),
                           ("kernel", ns_cmd(ns, *me, "client", "real", KERNEL_IP))):
            r = subprocess.run([*cmd, str(args.echo), str(args.bulk)], env=env,
                               capture_output=True, text=True, timeout=600)
            if r.returncode:
                raise RuntimeError(f"{label} client failed: {r.stderr}")
            results[label].update(json.loads(r.stdout))
        for label, server, target in (
                ("stack", [*me, "acceptor", "lib", STACK_IP], STACK_IP),
                ("kernel", ns_cmd(ns, *me, "acceptor", "real", KERNEL_IP), KERNEL_IP)):
            acc = subprocess.Popen([*server, str(args.conns)], env=env, stdout=subprocess.PIPE,
                                   text=True)
            try:
                assert acc.stdout is not None and acc.stdout.readline().strip() == "ready"
                subprocess.run(ns_cmd(ns, *me, "connector", target, str(args.conns)), env=env,
                               check=True, timeout=600)
                results[label].update(json.loads(acc.stdout.readline()))
            finally:
                acc.kill()
                acc.wait()
    finally:
        peer.kill()
        peer.wait()
    return results


async def with_stack(ns: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import trio

    from stack.core import Stack, StackConfig
    from stack.l2.iface import IFF_UP
    from stack.options import Options

    top = tempfile.mkdtemp(prefix="iopkt-bench-")
    prefix = f"{top}/s"
    cfg = StackConfig(prefix=prefix, mount=True,
                      drivers=[("tap", Options.parse(f"name=tap0,netns={ns}"))])
    st: Any = Stack(cfg)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            try:
                st.interfaces["tap0"].set_flags(IFF_UP)
                st.inet.add_address("tap0", f"{STACK_IP}/24")
                for cmd in (["addr", "add", f"{KERNEL_IP}/24", "dev", "tap0"],
                            ["link", "set", "tap0", "up"]):
                    await trio.run_process(["ip", "-n", ns, *cmd])
                return await trio.to_thread.run_sync(run_roles, ns, prefix, args)
            finally:
                with trio.CancelScope(shield=True):
                    await st.shutdown()
                nursery.cancel_scope.cancel()
    finally:
        # only once the nursery is done: shutdown() cancels the mount's task, which
        # unmounts when it next runs; walking the tree while it is still mounted would
        # send this very process FUSE requests it cannot answer (a hang)
        mnt = f"{prefix}/dev/socket"
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        shutil.rmtree(top, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("peer", "client", "acceptor", "connector"):
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "peer":
            role_peer(rest[0])
        elif role == "client":
            role_client(rest[0], rest[1], int(rest[2]), int(rest[3]))
        elif role == "acceptor":
            seconds = float(rest[3]) if len(rest) > 3 else 0.0
            port = int(rest[4]) if len(rest) > 4 else 7200
            role_acceptor(rest[0], rest[1], int(rest[2]), seconds, port)
        else:
            role_connector(rest[0], int(rest[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--echo", type=int, default=2000, help="echo round trips")
    ap.add_argument("--bulk", type=int, default=64, help="MB each way")
    ap.add_argument("--conns", type=int, default=1000, help="connections to accept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    import trio

    ns = f"iopkt-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        res = trio.run(with_stack, ns, args)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    targets = {"echo_p50_us": "<= 200", "echo_p99_us": "", "bulk_send_mbit": ">= 800",
               "bulk_recv_mbit": ">= 800", "accepts_per_s": ">= 1000"}
    print(f"{'metric':<16} {'io-pkt (files)':>15} {'kernel':>12}  target")
    for key, target in targets.items():
        print(f"{key:<16} {res['stack'].get(key, float('nan')):>15.1f} "
              f"{res['kernel'].get(key, float('nan')):>12.1f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
