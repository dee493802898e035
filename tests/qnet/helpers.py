"""Helpers for the Qnet tests: io-pkt processes joined by devnp-vwire, each running
lsm-qnet, and programs run against a remote node's stack (``SOCK=<A>/net/b``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import REPO, io_pkt_env

#: a kernel-side (or stack-side) TCP server: accepts one connection, reads to EOF,
#: answers the sha256 of what it read
SHA_SERVER = """
import hashlib, socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(4)
print("up", flush=True)
c, _ = ls.accept()
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
c.sendall(h.hexdigest().encode())
c.close()
print(n, flush=True)
"""

#: the client: N pseudo-random bytes to ADDR:PORT, then compares the server's sha256
SHA_CLIENT = """
import hashlib, random, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(n).randbytes(n)
c = socket.create_connection((addr, port), timeout=120)
view = memoryview(data)
for off in range(0, n, 1 << 17):
    c.sendall(view[off:off + (1 << 17)])
c.shutdown(socket.SHUT_WR)
got = b""
while len(got) < 64:
    b = c.recv(64)
    if not b:
        break
    got += b
print("equal" if got.decode() == hashlib.sha256(data).hexdigest() else "DIFFERENT", flush=True)
"""


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def listing(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def qnet_state(prefix: str) -> str:
    with open(f"{prefix}/net/.qnet/nodes", encoding="utf-8") as fh:
        return fh.read()


def qnet_stats(prefix: str) -> dict[str, int]:
    with open(f"{prefix}/net/.qnet/stats", encoding="utf-8") as fh:
        return {k: int(v) for k, v in (ln.split() for ln in fh if ln.strip())}


def link_frames(prefix: str, node: str) -> dict[str, tuple[bool, int]]:
    """link name -> (up, frames out) for ``node`` in ``prefix``'s Qnet state."""
    out: dict[str, tuple[bool, int]] = {}
    current = None
    for ln in qnet_state(prefix).splitlines():
        parts = ln.split()
        if parts[:1] == ["node"]:
            current = parts[1]
        elif parts[:1] == ["link"] and current == node:
            out[parts[1]] = (parts[5] == "up", int(parts[7]))
    return out


def libsocket(sock: str, code: str, *args: str, timeout: float = 180,
              wait: bool = True) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    """Run ``code`` under rmgr.libsocket with SOCK=``sock``."""
    argv = [sys.executable, "-m", "rmgr.libsocket", "-c", code, *args]
    env = io_pkt_env(SOCK=sock)
    if wait:
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
