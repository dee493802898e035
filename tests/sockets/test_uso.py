"""UDP segmentation offload on the send side (USO, Linux's UDP_SEGMENT / GSO_UDP_L4):
a message-mode write (sendmmsg) whose records go to one destination with equal lengths
leaves as one UDP super-datagram when the TAP's kernel takes USO; the kernel in the
namespace cuts it and its sockets receive each datagram. Mixed sizes or destinations,
and an interface without the offload (``offload=0``), go one by one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio

from rmgr import libsocket
from stack.addr import pseudo_header_sum
from stack.csum import raw_sum
from stack.packet import GSO_UDP_L4, Buffer, TxMeta
from tests.conftest import needs_tun

from .conftest import Net, spawn, tap_net
from .test_door import in_stack
from .test_door_send import readline
from .test_inet6 import KERNEL
from .test_inet6 import net6 as net6  # noqa: F401 - the fixture

pytestmark = [needs_tun, pytest.mark.root]
PY = sys.executable

#: the kernel's receiver: binds ip:port for every port given, prints "ready", then one
#: JSON line [port, payload hex] per datagram and "timeout" once nothing came for a while
RECEIVER = """
import json, select, socket, sys
ip, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
socks = {}
for p in ports:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((ip, p))
    socks[s.fileno()] = (s, p)
print("ready", flush=True)
poll = select.poll()
for fd in socks:
    poll.register(fd, select.POLLIN)
while True:
    ev = poll.poll(1500)
    if not ev:
        print(json.dumps("timeout"), flush=True)
        break
    for fd, _ in ev:
        s, p = socks[fd]
        d = s.recv(65536)
        print(json.dumps([p, d.hex()]), flush=True)
