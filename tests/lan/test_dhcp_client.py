"""The DHCP client in a stack of this process, its wire a Python list: replies crafted
here, the bad ones refused and counted, the state machine through T1, T2 and expiry."""

from __future__ import annotations

import trio

from stack.dhcp import wire as dw
from stack.l2.ether import ETHERTYPE_IPV4
from stack.services import DHCP, RESOLVER
from tests.conftest import running_stack
from tests.inet.conftest import MAC0, FakeIface

SERVER, OTHER, OFFERED = 0xC0000201, 0xC0000209, 0xC0000232
SERVER_MAC = bytes.fromhex("02000000aa01")


def sent_dhcp(iface: FakeIface) -> list[dw.DhcpMessage]:
    out = []
    for f in iface.take():
        if int.from_bytes(f[12:14], "big") == ETHERTYPE_IPV4 and f[23] == 17 and \
                int.from_bytes(f[36:38], "big") == dw.SERVER_PORT:
            out.append(dw.parse(f[42:], want_op=dw.BOOTREQUEST))
    return out


def frame(msg: dw.DhcpMessage | bytes, *, src: int = SERVER, dst: int = 0xFFFFFFFF) -> bytes:
    payload = msg if isinstance(msg, bytes) else dw.build(msg)
    bufs = dw.frame(src, dst, payload, sport=dw.SERVER_PORT, dport=dw.CLIENT_PORT)
    return MAC0 + SERVER_MAC + b"\x08\x00" + b"".join(bufs) if dst != 0xFFFFFFFF else \
        b"\xff" * 6 + SERVER_MAC + b"\x08\x00" + b"".join(bufs)


def answer(req: dw.DhcpMessage, kind: int, *, server: int = SERVER, xid: int | None = None,
           chaddr: bytes | None = None, lease: int = 120, t1: int = 0,
           t2: int = 0) -> dw.DhcpMessage:
    m = dw.DhcpMessage(dw.BOOTREPLY, req.xid if xid is None else xid,
                       req.chaddr if chaddr is None else chaddr, kind, yiaddr=OFFERED)
    m.options = {dw.OPT_SERVER_ID: dw.u32(server), dw.OPT_SUBNET_MASK: dw.u32(0xFFFFFF00),
                 dw.OPT_ROUTER: dw.u32(SERVER), dw.OPT_DNS: dw.u32(SERVER),
                 dw.OPT_LEASE_TIME: dw.u32(lease), dw.OPT_DOMAIN: b"lan",
                 dw.OPT_DOMAIN_SEARCH: dw.encode_search(["lan", "corp.lan"])}
    if t1:
        m.options[dw.OPT_T1] = dw.u32(t1)
    if t2:
        m.options[dw.OPT_T2] = dw.u32(t2)
    return m


async def next_sent(iface: FakeIface, kind: int, timeout: float = 5) -> dw.DhcpMessage:
    with trio.fail_after(timeout):
        while True:
            for m in sent_dhcp(iface):
                if m.msg_type == kind:
                    return m
            await trio.sleep(0.01)


async def test_bad_replies_refused_then_bound_renewed_rebound_expired() -> None:
    async with running_stack() as st:
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        for k, v in (("net.inet.dhcp.arp_probes", "0"), ("net.inet.dhcp.retransmit_ms", "300")):
            st.sysctl.set(k, v)
        dhcp = st.services.require(DHCP)
        client = dhcp.start("fake0")
        disc = await next_sent(f0, dw.DISCOVER)
        assert disc.flags & dw.FLAG_BROADCAST and disc.chaddr == MAC0
        assert set(dw.REQUESTED) <= set(disc.options[dw.OPT_PARAM_REQUEST])
        good = dw.build(answer(disc, dw.OFFER))
        bad = {
            "drop_bad_xid": frame(answer(disc, dw.OFFER, xid=disc.xid ^ 1)),
            "drop_bad_chaddr": frame(answer(disc, dw.OFFER, chaddr=b"\x02" * 6)),
            "drop_unexpected": frame(answer(disc, dw.ACK)),
            "drop_truncated": frame(good[:100]),
            # an option claiming more octets than the message holds
            "drop_option_overrun": frame(good[:241] + b"\xff" + good[242:260]),
            "drop_bad_cookie": frame(good[:236] + b"XXXX" + good[240:]),
        }
        for blob in bad.values():
            f0.inject(blob)
        await trio.sleep(0.05)
        assert client.state == "selecting"
        c = dhcp.counters
        for name in bad:
            assert c[name] == 1, (name, dict(c))
        f0.inject(frame(good))
        req = await next_sent(f0, dw.REQUEST)
        assert req.addr(dw.OPT_REQUESTED_IP) == OFFERED and req.addr(dw.OPT_SERVER_ID) == SERVER
        # an ACK from another server (spoofed) is not the one asked
        f0.inject(frame(answer(req, dw.ACK, server=OTHER), src=OTHER))
        await trio.sleep(0.05)
        assert c["drop_wrong_server"] == 1 and client.state == "requesting"
        f0.inject(frame(answer(req, dw.ACK, lease=3, t1=1, t2=2)))
        with trio.fail_after(5):
            await client.bound_event.wait()
        assert [str(a.prefix) for a in st.inet.addresses("fake0")] == ["192.0.2.50/24"]
        assert any(r["destination"] in ("default", "0.0.0.0/0") for r in st.inet.route_list())
        st.inet.arp_set("192.0.2.1", SERVER_MAC, ifname="fake0")  # no ARP on this wire
        conf = st.services.require(RESOLVER).config()
        assert conf.nameservers == ["192.0.2.1"] and conf.search == ["lan", "corp.lan"]
        # T1 (1 s): a REQUEST with ciaddr, unicast to the server; nobody answers, so at
        # T2 (2 s) it is broadcast (rebinding); an ACK then renews the lease
        renew = await next_sent(f0, dw.REQUEST, timeout=3)
        assert renew.ciaddr == OFFERED and dw.OPT_SERVER_ID not in renew.options
        assert client.state == "renewing"
        rebind = await next_sent(f0, dw.REQUEST, timeout=3)
        assert client.state == "rebinding" and rebind.ciaddr == OFFERED
        f0.inject(frame(answer(rebind, dw.ACK, lease=2), dst=OFFERED))
        with trio.fail_after(2):
            while c["rebound"] == 0:
                await trio.sleep(0.01)
        # then silence: the lease (2 s) runs out, the address and the servers go
        with trio.fail_after(6):
            while c["lease_expired"] == 0:
                await trio.sleep(0.05)
        assert st.inet.addresses("fake0") == []
        assert st.services.require(RESOLVER).config().nameservers == []
        assert client.state in ("init", "selecting")
        dhcp.stop("fake0", release=False)
