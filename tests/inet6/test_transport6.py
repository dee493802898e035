"""TCP, UDP and raw sockets over IPv6 with the Linux kernel as the peer, through devnp-tap
in a namespace the test creates: 20 MB each way (sha256), also under 2 % loss by
nftables ``numgen random`` in the kernel's namespace; TSO6 super-segments out and GRO
super-segments in; UDP both ways and a 4000-byte datagram from Linux reassembled; a raw
ICMPv6 socket (echo to the kernel, its reply with the checksum the stack computed);
link-local with a scope; dual-stack sockets (an IPv4 client of a listener on ``::``
seen as ``::ffff:a.b.c.d``, IPV6_V6ONLY refusing it, an AF_INET6 socket reaching an
IPv4 peer through a mapped address); port conflicts between the families; multicast
with IPV6_JOIN_GROUP (MLD on the wire). Every address lives in the test's namespace."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from stack.addr import AF_INET6, ScopedEndpoint, parse_addr
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import add6, kernel_ll, nsout, nsrun, run, stack_ll_usable

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "2001:db8:9::2", "2001:db8:9::1"
ME4, KERNEL4 = "10.9.6.2", "10.9.6.1"
PY = sys.executable
IPPROTO_IPV6 = 41
IPV6_V6ONLY = 26

AnyStack = Any


@asynccontextmanager
async def stack6(ns: NetNS, **kw: Any) -> AsyncIterator[AnyStack]:
    """A stack on tap0 in ``ns``: 2001:db8:9::2/64 and 10.9.6.2/24 (the kernel ::1 and .1),
    both past DAD; its link-local address usable too."""
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True,
                             **kw) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        await run("ip", "-n", ns.name, "link", "set", "tap0", "up")
        await run("ip", "-n", ns.name, "addr", "add", f"{KERNEL}/64", "dev", "tap0", "nodad")
        await run("ip", "-n", ns.name, "addr", "add", f"{KERNEL4}/24", "dev", "tap0")
        st.inet.add_address("tap0", f"{ME4}/24")
        await add6(st, "tap0", f"{ME}/64")
        await stack_ll_usable(st, "tap0")
        yield st


async def kpy(ns: NetNS, code: str, *args: str) -> str:
    r = await nsrun(ns, PY, "-c", code, *args, check=False)
    if r.returncode:
        raise AssertionError(f"kernel-side script failed: {r.stderr.decode()}")
    return r.stdout.decode()


async def recv_all(sock: Any) -> bytes:
    out = bytearray()
    while True:
        chunk = await sock.recv(1 << 20)
        if not chunk:
            return bytes(out)
        out += chunk


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


async def exchange(st: AnyStack, ns: NetNS, size: int, *, port: int = 5000,
                   host: str = ME, family: int = AF_INET6) -> None:
    """``size`` bytes kernel → stack and stack → kernel over TCP, checked by sha256
    (socat in the kernel's namespace is the client both times)."""
    with tempfile.TemporaryDirectory() as tmp:
        up, down = os.path.join(tmp, "up"), os.path.join(tmp, "down")
        data_up, data_down = random.randbytes(size), random.randbytes(size)
        with open(up, "wb") as f:
            f.write(data_up)
        lst = st.tcp.socket(family)
        lst.bind((host, port))
        lst.listen(8)
        got: dict[str, bytes] = {}

        async def server() -> None:
            s1, peer = await lst.accept()
            got["peer"] = str(peer)
            got["up"] = await recv_all(s1)
            s1.close()
            s2, _ = await lst.accept()
            await s2.send(data_down)
            s2.close()

        target = f"[{host}]" if ":" in host else host
        with trio.fail_after(180):
            async with trio.open_nursery() as n:
                n.start_soon(server)
                await nsrun(ns, "socat", "-u", f"FILE:{up}", f"TCP:{target}:{port}")
                await nsrun(ns, "socat", "-u", f"TCP:{target}:{port}", f"CREATE:{down}")
        with open(down, "rb") as fd:
            got["down"] = fd.read()
        lst.close()
    assert len(got["up"]) == size and sha(got["up"]) == sha(data_up)
    assert len(got["down"]) == size and sha(got["down"]) == sha(data_down)


def loss(ns: NetNS, percent: int) -> None:
    """Drop ``percent`` % of the TCP segments in each direction in the kernel's namespace
    (nftables ``numgen random``; the table goes with the namespace)."""
    rules = ("table inet iopkt_loss {\n"
             " chain input { type filter hook input priority 0;\n"
             f"  meta l4proto tcp numgen random mod 100 < {percent} drop\n }}\n"
             " chain output { type filter hook output priority 0;\n"
             f"  meta l4proto tcp numgen random mod 100 < {percent} drop\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True, timeout=30)


# -- TCP ---------------------------------------------------------------------------------
async def test_tcp6_20mb_each_way_tso6_gro(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        tap = st.interfaces["tap0"]
        assert "tso6" in tap.offloads and "csum" in tap.offloads
        rx_gso = tap.counters["rx_gso"]
        await exchange(st, netns6, 20 << 20)
        assert tap.counters["rx_gso"] > rx_gso  # the kernel's GRO/TSO6 super-segments in
        out = st.inet6.counters["out_packets"]
        assert out < (20 << 20) // 1400  # TSO6: far fewer datagrams than segments
        assert st.tcp.counters["drop_bad_checksum"] == 0


async def test_tcp6_20mb_each_way_under_loss(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        loss(netns6, 2)
        await exchange(st, netns6, 20 << 20, port=5001)
        c = st.tcp.counters
        assert c["rexmt_timeouts"] + c["fast_retransmits"] > 0  # losses were repaired


async def test_tcp6_no_offload_software_checksums(netns6: NetNS) -> None:
    """offload=0: every checksum and segment made in software, over the IPv6 pseudo
    header, and accepted by the kernel."""
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns6},offload=0")],
                             inet6=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        await run("ip", "-n", netns6.name, "link", "set", "tap0", "up")
        await run("ip", "-n", netns6.name, "addr", "add", f"{KERNEL}/64", "dev", "tap0",
                  "nodad")
        await add6(st, "tap0", f"{ME}/64")
        await exchange(st, netns6, 2 << 20, port=5002)
        assert st.tcp.counters["drop_bad_checksum"] == 0


CONNECT_ECHO = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"hello")
print(s.recv(100).decode(), s.getsockname()[0], flush=True)
"""


async def test_dual_stack_listener_takes_ipv4_as_mapped(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        lst = st.tcp.socket(AF_INET6)
        lst.bind(("::", 5003))
        lst.listen(4)
        assert lst.getsockopt(IPPROTO_IPV6, IPV6_V6ONLY) == 0
        for client in (KERNEL4, KERNEL):
            async with trio.open_nursery() as n:
                result: list[str] = []

                async def k(host: str, out: list[str]) -> None:
                    out.append(await kpy(netns6, CONNECT_ECHO, host, "5003"))
                n.start_soon(k, ME4 if client == KERNEL4 else ME, result)
                conn, peer = await lst.accept()
                assert await conn.recv(100) == b"hello"
                await conn.send(b"world")
                assert peer.addr == parse_addr(client)
                assert conn.getsockname().addr == parse_addr(ME4 if client == KERNEL4 else ME)
            assert result[0].split() == ["world", client]
            conn.close()
        # the socket door reports an IPv4 peer of an AF_INET6 socket as ::ffff:a.b.c.d
        from rmgr.libsocket import abi
        ln, field = abi.encode_sockaddr(peer._replace(addr=parse_addr(KERNEL4)), AF_INET6)
        assert ln == 28 and abi.unpack_sockaddr(field)[0] == f"::ffff:{KERNEL4}"
        lst.close()

        # IPV6_V6ONLY: the same listener takes no IPv4, and 0.0.0.0 may share the port
        only6 = st.tcp.socket(AF_INET6)
        only6.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 1)
        only6.bind(("::", 5004))
        only6.listen(4)
        v4 = st.tcp.socket()
        v4.bind(("0.0.0.0", 5004))  # no conflict with a V6ONLY "::"
        r = await nsrun(netns6, "socat", "-u", "OPEN:/dev/null", f"TCP:{ME4}:5004",
                        check=False)
        assert r.returncode != 0 and b"refused" in r.stderr.lower()
        # ... and a dual-stack "::" conflicts with an IPv4 wildcard on its port
        dual = st.tcp.socket(AF_INET6)
        dual.bind(("::", 5005))
        clash = st.tcp.socket()
        with pytest.raises(OSError) as exc:
            clash.bind(("0.0.0.0", 5005))
        assert exc.value.errno == errno.EADDRINUSE
        for s in (only6, v4, dual, clash):
            s.close()


async def test_ipv6_socket_connects_to_mapped_ipv4_and_link_local(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        kll = await kernel_ll(netns6, "tap0")
        srv = ("import socket,sys\n"
               "s=socket.socket(socket.AF_INET6); s.setsockopt(41,26,0)\n"
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "s.bind(('::', 7000)); s.listen(4); print('up', flush=True)\n"
               "for _ in range(2):\n"
               "  c,a=s.accept(); c.sendall(repr(a[0]).encode()); c.close()\n")
        p = netns6.popen(PY, "-c", srv, stdout=subprocess.PIPE, text=True)  # type: ignore[attr-defined]
        try:
            assert p.stdout.readline().strip() == "up"
            # an AF_INET6 socket to ::ffff:10.9.6.1 goes out over IPv4
            s = st.tcp.socket(AF_INET6)
            with trio.fail_after(10):
                await s.connect((f"::ffff:{KERNEL4}", 7000))
                assert (await recv_all(s)).decode().strip("'") == f"::ffff:{ME4}"
            assert s.getsockname().addr == parse_addr(ME4)
            s.close()
            # link-local with a scope id: sends on that interface, from its address
            idx = st.interfaces["tap0"].index
            s = st.tcp.socket(AF_INET6)
            with trio.fail_after(10):
                await s.connect((kll, 7000, 0, idx))
                peer_saw = (await recv_all(s)).decode().strip("'")
            name = s.getsockname()
            assert isinstance(name, ScopedEndpoint) and name.scope_id == idx
            assert parse_addr(peer_saw.split("%")[0]) == name.addr  # our link-local
            s.close()
        finally:
            p.kill()
            p.communicate()


# -- UDP ---------------------------------------------------------------------------------
UDP_KERNEL = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 6001)); s.settimeout(10)
print("up", flush=True)
data, a = s.recvfrom(70000)
s.sendto(data[::-1], a)
big = bytes(range(256)) * 16  # 4096 bytes: fragmented by the kernel
s.sendto(big[:4000], (sys.argv[1], 6002))
"""


async def test_udp6_both_ways_and_reassembly(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        u = st.udp.socket(AF_INET6)
        u.bind(("::", 6002))
        p = netns6.popen(PY, "-c", UDP_KERNEL, ME, stdout=subprocess.PIPE,  # type: ignore[attr-defined]
                         stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "up"
            with trio.fail_after(10):
                await u.sendto(b"abc" * 100, (KERNEL, 6001))
                data, frm = await u.recvfrom(70000)
                assert data == (b"abc" * 100)[::-1] and frm.addr == parse_addr(KERNEL)
                data, frm = await u.recvfrom(70000)
            assert data == (bytes(range(256)) * 16)[:4000]
            assert st.inet6.reass.counters["reassembled"] >= 1  # it came in fragments
        finally:
            p.kill()
            p.communicate()
        u.close()


async def test_udp6_zero_checksum_dropped_and_v6only(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        u = st.udp.socket(AF_INET6)
        u.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 1)
        u.bind(("::", 6003))
        with pytest.raises(OSError) as exc:
            await u.sendto(b"x", (KERNEL4, 9))
        assert exc.value.errno == errno.EAFNOSUPPORT
        d = st.udp.socket()  # an IPv4 socket shares the port with a V6ONLY one
        d.bind(("0.0.0.0", 6003))
        await kpy(netns6, "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                  f"s.sendto(b'four', ('{ME4}', 6003))")
        await kpy(netns6, "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM);"
                  f"s.sendto(b'six', ('{ME}', 6003))")
        with trio.fail_after(5):
            assert (await d.recvfrom(100))[0] == b"four"
            assert (await u.recvfrom(100))[0] == b"six"
        assert not u.queue and not d.queue
        u.close()
        d.close()


# -- raw ICMPv6 ---------------------------------------------------------------------------
async def test_raw_icmp6_echo(netns6: NetNS) -> None:
    async with stack6(netns6) as st:
        r = st.raw.socket(58, AF_INET6)
        ident = 0x4242
        msg = struct.pack("!BBHHH", 128, 0, 0, ident, 7) + b"ping6-payload"
        with trio.fail_after(5):
            await r.sendto(msg, (KERNEL, 0))
            while True:
                data, frm = await r.recvfrom(2000)
                if data[0] == 129:
                    break
        # IPv6 raw sockets get the ICMPv6 message without the IPv6 header (RFC 3542)
        assert frm.addr == parse_addr(KERNEL)
        t, code, _csum, rid, seq = struct.unpack("!BBHHH", data[:8])
        assert (t, code, rid, seq) == (129, 0, ident, 7) and data[8:] == b"ping6-payload"
        # the kernel accepted our checksum: it answered; and an IPv4 raw socket saw none
        r4 = st.raw.socket(1)
        assert not r4.queue
        r.close()
        r4.close()


# -- multicast ------------------------------------------------------------------------------
async def test_udp6_multicast_join(netns6: NetNS) -> None:
    group = "ff15::1:2"
    async with stack6(netns6) as st:
        u = st.udp.socket(AF_INET6)
        u.bind(("::", 6010))
        idx = st.interfaces["tap0"].index
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@i", idx)
        u.setsockopt(IPPROTO_IPV6, 20, mreq)  # IPV6_JOIN_GROUP
        assert parse_addr(group) in st.interfaces["tap0"].proto["inet6"].groups
        send = ("import socket, struct; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM);"
                "s.setsockopt(41, 17, socket.if_nametoindex('tap0'));"
                f"s.sendto(b'to-group', ('{group}', 6010))")
        await kpy(netns6, send)
        with trio.fail_after(5):
            data, frm = await u.recvfrom(100)
        assert data == b"to-group"
        assert frm.addr == parse_addr(await kernel_ll(netns6, "tap0")) or frm.addr == \
            parse_addr(KERNEL)
        u.setsockopt(IPPROTO_IPV6, 21, mreq)  # IPV6_LEAVE_GROUP
        assert parse_addr(group) not in st.interfaces["tap0"].proto["inet6"].groups
        out = await nsout(netns6, "ip", "-6", "maddr", "show", "dev", "tap0")
        assert "ff15::1:2" not in out  # (the kernel's own list: it never joined)
        u.close()


async def test_udp6_multicast_loop_and_hops(netns6: NetNS) -> None:
    """IPV6_MULTICAST_LOOP delivers our own datagram to a member here (and off, not);
    IPV6_MULTICAST_HOPS is the hop limit the kernel sees; IPV6_MULTICAST_IF picks the
    interface."""
    group = "ff15::77"
    async with stack6(netns6) as st:
        idx = st.interfaces["tap0"].index
        member = st.udp.socket(AF_INET6)
        member.bind(("::", 6020))
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@i", idx)
        member.setsockopt(IPPROTO_IPV6, 20, mreq)
        sender = st.udp.socket(AF_INET6)
        sender.setsockopt(IPPROTO_IPV6, 17, idx)   # IPV6_MULTICAST_IF
        sender.setsockopt(IPPROTO_IPV6, 18, 7)     # IPV6_MULTICAST_HOPS
        assert sender.getsockopt(IPPROTO_IPV6, 19) == 1  # loop on by default
        recv = ("import socket, struct; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM);"
                "s.bind(('::', 6020)); s.settimeout(5);"
                f"s.setsockopt(41, 20, socket.inet_pton(socket.AF_INET6, '{group}') +"
                " struct.pack('@i', socket.if_nametoindex('tap0')));"
                "s.setsockopt(41, 51, 1); print('up', flush=True);"
                "d, anc, f, a = s.recvmsg(100, 100);"
                "print(d.decode(), struct.unpack('@i', anc[0][2])[0], flush=True)")
        p = netns6.popen(PY, "-c", recv, stdout=subprocess.PIPE,  # type: ignore[attr-defined]
                         stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "up"
            await trio.sleep(0.2)
            with trio.fail_after(5):
                await sender.sendto(b"loop-on", (group, 6020))
                data, _ = await member.recvfrom(100)
            assert data == b"loop-on"
            out = await trio.to_thread.run_sync(p.communicate, None, 10)  # type: ignore[arg-type]
            assert out[0].split() == ["loop-on", "7"], out  # the kernel got it, hop limit 7
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        sender.setsockopt(IPPROTO_IPV6, 19, 0)
        await sender.sendto(b"loop-off", (group, 6020))
        await trio.sleep(0.3)
        with pytest.raises(BlockingIOError):
            member.recvfrom_nowait(100)
        member.close()
        assert parse_addr(group) not in st.interfaces["tap0"].proto["inet6"].groups
        sender.close()