"""


async def receiver(ns: Any, ip: str, *ports: int) -> subprocess.Popen[bytes]:
    proc = await spawn(["ip", "netns", "exec", ns.name, PY, "-c", RECEIVER, ip,
                        *map(str, ports)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert await readline(proc, timeout=10) == b"ready\n"
    return proc


async def received(proc: subprocess.Popen[bytes]) -> list[tuple[int, bytes]]:
    """Every datagram the receiver got, in order, until it timed out and exited."""
    out: list[tuple[int, bytes]] = []
    try:
        while True:
            line = await readline(proc, timeout=15)
            assert line, "the receiver exited"
            got = json.loads(line)
            if got == "timeout":
                return out
            out.append((got[0], bytes.fromhex(got[1])))
    finally:
        proc.kill()
        await trio.to_thread.run_sync(proc.wait)


def sendmmsg_client(family: int, port: int, dest: tuple[str, int],
                    datas: list[bytes]) -> Any:
    """A client for ``in_stack``: a datagram socket bound to ``port`` sends ``datas`` to
    ``dest`` in one sendmmsg; returns how many went."""
    def client() -> int:
        s = libsocket.socket(family, libsocket.SOCK_DGRAM)
        try:
            s.bind(("::" if family == libsocket.AF_INET6 else "0.0.0.0", port))
            return int(s.sendmmsg([(p, dest) for p in datas]))
        finally:
            s.close()
    return client


def payloads(n: int, size: int, last: int | None = None, tag: bytes = b"") -> list[bytes]:
    out = [(tag + b"%d:" % i).ljust(size, b"abcdefgh"[i % 8:i % 8 + 1]) for i in range(n)]
    if last is not None:
        out[-1] = out[-1][:last]
    return out


def capture(net: Any) -> list[tuple[list[bytes], TxMeta | None]]:
    """Record what the TAP driver is asked to send (frame buffers and their TxMeta)."""
    iface = net.st.interfaces["tap0"]
    seen: list[tuple[list[bytes], TxMeta | None]] = []
    transmit = iface.transmit

    def spy(bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        seen.append(([bytes(b) for b in bufs], meta))
        return bool(transmit(bufs, meta))

    iface.transmit = spy
    return seen


def linux_segments(frame: bytes, meta: TxMeta, v6: bool) -> list[tuple[bytes, bool]]:
    """Cut a GSO_UDP_L4 frame as Linux's __udp_gso_segment does, then complete each
    checksum as a device does (CHECKSUM_PARTIAL): (UDP datagram, checksum verifies)."""
    l4 = meta.csum_start
    ip = frame[14:l4]
    src, dst = (ip[8:24], ip[24:40]) if v6 else (ip[12:16], ip[16:20])
    uh = frame[l4:l4 + 8]
    body = frame[l4 + 8:]
    old_len, check = int.from_bytes(uh[4:6], "big"), int.from_bytes(uh[6:8], "big")
    assert meta.hdr_len == l4 + 8 and old_len == 8 + len(body)
    out = []
    for o in range(0, len(body), meta.gso_size):
        chunk = body[o:o + meta.gso_size]
        newlen = 8 + len(chunk)
        # check = csum16_add(csum16_sub(check, uh->len), newlen)
        c = (check + (~old_len & 0xFFFF) + newlen)
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        seg = bytearray(uh[:4] + newlen.to_bytes(2, "big") + c.to_bytes(2, "big") + chunk)
        s = raw_sum([seg])  # the field holds the pseudo sum: the device folds in the rest
        final = (~s & 0xFFFF) or 0xFFFF
        seg[6:8] = final.to_bytes(2, "big")
        a, b = int.from_bytes(src, "big"), int.from_bytes(dst, "big")
        if not v6:
            a, b = a | 0xFFFF << 32, b | 0xFFFF << 32
        ok = raw_sum([seg], pseudo_header_sum(a, b, 17, newlen)) == 0  # all ones, mod 0xFFFF
        out.append((bytes(seg), ok))
    return out


async def test_sendmmsg_of_equal_datagrams_is_one_uso_batch(net) -> None:  # type: ignore[no-untyped-def]
    udp = net.st.udp.counters
    assert "uso" in net.st.interfaces["tap0"].offloads
    rx = await receiver(net.ns, net.KERNEL_IP, 7990, 7991)
    seen = capture(net)
    dest, dest2 = (net.KERNEL_IP, 7990), (net.KERNEL_IP, 7991)
    ten = payloads(10, 64, tag=b"a")
    last_short = payloads(5, 300, last=17, tag=b"b")
    mixed = [b"c0" * 10, b"c1" * 20, b"c2" * 20, b"c3" * 20]  # 20, then a run of three 40s
    two_dest = [(b"d0".ljust(50, b"-"), dest), (b"d1".ljust(50, b"-"), dest2),
                (b"d2".ljust(50, b"-"), dest2)]

    def client() -> list[int]:
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 7992))
            return [s.sendmmsg([(p, dest) for p in ten]),
                    s.sendmmsg([(p, dest) for p in last_short]),
                    s.sendmmsg([(p, dest) for p in mixed]),
                    s.sendmmsg(two_dest)]
        finally:
            s.close()

    b0, s0, f0 = udp["uso_batches"], udp["uso_segments"], udp["uso_fallback_sizes"]
    assert await in_stack(net, client) == [10, 5, 4, 3]
    got = await received(rx)
    assert [d for p, d in got if p == 7990] == ten + last_short + mixed + [two_dest[0][0]]
    assert [d for p, d in got if p == 7991] == [two_dest[1][0], two_dest[2][0]]
    # ten, five (last shorter), the three 40-byte ones, the two to port 7991
    assert udp["uso_batches"] - b0 == 4
    assert udp["uso_segments"] - s0 == 10 + 5 + 3 + 2
    assert udp["uso_fallback_sizes"] == f0  # runs are cut where sizes change
    supers = [(f, m) for f, m in seen if m is not None and m.gso_type == GSO_UDP_L4]
    assert len(supers) == 4
    frame = b"".join(supers[0][0])
    meta = supers[0][1]
    assert meta is not None
    # Linux's semantics: gso_size the payload per datagram (no UDP header), hdr_len the
    # headers, the checksum partial at csum_start + 6
    assert (meta.gso_size, meta.hdr_len, meta.csum_start, meta.csum_offset,
            meta.needs_csum) == (64, 14 + 20 + 8, 14 + 20, 6, True)
    assert int.from_bytes(frame[16:18], "big") == 20 + 8 + 640  # IPv4 total length
    segs = linux_segments(frame, meta, v6=False)
    assert [s[8:] for s, _ok in segs] == ten
    assert all(ok for _s, ok in segs)
    segs = linux_segments(b"".join(supers[1][0]), supers[1][1], v6=False)  # type: ignore[arg-type]
    assert [s[8:] for s, _ok in segs] == last_short and all(ok for _s, ok in segs)


async def test_uso_falls_back_when_it_cannot(net) -> None:  # type: ignore[no-untyped-def]
    """Too big for the MTU, or the interface lost the offload: one by one, counted by
    reason; more than 64 (UDP_MAX_SEGMENTS): super-datagrams of 64. Everything arrives."""
    udp = net.st.udp.counters
    rx = await receiver(net.ns, net.KERNEL_IP, 7993)
    dest = (net.KERNEL_IP, 7993)
    big = payloads(3, 1600, tag=b"m")  # > 1500 - 28: each is IP-fragmented
    many = payloads(65, 8, tag=b"n")  # UDP_MAX_SEGMENTS is 64
    plain = payloads(4, 100, tag=b"p")
    iface = net.st.interfaces["tap0"]

    def client() -> list[int]:
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 7994))
            s.sendto(b"warm", dest)  # ARP first: its hold queue would drop the burst
            time.sleep(0.3)
            out = [s.sendmmsg([(p, dest) for p in big])]
            out.append(s.sendmmsg([(p, dest) for p in many]))
            iface.offloads.discard("uso")
            out.append(s.sendmmsg([(p, dest) for p in plain]))
            return out
        finally:
            s.close()

    c0 = {k: udp[k] for k in ("uso_fallback_mtu", "uso_split", "uso_fallback_no_offload",
                              "uso_batches", "uso_segments")}
    try:
        assert await in_stack(net, client) == [3, 65, 4]
    finally:
        iface.offloads.add("uso")
    got = await received(rx)
    assert [d for _p, d in got] == [b"warm"] + big + many + plain
    assert {k: udp[k] - v for k, v in c0.items()} == {
        "uso_fallback_mtu": 1, "uso_split": 1, "uso_fallback_no_offload": 1,
        "uso_batches": 1, "uso_segments": 64}  # the 65th alone


@pytest.fixture
async def net_nooffload(netns) -> AsyncIterator[Net]:  # type: ignore[no-untyped-def]
    """``net`` with the TAP opened ``offload=0``: no csum, TSO or USO."""
    async with tap_net(netns, ",offload=0") as n:
        yield n


async def test_without_offload_datagrams_go_one_by_one(net_nooffload) -> None:  # type: ignore[no-untyped-def]
    net = net_nooffload
    udp = net.st.udp.counters
    assert "uso" not in net.st.interfaces["tap0"].offloads
    rx = await receiver(net.ns, net.KERNEL_IP, 7995)
    seen = capture(net)
    dest = (net.KERNEL_IP, 7995)
    ten = payloads(10, 64, tag=b"q")

    client = sendmmsg_client(libsocket.AF_INET, 7996, dest, ten)

    f0 = udp["uso_fallback_no_offload"]
    assert await in_stack(net, client) == 10
    # the kernel verifies these checksums (no NEEDS_CSUM: a bad one would be dropped)
    assert [d for _p, d in await received(rx)] == ten
    assert udp["uso_fallback_no_offload"] - f0 == 1
    assert all(m is None for _f, m in seen)
    assert len([f for f, _m in seen if len(b"".join(f)) == 14 + 28 + 64]) == 10


async def test_ipv6_sendmmsg_is_one_uso_batch(net6) -> None:  # type: ignore[no-untyped-def]
    udp = net6.st.udp.counters
    rx = await receiver(net6.ns, KERNEL, 7997)
    seen = capture(net6)
    dest = (KERNEL, 7997)
    ten = payloads(10, 200, last=33, tag=b"six")

    client = sendmmsg_client(libsocket.AF_INET6, 7998, dest, ten)

    b0 = udp["uso_batches"]
    assert await in_stack(net6, client) == 10
    assert [d for _p, d in await received(rx)] == ten
    assert udp["uso_batches"] - b0 == 1
    supers = [(f, m) for f, m in seen if m is not None and m.gso_type == GSO_UDP_L4]
    assert len(supers) == 1
    meta = supers[0][1]
    assert meta is not None
    assert (meta.gso_size, meta.hdr_len, meta.csum_start) == (200, 14 + 40 + 8, 14 + 40)
    segs = linux_segments(b"".join(supers[0][0]), meta, v6=True)
    assert [s[8:] for s, _ok in segs] == ten and all(ok for _s, ok in segs)




@pytest.mark.parametrize("prefrag", [False, True])
async def test_output_hooks_see_super_datagram_or_its_datagrams(net, prefrag) -> None:  # type: ignore[no-untyped-def]
    """The "inet" out hooks see the super-datagram whole (as a TCP super-segment); with
    "inet_out_prefrag" hooks (IPsec's point) present, it is cut into datagrams before
    them, and "inet" sees those."""
    from stack.pfil import INET_OUT_PREFRAG, PFIL_OUT

    udp = net.st.udp.counters
    rx = await receiver(net.ns, net.KERNEL_IP, 7980)
    dest = (net.KERNEL_IP, 7980)
    six = payloads(6, 48, tag=b"h")
    heads = ["inet", INET_OUT_PREFRAG] if prefrag else ["inet"]
    seen: dict[str, list[int]] = {h: [] for h in heads}

    def hook(head: str) -> Any:
        def fn(bufs: Sequence[Buffer], iface: Any, direction: str) -> None:
            if b"".join(bytes(b) for b in bufs)[9] == 17:
                seen[head].append(sum(len(b) for b in bufs))
        return fn

    hooks = [net.st.pfil.add_hook(hook(h), h, PFIL_OUT) for h in heads]

    client = sendmmsg_client(libsocket.AF_INET, 7981, dest, six)

    b0 = udp["uso_batches"]
    try:
        assert await in_stack(net, client) == 6
    finally:
        for h in hooks:
            net.st.pfil.remove_hook(h)
    assert [d for _p, d in await received(rx)] == six
    assert udp["uso_batches"] - b0 == 1
    if prefrag:
        assert seen == {INET_OUT_PREFRAG: [28 + 48] * 6, "inet": [28 + 48] * 6}
    else:
        assert seen == {"inet": [20 + 8 + 6 * 48]}
