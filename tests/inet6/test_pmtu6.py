"""Path MTU discovery (RFC 8201) through a Linux router: the stack (tap0, 1500) — router
R — a 1280-byte link — host F. A datagram too big for the 1280 link draws a Packet Too
Big from R; the stack's path MTU toward F shrinks to 1280 (``stack.inet6.pmtu``,
``route_mtu``) while other destinations keep 1500, and large echoes, UDP datagrams and
a TCP transfer (F advertising an MSS too big for the path) then complete."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile
from typing import Any

import pytest
import trio

from stack.addr import AF_INET6, Prefix, parse_addr
from stack.core import Stack
from stack.inet6.icmp6 import Icmp6Error
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet6.kit6 import add6, link_up, nsrun, process, run, until, veth

pytestmark = [needs_tun, pytest.mark.root]

ME, R_NEAR, R_FAR, FAR = "2001:db8:50::2", "2001:db8:50::1", "2001:db8:51::1", "2001:db8:51::5"

UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 7001))
print("up", flush=True)
while True:
    data, a = s.recvfrom(70000)
    s.sendto(data, a)
"""


async def path(st: Stack, r: NetNS, f: NetNS) -> None:
    await link_up(st, r, "tap0")
    await nsrun(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    await run("ip", "-n", r.name, "addr", "add", f"{R_NEAR}/64", "dev", "tap0", "nodad")
    await veth(r, "rf", f, "eth0")
    for ns, ifname in ((r, "rf"), (f, "eth0")):
        await run("ip", "-n", ns.name, "link", "set", ifname, "mtu", "1280")
    await run("ip", "-n", r.name, "addr", "add", f"{R_FAR}/64", "dev", "rf", "nodad")
    await run("ip", "-n", f.name, "addr", "add", f"{FAR}/64", "dev", "eth0", "nodad")
    # F advertises an MSS of 1440 (as if its link were 1500): only PMTU discovery can
    # tell the stack that the path is narrower
    await run("ip", "-n", f.name, "-6", "route", "add", "default", "via", R_FAR,
              "advmss", "1440")
    m = st.inet6.manage
    m.set_iface_flag("tap0", "accept_rtadv", False)
    await add6(st, "tap0", f"{ME}/64")
    m.route_add(Prefix.parse("::/0"), parse_addr(R_NEAR))


async def test_packet_too_big_shrinks_path_mtu_ping_udp(netns6: NetNS,
                                                        netns_factory: Any) -> None:
    r = netns6
    f = netns_factory("f6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={r}")], inet6=True) as st:
        await path(st, r, f)
        ip6 = st.inet6
        far = parse_addr(FAR)
        assert ip6.route_mtu(far) == 1500
        await ip6.manage.ping(far, timeout=2)
        # 1448 bytes fit our link, not R's next one
        with pytest.raises(Icmp6Error) as ei:
            await ip6.manage.ping_detail(far, size=1400, timeout=2)
        assert ei.value.icmp_type == 2 and ei.value.extra == 1280
        assert f"From {R_NEAR}" in str(ei.value)
        assert ip6.counters["pmtu_learned"] == 1
        assert ip6.pmtu[far][0] == 1280
        assert ip6.route_mtu(far) == 1280
        assert ip6.route_mtu(parse_addr(R_NEAR)) == 1500  # per destination
        assert ip6.manage.route_get(far)["mtu"] == "1280"
        frags = ip6.counters["out_fragmented"]
        d = await ip6.manage.ping_detail(far, size=1400, timeout=2)
        assert d.size == 1400
        assert ip6.counters["out_fragmented"] == frags + 1
        # a smaller PTB lowers it no further than 1280 (RFC 8200 §5); a larger one is
        # ignored
        ip6.learn_pmtu(far, 1400)
        assert ip6.pmtu[far][0] == 1280 and ip6.counters["pmtu_ignored"] == 1
        # UDP: a 1400-byte datagram and a 3000-byte one, echoed by F
        p = f.popen(sys.executable, "-c", UDP_ECHO, stdout=subprocess.PIPE)
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == b"up"
            u = st.udp.socket(AF_INET6)
            u.bind(("::", 0))
            for size in (1400, 3000):
                data = random.randbytes(size)
                with trio.fail_after(5):
                    await u.sendto(data, (FAR, 7001))
                    got, frm = await u.recvfrom(70000)
                assert got == data and frm.addr == far
            u.close()
        finally:
            p.kill()
            p.wait()


async def test_udp_first_datagram_learns_path_mtu(netns6: NetNS, netns_factory: Any) -> None:
    """No echo first: the first UDP datagram itself meets the narrow link; the stack
    learns the path MTU from R's Packet Too Big and the next send gets through."""
    r = netns6
    f = netns_factory("f6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={r}")], inet6=True) as st:
        await path(st, r, f)
        ip6 = st.inet6
        far = parse_addr(FAR)
        p = f.popen(sys.executable, "-c", UDP_ECHO, stdout=subprocess.PIPE)
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == b"up"
            u = st.udp.socket(AF_INET6)
            u.bind(("::", 0))
            data = random.randbytes(1400)
            await u.sendto(data, (FAR, 7001))
            await until(lambda: far in ip6.pmtu, 3, "the Packet Too Big")
            assert ip6.pmtu[far][0] == 1280
            with trio.fail_after(5):
                await u.sendto(data, (FAR, 7001))
                got, _ = await u.recvfrom(70000)
            assert got == data
            u.close()
        finally:
            p.kill()
            p.wait()


async def test_tcp_transfer_over_narrow_path(netns6: NetNS, netns_factory: Any) -> None:
    r = netns6
    f = netns_factory("f6", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={r}")], inet6=True) as st:
        await path(st, r, f)
        far = parse_addr(FAR)
        data = random.randbytes(2 << 20)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "got")
            async with process(f, "socat", "-u", "TCP6-LISTEN:7002,reuseaddr",
                               f"CREATE:{out}") as sc:
                await trio.sleep(0.3)
                s = st.tcp.socket(AF_INET6)
                with trio.fail_after(60):
                    for _ in range(20):
                        try:
                            await s.connect((FAR, 7002))
                            break
                        except ConnectionRefusedError:
                            s.close()
                            s = st.tcp.socket(AF_INET6)
                            await trio.sleep(0.1)
                    await s.send(data)
                    s.close()
                    while sc.poll() is None:
                        await trio.sleep(0.05)
            with open(out, "rb") as fd:
                got = fd.read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
        assert st.inet6.pmtu[far][0] == 1280
        assert st.inet6.counters["pmtu_learned"] >= 1
