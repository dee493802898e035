"""DNS and DHCP wire formats: round trips, and what the parsers refuse (with scapy as an
independent encoder where it has one)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.dhcp import wire as dw
from stack.dns import wire as nw
from stack.dns.conf import ResolvConf
from stack.dns.lookup import candidates

MAC = bytes.fromhex("020000002001")

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(label, min_size=1, max_size=5).map(".".join)


@given(names, st.integers(0, 0xFFFF), st.sampled_from([nw.TYPE_A, nw.TYPE_AAAA]))
def test_dns_query_round_trip(name: str, qid: int, qtype: int) -> None:
    m = nw.parse(nw.build_query(qid, name, qtype))
    assert (m.id, m.questions[0].name, m.questions[0].qtype) == (qid, name, qtype)
    assert not m.is_response and m.flags & nw.FLAG_RD


@given(names, st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=5))
def test_dns_response_round_trip(name: str, octets: list[tuple[int, int]]) -> None:
    q = nw.parse(nw.build_query(7, name, nw.TYPE_A))
    recs = [nw.Record(name, nw.TYPE_A, nw.CLASS_IN, 60, f"192.0.{a}.{b}") for a, b in octets]
    m = nw.parse(nw.build(nw.response(q, [nw.Record(name, nw.TYPE_CNAME, 1, 5, "x." + name),
                                          *recs])))
    assert m.is_response and m.answers[0].data == "x." + name
    assert [r.data for r in m.answers[1:]] == [r.data for r in recs]


def test_dns_compressed_names_from_scapy() -> None:
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    pkt = DNS(id=9, qr=1, qd=DNSQR(qname="www.example.lan"),
              an=[DNSRR(rrname="www.example.lan", type="CNAME", rdata="host.example.lan"),
                  DNSRR(rrname="host.example.lan", type="A", rdata="192.0.2.5")])
    raw = bytes(pkt.compress())
    assert len(raw) < len(bytes(pkt))  # names compressed
    m = nw.parse(raw)
    assert m.answers[0].data == "host.example.lan" and m.answers[1].data == "192.0.2.5"


@pytest.mark.parametrize("tail,reason", [
    (b"\xc0\x0c", "pointer_loop"),          # a pointer to itself
    (b"\xc0\x0e", "pointer_loop"),          # forwards
    (b"\x03abc\xc0\x0c", "pointer_loop"),   # back to its own start: a loop
    (b"\x40abc", "bad_label"),              # label type 0b01
    (b"\x05ab", "truncated"),
    (b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
     + b"\0", "name_too_long"),
])
def test_dns_bad_names_refused(tail: bytes, reason: str) -> None:
    data = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + tail + b"\0\x01\0\x01"
    with pytest.raises(nw.DnsError) as ei:
        nw.parse(data)
    assert ei.value.reason == reason


def test_dns_pointer_chain_bounded() -> None:
    """A chain of backward pointers (each legal) ends at MAX_JUMPS."""
    body = bytearray(b"\0")
    for _ in range(nw.MAX_JUMPS + 2):
        body += struct.pack("!H", 0xC000 | (12 + len(body) - 2))
    data = struct.pack("!HHHHHH", 1, 0x8180, 0, 0, 0, 0) + bytes(body)
    with pytest.raises(nw.DnsError) as ei:
        nw.decode_name(data, len(data) - 2)
    assert ei.value.reason == "pointer_loop"


def test_dns_counts_and_rdata() -> None:
    with pytest.raises(nw.DnsError) as ei:
        nw.parse(struct.pack("!HHHHHH", 1, 0x8180, 0, 9999, 0, 0))
    assert ei.value.reason == "too_many_records"
    q = nw.parse(nw.build_query(1, "a.lan", nw.TYPE_A))
    bad = nw.build(nw.response(q, [nw.Record("a.lan", nw.TYPE_A, 1, 1, b"\1\2\3")]))
    with pytest.raises(nw.DnsError) as ei:
        nw.parse(bad)
    assert ei.value.reason == "bad_rdata"


def test_search_order_like_glibc() -> None:
    conf = ResolvConf(search=["lan", "corp"], ndots=1)
    assert candidates("printer", conf) == ["printer.lan", "printer.corp", "printer"]
    assert candidates("www.lan", conf) == ["www.lan", "www.lan.lan", "www.lan.corp"]
    assert candidates("www.lan.", conf) == ["www.lan"]
    conf = ResolvConf.parse("nameserver 192.0.2.1\nnameserver bogus\ndomain x.lan\n"
                            "options ndots:3 timeout:1.5 attempts:9 rotate\n")
    assert conf.nameservers == ["192.0.2.1"] and conf.search == ["x.lan"]
    assert (conf.ndots, conf.timeout, conf.attempts, conf.rotate) == (3, 1.5, 5, True)


# -- DHCP ---------------------------------------------------------------------------------
def reply(**opts: bytes) -> dw.DhcpMessage:
    m = dw.DhcpMessage(dw.BOOTREPLY, 0x1234, MAC, dw.OFFER, yiaddr=0xC0000232)
    m.options = {dw.OPT_SERVER_ID: dw.u32(0xC0000201), dw.OPT_SUBNET_MASK: dw.u32(0xFFFFFF00)}
    m.options.update({int(k[1:]): v for k, v in opts.items()})
    return m


def test_dhcp_round_trip_and_long_options() -> None:
    m = reply(o119=dw.encode_search(["lan", "corp.example"]), o12=b"h" * 300)
    back = dw.parse(dw.build(m))
    assert back.xid == 0x1234 and back.yiaddr == 0xC0000232 and back.msg_type == dw.OFFER
    assert back.search() == ["lan", "corp.example"]
    assert back.text(dw.OPT_HOSTNAME) == "h" * 300  # split in two and joined (RFC 3396)


def test_dhcp_from_scapy() -> None:
    from scapy.layers.dhcp import BOOTP, DHCP

    raw = bytes(BOOTP(op=2, xid=77, yiaddr="192.0.2.60", chaddr=MAC) / DHCP(options=[
        ("message-type", "ack"), ("server_id", "192.0.2.1"), ("lease_time", 120),
        ("subnet_mask", "255.255.255.0"), ("router", "192.0.2.1"),
        ("name_server", "192.0.2.1", "192.0.2.2"), ("domain", b"lan"), "end"]))
    m = dw.parse(raw)
    assert m.msg_type == dw.ACK and m.u32(dw.OPT_LEASE_TIME) == 120
    assert m.addrs(dw.OPT_DNS) == [0xC0000201, 0xC0000202] and m.text(dw.OPT_DOMAIN) == "lan"


@pytest.mark.parametrize("mutate,reason", [
    (lambda b: b[:200], "truncated"),
    (lambda b: b[:236] + b"\0\0\0\0" + b[240:], "bad_cookie"),
    (lambda b: b"\x01" + b[1:], "bad_op"),
    (lambda b: b[:1] + b"\x06" + b[2:], "bad_htype"),
    # the first option (message type) claims 200 octets: past the end of the message
    (lambda b: b[:241] + b"\xc8" + b[242:260], "option_overrun"),
    (lambda b: b[:240] + b"\x35\x01\x09" + b[243:], "bad_option"),   # message type 9
    (lambda b: b[:240] + b"\xff", "no_message_type"),
])
def test_dhcp_refusals(mutate, reason: str) -> None:  # noqa: ANN001
    good = dw.build(reply())
    with pytest.raises(dw.DhcpError) as ei:
        dw.parse(mutate(good))
    assert ei.value.reason == reason


def test_dhcp_bad_sizes() -> None:
    with pytest.raises(dw.DhcpError) as ei:
        dw.parse(dw.build(reply(o1=b"\xff\xff\xff")))
    assert ei.value.reason == "bad_option"
    with pytest.raises(dw.DhcpError) as ei:
        dw.parse(dw.build(reply(o119=b"\x03lan\xc0\x00")))  # a loop inside option 119
    assert ei.value.reason == "bad_option"
