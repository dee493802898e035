"""IPv6 input's address checks on an in-memory link: ::1 or a mapped IPv4 address on
the wire, a multicast source, a group the interface did not join, a tentative address
(it takes nothing), an unspecified destination: each dropped and counted, nothing
sent back; the same echo to our address is answered."""

from __future__ import annotations

import trio

from stack.addr import Prefix, parse_addr
from stack.inet6.wire import icmp6 as w6
from stack.inet6.wire.ipv6 import pack_header
from stack.l2.iface import IFF_UP
from tests.conftest import running_stack
from tests.inet.conftest import FakeIface

MAC = bytes.fromhex("020000000a01")
PEER = bytes.fromhex("02000000aa02")
ME = parse_addr("2001:db8:1::2")
THEM = parse_addr("2001:db8:1::1")


def echo(src: int, dst: int, dst_mac: bytes = MAC) -> bytes:
    body = b"abcdefgh"
    hdr = w6.build(w6.ECHO_REQUEST, 0, 0x00010001, (body,), src, dst)
    ip = pack_header(0, 0, len(hdr) + len(body), 58, 64, src, dst)
    return dst_mac + PEER + b"\x86\xdd" + ip + hdr + body


def _is_mld_report(frame: bytes) -> bool:
    """An MLDv2 report: IPv6, a hop-by-hop header (router alert), ICMPv6 type 143."""
    return frame[12:14] == b"\x86\xdd" and frame[20] == 0 and len(frame) > 62 \
        and frame[54] == 58 and frame[62] == 143


async def test_bad_addresses_dropped_and_counted() -> None:
    async with running_stack(inet6=True) as st:
        st.sysctl.set("net.inet6.ip6.dad_count", 0)
        f = FakeIface("fake0", MAC)
        st.attach_interface(f)
        f.set_flags(IFF_UP)
        st.inet6.manage.add_address("fake0", Prefix.parse("2001:db8:1::2/64"))
        st.inet6.manage.ndp_set(THEM, PEER, ifname="fake0")
        await trio.sleep(0.1)
        f.take()
        c = st.inet6.counters
        cases = [
            (echo(THEM, 1), "drop_loopback_on_wire"),
            (echo(1, ME), "drop_loopback_on_wire"),
            (echo(parse_addr("10.0.0.1"), ME), "drop_bad_source"),
            (echo(parse_addr("ff02::1"), ME), "drop_bad_source"),
            # the link takes 33:33:ff:00:00:02 (our solicited-node group's MAC); this
            # site-scope group shares it but was never joined: IPv6 drops it
            (echo(THEM, parse_addr("ff05::1:ff00:2"), b"\x33\x33\xff\x00\x00\x02"),
             "drop_multicast_not_joined"),
            (echo(THEM, 0), "drop_bad_dest"),
        ]
        for frame, counter in cases:
            before = c[counter]
            f.inject(frame)
            await trio.sleep(0.01)
            assert c[counter] == before + 1, counter
        # nothing answered any of them (the MLD report repeating our solicited-node
        # join, up to 1 s after it, may go out meanwhile: RFC 3810 §6.1)
        assert [x for x in f.take() if not _is_mld_report(x)] == []
        # a tentative address takes nothing (RFC 4862 §5.4)
        st.sysctl.set("net.inet6.ip6.dad_count", 5)
        st.inet6.manage.add_address("fake0", Prefix.parse("2001:db8:1::9/64"))
        before = c["drop_tentative_dest"]
        f.inject(echo(THEM, parse_addr("2001:db8:1::9")))
        await trio.sleep(0.01)
        assert c["drop_tentative_dest"] == before + 1
        assert not [x for x in f.take() if x[12:14] == b"\x86\xdd" and x[54] == 129]
        # our usable address answers
        f.inject(echo(THEM, ME))
        await trio.sleep(0.01)
        replies = [x for x in f.take() if x[12:14] == b"\x86\xdd" and x[54] == 129]
        assert len(replies) == 1 and replies[0][:6] == PEER
