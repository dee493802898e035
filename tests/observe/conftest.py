"""Fixtures for the observability tests: an io-pkt process with tap0 inside a namespace
the test creates (the stack 10.78.0.2, the kernel 10.78.0.1), a kernel sink there, and
kernel-side loss with nftables (``numgen random``), as DESIGN.md prescribes for a kernel
without netem. Everything made is removed on every path."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

ADDR = "10.78.0.2"
PEER = "10.78.0.1"

needs_nft = pytest.mark.skipif(shutil.which("nft") is None,
                               reason="needs nft (Debian package nftables; scripts/setup)")

#: a kernel-side TCP sink: accepts one connection, reads to EOF, prints the byte count
SINK = """
import socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(4)
print("up", flush=True)
c, _ = ls.accept()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
print(n, flush=True)
c.close()
"""


@pytest.fixture
def one(stack_process: object, netns: object) -> tuple[object, object]:
    """io-pkt with tap0 inside ``netns``, the stack at ADDR, the kernel at PEER."""
    sp = stack_process("-d", "tap", f"name=tap0,netns={netns}")  # type: ignore[operator]
    sp.tool("ifconfig", "tap0", f"{ADDR}/24", "up")  # type: ignore[attr-defined]
    netns.run("ip", "addr", "add", f"{PEER}/24", "dev", "tap0")  # type: ignore[attr-defined]
    netns.run("ip", "link", "set", "tap0", "up")  # type: ignore[attr-defined]
    return sp, netns


@pytest.fixture
def sink(netns: object) -> Iterator[object]:
    """Factory: ``start(port)`` runs SINK in the namespace; killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(port: int) -> subprocess.Popen[str]:
        p = netns.popen(sys.executable, "-c", SINK, PEER, str(port),  # type: ignore[attr-defined]
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "up"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def drop_incoming(ns: object, port: int, percent: int) -> None:
    """Drop ``percent`` % of the TCP segments toward ``port`` arriving in ``ns`` (the
    table goes with the namespace)."""
    rules = (f"table inet iopkt_loss {{\n chain input {{\n"
             f"  type filter hook input priority 0;\n"
             f"  tcp dport {port} numgen random mod 100 < {percent} drop\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", str(ns), "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True, timeout=30)
