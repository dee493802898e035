"""IPv6 over layer 2's virtual interfaces: the stack's bridge between two kernel
namespaces carries their ND and ping6 (multicast flooded, unicast learned) while the
bridge interface has addresses of its own; a VLAN interface gets a link-local address,
answers tagged ICMPv6 and tags what it sends (this kernel has no 8021q module, so the
peer is a raw socket in the namespace)."""

from __future__ import annotations

import textwrap

import pytest

from stack.addr import Prefix, parse_addr
from stack.l2.bridge import create_bridge
from stack.l2.iface import IFF_UP
from stack.l2.vlan import create_vlan
from tests.conftest import needs_tun, running_stack
from tests.inet6.kit6 import run
from tests.l2.helpers import PY, mac_of

pytestmark = [needs_tun, pytest.mark.root]


async def test_bridge_carries_ipv6_and_has_its_own_addresses(netns_factory) -> None:
    a, b = netns_factory("v6b1", ipv6=True), netns_factory("v6b2", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={a}"),
                                      ("tap", f"name=tap1,netns={b}")], inet6=True) as st:
        t0, t1 = st.interfaces["tap0"], st.interfaces["tap1"]
        br = create_bridge(st)
        br.add_member(t0)
        br.add_member(t1)
        for i in (t0, t1, br):
            i.set_flags(IFF_UP)
        for ns, dev, addr in ((a, "tap0", "2001:db8:77::1"), (b, "tap1", "2001:db8:77::2")):
            await run("ip", "-n", ns.name, "link", "set", dev, "up")
            await run("ip", "-n", ns.name, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        st.inet6.manage.add_address(br.name, Prefix.parse("2001:db8:77::254/64"))
        await st.inet6.manage.wait_usable(br.name, parse_addr("2001:db8:77::254"))
        # namespace to namespace through the bridge: ND's multicast is flooded
        r = await run("ip", "netns", "exec", a.name, "ping", "-6", "-c", "3", "-i", "0.2",
                      "-W", "2", "2001:db8:77::2", check=False)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert br.counters["flooded_multicast"] >= 1 and br.counters["forwarded"] >= 3
        # and to the bridge's own address from both sides
        for ns in (a, b):
            r = await run("ip", "netns", "exec", ns.name, "ping", "-6", "-c", "2", "-i", "0.2",
                          "-W", "2", "2001:db8:77::254", check=False)
            assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        rtt = await st.inet6.manage.ping(parse_addr("2001:db8:77::2"), timeout=2)
        assert 0 < rtt < 1
        # the members themselves have no IPv6 of their own: the bridge does
        assert not [x for x in st.inet6.manage.addresses("tap0") if not x.addr >> 118 == 0x3FA]


#: in the namespace: send a tagged echo request, print the first tagged ICMPv6 echo
#: reply seen (its VLAN id from PACKET_AUXDATA or the tag itself) as "vid hlim data"
_PEER = textwrap.dedent("""
    import socket, struct, sys, time
    frame = bytes.fromhex(sys.argv[1])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("tap0", 0))
    s.setsockopt(263, 8, 1)  # PACKET_AUXDATA
    s.settimeout(0.05)
    s.send(frame)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            data, anc, fl, addr = s.recvmsg(4096, socket.CMSG_SPACE(20))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vid = None
        for lvl, typ, d in anc:
            st, _l, _s, _m, _n, tci, _tp = struct.unpack("IIIHHHH", d[:20])
            if st & 0x10:
                vid = tci & 0xFFF
        if data[12:14] == b"\\x81\\x00":
            vid, data = int.from_bytes(data[14:16], "big") & 0xFFF, data[:12] + data[16:]
        if data[12:14] == b"\\x86\\xdd" and data[14 + 6] == 58 and data[54] == 129:
            print(vid, data[14 + 7], data[62:70].hex())
            break
""")


async def test_vlan_interface_speaks_ipv6_tagged(netns_factory) -> None:
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    ns = netns_factory("v6vl", ipv6=True)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")], inet6=True) as st:
        t0 = st.interfaces["tap0"]
        vif = create_vlan(st, "vlan0")
        vif.configure(t0, 6)
        t0.set_flags(IFF_UP)
        vif.set_flags(IFF_UP)
        await run("ip", "-n", ns.name, "link", "set", "tap0", "up")
        st.inet6.manage.add_address("vlan0", Prefix.parse("2001:db8:6::2/64"))
        await st.inet6.manage.wait_usable("vlan0", parse_addr("2001:db8:6::2"))
        lls = [x for x in st.inet6.manage.addresses("vlan0") if x.addr >> 118 == 0x3FA]
        assert lls  # auto_linklocal on the VLAN interface too, usable once DAD passed
        await st.inet6.manage.wait_usable("vlan0", lls[0].addr)
        kmac = mac_of(ns.name, "tap0")
        st.inet6.manage.ndp_set(parse_addr("2001:db8:6::1"), kmac, ifname="vlan0")
        req = (Ether(src=kmac.hex(":"), dst=vif.mac.hex(":")) / Dot1Q(vlan=6)
               / IPv6(src="2001:db8:6::1", dst="2001:db8:6::2", hlim=64)
               / ICMPv6EchoRequest(id=7, seq=1, data=b"vlan6!!!"))
        r = await run("ip", "netns", "exec", ns.name, PY, "-c", _PEER, bytes(req).hex())
        vid, hlim, data = r.stdout.decode().split()
        assert vid == "6" and int(hlim) == 64 and bytes.fromhex(data) == b"vlan6!!!"
        assert vif.counters["ipackets"] >= 1 and vif.counters["opackets"] >= 1
