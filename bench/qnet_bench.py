"""Qnet rows: the same socket operations through ``<A>/net/b`` (B's stack over Qnet over
devnp-vwire) and through A's local mount, in one run.

    sudo .venv/bin/python -m bench.qnet_bench [--seconds S] [--markdown]

* remote 64-byte round trip: a UDP socket connected to itself on 127.0.0.1, one 64-byte
  write and one read per round (calls/s);
* 128 KiB writes: a TCP connection to a sink on 127.0.0.1, 128 KiB per write (MB/s).

The second column is the same operation on the local mount (not the kernel)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench.common import Row, machine, table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENT = r"""
import socket, sys, time
mode, secs = sys.argv[1], float(sys.argv[2])
n = nbytes = 0
if mode == "rt64":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect(s.getsockname())
    msg = b"x" * 64
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        s.send(msg)
        s.recv(64)
        n += 1
else:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    a.setblocking(False)
    buf = b"y" * (128 * 1024)
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        c.sendall(buf)
        n += 1
        nbytes += len(buf)
        try:
            while a.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
print(n, nbytes, time.monotonic() - t0)
"""


def _env(sock: str) -> dict[str, str]:
    env = dict(os.environ, SOCK=sock)
    env["PYTHONPATH"] = REPO + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_client(sock: str, mode: str, secs: float) -> tuple[int, int, float]:
    out = subprocess.run([sys.executable, "-m", "rmgr.libsocket", "-c", CLIENT, mode,
                          str(secs)], env=_env(sock), capture_output=True, text=True,
                         timeout=secs + 60, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"client {mode} on {sock}: {out.stderr[-500:]}")
    n, nb, t = out.stdout.split()
    return int(n), int(nb), float(t)


def _start(args: list[str], prefix: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "stack.main", *args, "-p", "tcpip",
                          f"prefix={prefix},auto_linklocal=0"], env=_env(prefix), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(f"{prefix}/dev/socket/config/status"):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"io-pkt at {prefix} did not start")
        time.sleep(0.05)
    subprocess.run([sys.executable, "-m", "stack.main", "ifconfig", "vw0", "up"],
                   env=_env(prefix), cwd=REPO, check=True, capture_output=True)
    return p


def qnet_rows(seconds: float) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="qnet-bench-") as tmp:
        w = f"{tmp}/w.sock"
        procs = []
        try:
            procs.append(_start(["-d", "vwire", f"path={w},name=vw0", "-p", "qnet",
                                 "host=a,auto_add=2"], f"{tmp}/a"))
            procs.append(_start(["-d", "vwire", f"peer={w},name=vw0", "-p", "qnet",
                                 "host=b,auto_add=2"], f"{tmp}/b"))
            deadline = time.monotonic() + 10
            while "b" not in os.listdir(f"{tmp}/a/net"):
                if time.monotonic() > deadline:
                    raise RuntimeError("a never learned b")
                time.sleep(0.05)
            local, remote = f"{tmp}/a", f"{tmp}/a/net/b"
            res = {(where, mode): run_client(sock, mode, seconds)
                   for where, sock in (("remote", remote), ("local", local))
                   for mode in ("rt64", "w128k")}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()

    def rate(r: tuple[int, int, float]) -> float:
        return r[0] / r[2]

    def mbps(r: tuple[int, int, float]) -> float:
        return r[1] / r[2] / 1e6

    return [
        Row("Qnet remote 64-byte write+read", "rounds/s", rate(res["remote", "rt64"]),
            rate(res["local", "rt64"]), ">= 500",
            "SOCK=<A>/net/b over vwire; second column: A's local mount"),
        Row("Qnet remote 128 KiB writes", "MB/s", mbps(res["remote", "w128k"]),
            mbps(res["local", "w128k"]), ">= 10",
            "TCP to 127.0.0.1 on B through Qnet; second column: A's local mount"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rows = qnet_rows(args.seconds)
    print(machine())
    print(table(rows, markdown=args.markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
