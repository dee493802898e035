"""The DHCPv6 client in a stack of this process: its requests taken from a fake
interface's wire, replies crafted here and handed to the service (the path through
IPv6 and UDP is test_dhcp6_dnsmasq.py's); every bad one refused and counted."""

from __future__ import annotations

import struct

import pytest
import trio

from stack.addr import parse_addr
from stack.dhcp import wire6 as w6
from stack.inet6.ifaddr import is_link_local
from stack.services import DHCP, RESOLVER
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, FakeIface

SERVER_DUID = w6.duid_ll(bytes.fromhex("02000000aa01"))
OFFERED = bytes(parse_addr("2001:db8:d::123").to_bytes(16, "big"))
DNS6 = parse_addr("2001:db8:d::53").to_bytes(16, "big")


def sent6(iface: FakeIface) -> list[tuple[bytes, int, int, bytes]]:
    """(IPv6 source, type, xid, the whole DHCPv6 message) of each request sent."""
    out = []
    for f in iface.take():
        if f[12:14] == b"\x86\xdd" and f[20] == 17 and f[56:58] == b"\x02\x23":
            msg = f[62:]
            assert f[38:54] == bytes.fromhex("ff020000000000000000000000010002")
            out.append((f[22:38], msg[0], int.from_bytes(msg[1:4], "big"), msg))
    return out


def opts(msg: bytes) -> dict[int, bytes]:
    out, off = {}, 4
    while off < len(msg):
        code, n = struct.unpack_from("!HH", msg, off)
        out[code] = msg[off + 4:off + 4 + n]
        off += 4 + n
    return out


def reply(kind: int, xid: int, client: bytes, *, server: bytes = SERVER_DUID,
          ia: bool = True, t1: int = 0, t2: int = 0, pref: int = 100, valid: int = 120,
          extra: list[bytes] | None = None) -> bytes:
    o = [w6.option(w6.OPT_CLIENTID, client), w6.option(w6.OPT_SERVERID, server),
         w6.option(w6.OPT_DNS_SERVERS, DNS6),
         w6.option(w6.OPT_DOMAIN_LIST, w6.encode_names(["lan", "corp.lan"]))]
    if ia:
        o.append(w6.ia_na(1, t1, t2, [w6.IaAddr(OFFERED, pref, valid)]))
    return w6.build(kind, xid, o + (extra or []))


async def next_sent(iface: FakeIface, kind: int, timeout: float = 5
                    ) -> tuple[bytes, int, int, bytes]:
    with trio.fail_after(timeout):
        while True:
            for s in sent6(iface):
                if s[1] == kind:
                    return s
            await trio.sleep(0.01)


