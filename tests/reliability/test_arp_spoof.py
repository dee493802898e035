"""ARP spoofing at a running stack (issue 14, item 4): for 8 s a spoofer in the kernel's
namespace claims the kernel peer's address from random MACs at ~500 frames/s (replies to
the stack, requests for the stack, gratuitous requests and replies). Meanwhile a TCP
connection each way must complete and carry its data intact, the stack's entry for the
peer must never show a forged MAC, and every refused update is counted."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from typing import Any

from tests.reliability.helpers import (
    KERNEL_IP,
    TapStack,
    Transfer,
    delta,
    needs_tap_stack,
    wait_for,
)

pytestmark = [needs_tap_stack]

NSATTACK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsattack.py")
SPOOF_SECONDS = 8
SPOOF_RATE = 500
FORGED_PREFIX = "02:66:"  # nsattack.py arpspoof's MACs

#: a kernel-side server: accepts one connection and sends TOTAL bytes, then closes
_SERVER = r"""
import hashlib, socket, sys
port, total = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port)); ls.listen(1); ls.settimeout(30)
print("ready", flush=True)
c, _ = ls.accept(); c.settimeout(30)
h = hashlib.sha256(); sent = 0
while sent < total:
    chunk = bytes([(sent // 4096) & 0xFF]) * min(4096, total - sent)
    c.sendall(chunk); h.update(chunk); sent += len(chunk)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(h.hexdigest(), sent, flush=True)
"""


def arp_table(ts: TapStack) -> dict[str, str]:
    rows = ts.read("config/arp").splitlines()[1:]
    return {r.split()[0]: r.split()[1] for r in rows if r.strip()}


class StackClient:
    """A connection from the stack (rmgr.libsocket) to a kernel server; receives all."""

    def __init__(self, ts: TapStack, port: int) -> None:
        self.ts = ts
        self.port = port
        self.hash = hashlib.sha256()
        self.received = 0
        self.connect_s = -1.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from rmgr import libsocket

        try:
            libsocket.setsockprefix(self.ts.sp.prefix)
            s = libsocket.socket()
            s.settimeout(30)
            t0 = time.monotonic()
            s.connect((KERNEL_IP, self.port))
            self.connect_s = time.monotonic() - t0
            while True:
                d = s.recv(65536)
                if not d:
                    break
                self.hash.update(d)
                self.received += len(d)
            s.close()
        except BaseException as e:  # reported by the test
            self.error = e


def test_arp_spoof_flood_connections_complete(netns: Any, stack_process: Any) -> None:
    ts = TapStack.start(stack_process, netns)
    real = netns.run("cat", "/sys/class/net/tap0/address").stdout.strip()
    # the stack resolves the peer itself: a reachable entry with the real MAC
    assert ts.sp.tool("ping", "-c", "2", "-W", "2", KERNEL_IP, check=False).returncode == 0
    assert arp_table(ts).get(KERNEL_IP) == real
    before = ts.stats("arp")
    total = 2_000_000
    server = netns.popen(sys.executable, "-c", _SERVER, "5002", str(total),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"ready"
    spoof = netns.popen(sys.executable, NSATTACK, "arpspoof", str(SPOOF_SECONDS), str(SPOOF_RATE),
                        ts.mac(), KERNEL_IP, "10.9.0.2",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: dict[str, int] = {}
    inbound: Transfer | None = None
    outbound = StackClient(ts, 5002)
    try:
        t0 = time.monotonic()
        time.sleep(1.0)  # the spoof is on
        inbound = Transfer(ts, port=5001, total=total, rate=1_000_000)  # kernel -> stack
        outbound.start()  # stack -> kernel
        while spoof.poll() is None:
            mac = arp_table(ts).get(KERNEL_IP, "-")
            seen[mac] = seen.get(mac, 0) + 1
            time.sleep(0.05)
        spoof_out, spoof_err = spoof.communicate(timeout=10)
        inbound.finish(timeout=60)
        outbound.thread.join(60)
        out, err = server.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        for p in (spoof, server):
            if p.poll() is None:
                p.kill()
                p.communicate()
        if inbound is not None:
            inbound.abort()
    assert spoof.returncode == 0, spoof_err.decode()[-1000:]
    d = delta(before, ts.stats("arp"))
    print(f"ARP spoof: {spoof_out.decode().strip()}; entry seen {seen}; stack->kernel "
          f"connected in {outbound.connect_s:.2f} s; {elapsed:.1f} s; arp {d}")
    assert server.returncode == 0, err.decode()[-1000:]
    assert outbound.error is None, repr(outbound.error)
    digest, sent = out.decode().split()
    assert outbound.received == int(sent) == total
    assert outbound.hash.hexdigest() == digest
    # the entry never pointed anywhere but at the real MAC
    assert all(not m.startswith(FORGED_PREFIX) for m in seen), seen
    assert arp_table(ts).get(KERNEL_IP) == real
    # every forged frame was refused and counted (none created or moved anything)
    assert d.get("update_refused", 0) >= SPOOF_SECONDS * SPOOF_RATE * 0.8, d
    assert d.get("moved", 0) == 0, d
    assert wait_for(lambda: ts.sp.tool("ping", "-c", "1", "-W", "1", KERNEL_IP,
                                       check=False).returncode == 0, 10)
