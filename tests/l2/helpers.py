"""Helpers shared by the layer-2 tests: frames through AF_PACKET sockets inside a test's
namespace, run as a child process (``ip netns exec``) so the test process never leaves
its own namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import trio

from stack.l2.iface import Interface
from stack.packet import Packet

PY = sys.executable

#: a child that sends frames (hex) on IF and collects frames of an EtherType for a while
_PEER = textwrap.dedent("""
    import json, socket, sys, time
    ifname, etype, send, wait, want = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(etype))
    s.bind((ifname, 0))
    s.settimeout(0.05)
    got = []
    for h in send:
        s.send(bytes.fromhex(h))
    end = time.monotonic() + wait
    while time.monotonic() < end and len(got) < want:
        try:
            data, addr = s.recvfrom(70000)
        except socket.timeout:
            continue
        if addr[2] != socket.PACKET_OUTGOING:
            got.append(data.hex())
    print(json.dumps(got))
""")


async def peer_exchange(netns: str, ifname: str, etype: int, send: list[bytes],
                        wait: float = 2.0, want: int = 1) -> list[bytes]:
    """In ``netns``: send ``send`` frames on ``ifname``, return frames of ``etype`` seen
    within ``wait`` seconds (at most ``want``)."""
    cmd = ["ip", "netns", "exec", netns, PY, "-c", _PEER, ifname, str(etype),
           json.dumps([f.hex() for f in send]), str(wait), str(want)]
    res = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.decode())
    return [bytes.fromhex(h) for h in json.loads(res.stdout)]


async def nsrun(netns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(["ip", "netns", "exec", netns, *cmd], capture_stdout=True,
                                  capture_stderr=True, check=check)


def mac_of(netns: str, ifname: str) -> bytes:
    from stack.netns import LinkControl

    ctl = LinkControl(netns)
    try:
        return ctl.get_mac(ifname)
    finally:
        ctl.close()


class Recorder:
    """Wraps ``iface.deliver`` to keep every received Packet (test-only)."""

    def __init__(self, iface: Interface) -> None:
        self.packets: list[Packet] = []
        self.event = trio.Event()
        orig = iface.deliver

        def deliver(pkt: Packet) -> None:
            self.packets.append(pkt)
            self.event.set()
            orig(pkt)

        iface.deliver = deliver  # type: ignore[method-assign]

    async def wait_for(self, pred, timeout: float = 3.0) -> Packet:  # type: ignore[no-untyped-def]
        with trio.fail_after(timeout):
            while True:
                for p in self.packets:
                    if pred(p):
                        return p
                self.event = trio.Event()
                await self.event.wait()