@pytest.mark.parametrize("llt", [0, 1])
async def test_bad_replies_refused_then_bound_renewed_released(llt: int) -> None:
    async with running_stack(inet6=True) as st:
        st.sysctl.set("net.inet6.ip6.dad_count", "0")
        st.sysctl.set("net.inet6.dhcp6.timeout_pct", "20")
        st.sysctl.set("net.inet6.dhcp6.duid_llt", str(llt))
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        dhcp = st.services.require(DHCP)
        client = dhcp.v6.start("fake0")
        src, _, xid, sol = await next_sent(f0, w6.SOLICIT)
        assert is_link_local(int.from_bytes(src, "big"))
        o = opts(sol)
        duid = o[w6.OPT_CLIENTID]
        assert duid[:2] == (b"\x00\x01" if llt else b"\x00\x03") and duid.endswith(MAC0)
        assert len(o[w6.OPT_ELAPSED_TIME]) == 2 and w6.OPT_IA_NA in o
        good = reply(w6.ADVERTISE, xid, duid)
        bad = {
            "v6_drop_bad_xid": reply(w6.ADVERTISE, xid ^ 1, duid),
            "v6_drop_bad_client_id": reply(w6.ADVERTISE, xid, w6.duid_ll(b"\x02" * 6)),
            "v6_drop_unexpected": reply(w6.REPLY, xid, duid),
            "v6_drop_no_server_id": w6.build(w6.ADVERTISE, xid,
                                             [w6.option(w6.OPT_CLIENTID, duid)]),
            "v6_drop_truncated": good[:3],
            "v6_drop_bad_type": bytes([w6.SOLICIT]) + good[1:],
            # the last option claiming more octets than the message holds
            "v6_drop_option_overrun": good + b"\x00\x17\x04\x00" + b"\0" * 16,
            "v6_drop_bad_option": good + w6.option(w6.OPT_ELAPSED_TIME, b"\0\0\0"),
            # a label running past the list
            "v6_drop_bad_domain": good + w6.option(w6.OPT_DOMAIN_LIST, b"\x03lan\x00\x09corp"),
            "v6_drop_too_many_options": good + w6.option(99, b"") * 300,
        }
        for blob in bad.values():
            dhcp.v6.dispatch(blob)
        await trio.sleep(0.05)
        assert client.state == "soliciting"
        c = dhcp.counters
        for name in bad:
            assert c[name] == 1, (name, {k: v for k, v in c.items() if v})
        dhcp.v6.dispatch(good)
        _, _, rxid, req = await next_sent(f0, w6.REQUEST)
        ro = opts(req)
        assert ro[w6.OPT_SERVERID] == SERVER_DUID and OFFERED in ro[w6.OPT_IA_NA]
        # a reply from another server than the one asked is not taken
        dhcp.v6.dispatch(reply(w6.REPLY, rxid, duid, server=w6.duid_ll(b"\x02" * 6)))
        await trio.sleep(0.05)
        assert c["v6_drop_wrong_server"] == 1 and client.state == "requesting"
        dhcp.v6.dispatch(reply(w6.REPLY, rxid, duid, t1=1, t2=2))
        with trio.fail_after(5):
            while client.state != "bound":
                await trio.sleep(0.01)
        addr = parse_addr("2001:db8:d::123")
        ia = [a for a in st.inet6.manage.addresses("fake0") if a.addr == addr]
        assert ia and ia[0].plen == 128 and ia[0].usable
        conf = st.services.require(RESOLVER).render()
        assert "nameserver 2001:db8:d::53  # dhcp6:tap0".replace("tap0", "fake0") in conf
        assert "corp.lan" in conf
        text = client.render()
        assert "address 2001:db8:d::123/128" in text and SERVER_DUID.hex() in text
        # T1 = 1 s: RENEW to the same server
        _, _, nxid, ren = await next_sent(f0, w6.RENEW, timeout=5)
        assert opts(ren)[w6.OPT_SERVERID] == SERVER_DUID
        dhcp.v6.dispatch(reply(w6.REPLY, nxid, duid, t1=30, t2=50, pref=60, valid=90))
        with trio.fail_after(5):
            while c["v6_renewed"] < 1:
                await trio.sleep(0.01)
        assert client.lease is not None and client.lease.t1 == 30
        dhcp.v6.stop("fake0")
        _, _, _, rel = await next_sent(f0, w6.RELEASE)
        assert OFFERED in opts(rel)[w6.OPT_IA_NA]
        assert not [a for a in st.inet6.manage.addresses("fake0") if a.addr == addr]
        assert "dhcp6:fake0" not in st.services.require(RESOLVER).render()


async def test_stateless_information_request() -> None:
    async with running_stack(inet6=True) as st:
        st.sysctl.set("net.inet6.ip6.dad_count", "0")
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        dhcp = st.services.require(DHCP)
        client = dhcp.v6.start("fake0", stateful=False)
        _, _, xid, inf = await next_sent(f0, w6.INFORMATION_REQUEST)
        duid = opts(inf)[w6.OPT_CLIENTID]
        assert w6.OPT_IA_NA not in opts(inf)
        dhcp.v6.dispatch(reply(w6.REPLY, xid, duid, ia=False, extra=[
            w6.option(w6.OPT_INFO_REFRESH_TIME, struct.pack("!I", 700))]))
        with trio.fail_after(5):
            while client.state != "configured":
                await trio.sleep(0.01)
        assert "nameserver 2001:db8:d::53  # dhcp6:fake0" in \
            st.services.require(RESOLVER).render()
        assert 690 <= client.refresh_at - trio.current_time() <= 700
