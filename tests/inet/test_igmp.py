"""IGMP host side and IPv4 multicast delivery, in process: a stack with in-memory
interfaces (tests/inet/conftest.py), frames decoded by scapy (an independent reader of
the formats), trio's MockClock for the protocol's timers."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from scapy.layers.igmp import IGMP, IGMPv3
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from stack.addr import parse_addr
from stack.inet.wire import ParseError
from stack.inet.wire import igmp as w
from stack.multicast import ASM, EXCLUDE, INCLUDE, Filter, GroupTable, merge
from tests.inet.conftest import FakeIface, settle

M0 = "02:00:00:00:0a:01"
P0 = "02:00:00:00:aa:02"
GROUP = "239.1.2.3"
GMAC = "01:00:5e:01:02:03"
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)
IP_DROP_SOURCE_MEMBERSHIP = getattr(socket, "IP_DROP_SOURCE_MEMBERSHIP", 40)
IP_BLOCK_SOURCE = getattr(socket, "IP_BLOCK_SOURCE", 38)
IP_UNBLOCK_SOURCE = getattr(socket, "IP_UNBLOCK_SOURCE", 37)
RA = bytes.fromhex("94040000")


def A(text: str) -> int:
    return parse_addr(text)


def mreq(group: str, iface: str = "0.0.0.0") -> bytes:
    return socket.inet_aton(group) + socket.inet_aton(iface)


def mreqn(group: str, ifindex: int) -> bytes:
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", ifindex)


def mreq_source(group: str, source: str, iface: str = "0.0.0.0") -> bytes:
    return socket.inet_aton(group) + socket.inet_aton(iface) + socket.inet_aton(source)


def gmac(group: str) -> bytes:
    d = socket.inet_aton(group)
    return bytes([1, 0, 0x5E, d[1] & 0x7F, d[2], d[3]])


def igmp_frame(payload: bytes, dst: str, src: str = "10.0.0.254", ttl: int = 1) -> bytes:
    """An IGMP message as a router sends it: TTL 1, TOS 0xc0, Router Alert."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x46, 0xC0, 24 + len(payload), 1, 0, ttl, 2,
                                0, socket.inet_aton(src), socket.inet_aton(dst))) + RA
    hdr[10:12] = _csum(bytes(hdr)).to_bytes(2, "big")
    return gmac(dst) + bytes.fromhex(P0.replace(":", "")) + b"\x08\x00" + bytes(hdr) + payload


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - s


def udp_frame(dst: str, payload: bytes, src: str = "10.0.0.7", dport: int = 5000) -> bytes:
    mac = ":".join(f"{b:02x}" for b in gmac(dst))
    return bytes(Ether(src=P0, dst=mac) / IP(src=src, dst=dst, ttl=1)
                 / UDP(sport=4000, dport=dport) / Raw(payload))


def reports(f: FakeIface) -> list[Ether]:
    return [e for e in (Ether(b) for b in f.take()) if IP in e and e[IP].proto == 2]


def v3_records(e: Ether) -> list[tuple[int, str, list[str]]]:
    r = IGMPv3(bytes(e[IP].payload))  # scapy dispatches to its IGMPv3_MR
    assert r.type == 0x22
    return [(g.rtype, g.maddr, list(g.srcaddrs or [])) for g in r.records]


def fixed_delays(st, value: float = 0.05) -> None:  # noqa: ANN001
    st.inet.igmp.uniform = lambda lo, hi: min(hi, value)


# ====================================================================== wire and table
def test_codes_round_trip() -> None:
    for v in (0, 1, 100, 127, 128, 200, 1000, 31744):
        assert w.decode_code(w.encode_code(v)) <= v
        assert w.decode_code(w.encode_code(v)) >= v * 0.9
    assert w.decode_code(0x80) == 128 and w.decode_code(0xFF) == 31744


def test_parse_versions_and_malformed() -> None:
    q1 = w.parse(memoryview(w.emit(w.QUERY, 0)))
    assert (q1.version, q1.max_resp) == (1, 10.0)
    q2 = w.parse(memoryview(w.emit(w.QUERY, 0, 50)))
    assert (q2.version, q2.max_resp) == (2, 5.0)
    q3 = w.parse(memoryview(w.emit_query_v3(A(GROUP) & 0xFFFFFFFF, 30, (0x0A000007,), qrv=3,
                                            qqic=60)))
    assert (q3.version, q3.max_resp, q3.qrv, q3.qqi, q3.sources) == (3, 3.0, 3, 60, (0x0A000007,))
    rep = w.parse(memoryview(w.emit_v3_report([w.record(w.CHANGE_TO_EXCLUDE, 0xEF010203)])))
    assert rep.records == [(w.CHANGE_TO_EXCLUDE, 0xEF010203, ())]
    bad = bytearray(w.emit(w.QUERY, 0))
    bad[4] ^= 1
    for data, reason in ((b"\x11\0\0", "drop_truncated"), (bytes(bad), "drop_bad_checksum"),
                         (w.emit_query_v3(0, 10, (1, 2))[:-4] + b"", "drop_bad_length")):
        with pytest.raises(ParseError) as ei:
            w.parse(memoryview(_fix(data) if reason == "drop_bad_length" else data))
        assert ei.value.reason == reason


def _fix(b: bytes) -> bytes:
    m = bytearray(b)
    m[2:4] = b"\0\0"
    c = _csum(bytes(m) + (b"\0" if len(m) & 1 else b""))
    m[2:4] = c.to_bytes(2, "big")
    return bytes(m)


def test_merge_rfc3376_3_2() -> None:
    s1, s2, s3 = A("10.0.0.1"), A("10.0.0.2"), A("10.0.0.3")
    assert merge([]) is None
    assert merge([Filter(INCLUDE, frozenset({s1})), Filter(INCLUDE, frozenset({s2}))]) == \
        Filter(INCLUDE, frozenset({s1, s2}))
    # EXCLUDE wins: intersection of exclusions minus every inclusion
    assert merge([Filter(EXCLUDE, frozenset({s1, s2})), Filter(EXCLUDE, frozenset({s2, s3})),
                  Filter(INCLUDE, frozenset({s2}))]) == Filter(EXCLUDE, frozenset())
    assert merge([Filter(EXCLUDE, frozenset({s1})), ASM]) == ASM
    t = GroupTable()
    seen = []
    t.listeners.append(lambda i, g, old, new: seen.append((old, new)))
    a, b = object(), object()
    t.set(1, A(GROUP), a, Filter(INCLUDE, frozenset({s1})))
    t.set(1, A(GROUP), b, Filter(INCLUDE, frozenset({s1})))  # same merged state: no event
    assert t.accepts(1, A(GROUP), s1) and not t.accepts(1, A(GROUP), s2)
    assert not t.accepts(2, A(GROUP), s1)
    t.set(1, A(GROUP), a, None)
    t.set(1, A(GROUP), b, None)
    assert seen == [(None, Filter(INCLUDE, frozenset({s1}))), (Filter(INCLUDE, frozenset({s1})), None)]
    assert t.by_if == {}


# ====================================================================== in a stack
async def test_join_reports_filter_and_delivery(two_if_stack, autojump_clock) -> None:
    st, f0, f1 = two_if_stack
    fixed_delays(st)
    udp = st.udp
    s1, s2 = udp.socket(), udp.socket()
    for s in (s1, s2):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 5000))
    s1.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    # layer 2 now takes the group's MAC on fake0 only
    assert bytes.fromhex(GMAC.replace(":", "")) in f0.multicast
    assert bytes.fromhex(GMAC.replace(":", "")) not in f1.multicast
    rs = reports(f0)
    assert len(rs) == 1
    e = rs[0]
    assert e.dst == "01:00:5e:00:00:16" and e[IP].dst == "224.0.0.22"
    assert e[IP].ttl == 1 and e[IP].tos == 0xC0 and bytes(e[IP])[20:24] == RA
    assert v3_records(e) == [(w.CHANGE_TO_EXCLUDE, GROUP, [])]
    assert reports(f1) == []
    # the robustness variable's one retransmission, within the unsolicited interval
    await trio_sleep(1.1)
    assert [v3_records(e) for e in reports(f0)] == [[(w.CHANGE_TO_EXCLUDE, GROUP, [])]]
    f0.inject(udp_frame(GROUP, b"to the group"))
    await settle()
    assert s1.recvfrom_nowait()[0] == b"to the group"
    with pytest.raises(BlockingIOError):
        s2.recvfrom_nowait()  # bound to the port, never joined
    # the same group arriving on the other interface is not for s1 (not joined there)
    f1.inject(udp_frame(GROUP, b"wrong interface"))
    await settle()
    with pytest.raises(BlockingIOError):
        s1.recvfrom_nowait()
    assert st.l2.counters["drop_multicast_not_joined"] == 1  # layer 2's filter
    # a group sharing the joined group's MAC (23 bits) passes layer 2, not the IP layer
    f0.inject(udp_frame("239.129.2.3", b"x"))
    await settle()
    with pytest.raises(BlockingIOError):
        s1.recvfrom_nowait()
    assert st.inet.counters["drop_multicast_not_joined"] == 1
    # leave: TO_IN({}) (twice), MAC filter removed
    s1.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP))
    assert bytes.fromhex(GMAC.replace(":", "")) not in f0.multicast
    assert [v3_records(e) for e in reports(f0)] == [[(w.CHANGE_TO_INCLUDE, GROUP, [])]]
    await trio_sleep(1.1)
    assert [v3_records(e) for e in reports(f0)] == [[(w.CHANGE_TO_INCLUDE, GROUP, [])]]
    with pytest.raises(OSError) as ei:
        s1.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    s1.close()
    s2.close()


async def trio_sleep(t: float) -> None:
    import trio

    await trio.sleep(t)


async def test_socket_option_errors(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    s = st.udp.socket()
    opt = socket.IPPROTO_IP
    cases = [
        (socket.IP_ADD_MEMBERSHIP, mreq("10.0.0.9"), errno.EINVAL),       # not a group
        (socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.9.9.9"), errno.ENODEV),  # no such interface
        (socket.IP_ADD_MEMBERSHIP, mreqn(GROUP, 999), errno.ENODEV),
        (socket.IP_ADD_MEMBERSHIP, b"\xef\x01", errno.EINVAL),             # too short
        (IP_BLOCK_SOURCE, mreq_source(GROUP, "10.0.0.7", "10.0.0.1"), errno.EINVAL),  # no join
        (socket.IP_MULTICAST_IF, socket.inet_aton("10.9.9.9"), errno.EADDRNOTAVAIL),
        (socket.IP_MULTICAST_TTL, 256, errno.EINVAL),
    ]
    for name, value, err in cases:
        with pytest.raises(OSError) as ei:
            s.setsockopt(opt, name, value)
        assert ei.value.errno == err, (name, value)
    s.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreqn(GROUP, f0.index))
    with pytest.raises(OSError) as ei:
        s.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    assert ei.value.errno == errno.EADDRINUSE
    s.setsockopt(opt, IP_BLOCK_SOURCE, mreq_source(GROUP, "10.0.0.8", "10.0.0.1"))
    with pytest.raises(OSError) as ei:  # an INCLUDE-mode op on a non-empty EXCLUDE filter
        s.setsockopt(opt, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(GROUP, "10.0.0.7", "10.0.0.1"))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        s.setsockopt(opt, IP_BLOCK_SOURCE, mreq_source(GROUP, "10.0.0.8", "10.0.0.1"))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    for i in range(19):
        s.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq(f"239.2.0.{i}", "10.0.0.1"))
    with pytest.raises(OSError) as ei:
        s.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq("239.3.0.1", "10.0.0.1"))
    assert ei.value.errno == errno.ENOBUFS
    assert s.getsockopt(opt, socket.IP_MULTICAST_TTL) == 1
    assert s.getsockopt(opt, socket.IP_MULTICAST_LOOP) == 1
    s.setsockopt(opt, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.0.1"))
    assert s.getsockopt(opt, socket.IP_MULTICAST_IF) == socket.inet_aton("10.0.0.1")
    s.close()  # leaves all 20
    assert set(st.inet.igmp.groups.groups(f0.index)) == {A("224.0.0.1")}


async def test_source_filters(two_if_stack, autojump_clock) -> None:
    st, f0, _ = two_if_stack
    fixed_delays(st)
    ok, other = "10.0.0.7", "10.0.0.8"
    ssm, asm = st.udp.socket(), st.udp.socket()
    for s in (ssm, asm):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 5000))
    opt = socket.IPPROTO_IP
    ssm.setsockopt(opt, IP_ADD_SOURCE_MEMBERSHIP, mreq_source(GROUP, ok, "10.0.0.1"))
    assert [v3_records(e) for e in reports(f0)] == [[(w.ALLOW_NEW_SOURCES, GROUP, [ok])]]
    assert st.inet.igmp.groups.state(f0.index, A(GROUP)) == Filter(INCLUDE, frozenset({A(ok)}))
    for src in (ok, other):
        f0.inject(udp_frame(GROUP, src.encode(), src=src))
    await settle()
    assert ssm.recvfrom_nowait()[0] == ok.encode()
    with pytest.raises(BlockingIOError):
        ssm.recvfrom_nowait()
    assert st.inet.counters["drop_multicast_source_filtered"] == 1
    # an any-source member blocking `ok`: the interface goes to EXCLUDE({}) (ok is included)
    asm.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    asm.setsockopt(opt, IP_BLOCK_SOURCE, mreq_source(GROUP, ok, "10.0.0.1"))
    assert st.inet.igmp.groups.state(f0.index, A(GROUP)) == Filter(EXCLUDE, frozenset())
    await trio_sleep(2)
    f0.take()
    for src in (ok, other):
        f0.inject(udp_frame(GROUP, src.encode(), src=src))
    await settle()
    assert ssm.recvfrom_nowait()[0] == ok.encode()
    assert asm.recvfrom_nowait()[0] == other.encode()  # ok is blocked for this socket
    with pytest.raises(BlockingIOError):
        asm.recvfrom_nowait()
    # the source-specific member leaves: EXCLUDE({ok}), a BLOCK record
    ssm.setsockopt(opt, IP_DROP_SOURCE_MEMBERSHIP, mreq_source(GROUP, ok, "10.0.0.1"))
    assert st.inet.igmp.groups.state(f0.index, A(GROUP)) == Filter(EXCLUDE, frozenset({A(ok)}))
    assert [v3_records(e) for e in reports(f0)] == [[(w.BLOCK_OLD_SOURCES, GROUP, [ok])]]
    asm.setsockopt(opt, IP_UNBLOCK_SOURCE, mreq_source(GROUP, ok, "10.0.0.1"))
    assert [v3_records(e) for e in reports(f0)] == [[(w.ALLOW_NEW_SOURCES, GROUP, [ok])]]
    ssm.close()
    asm.close()


async def test_general_and_group_queries_answered(two_if_stack, autojump_clock) -> None:
    import trio

    st, f0, _ = two_if_stack
    s = st.udp.socket()
    opt = socket.IPPROTO_IP
    s.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    s.setsockopt(opt, IP_ADD_SOURCE_MEMBERSHIP, mreq_source("232.1.1.1", "10.0.0.7", "10.0.0.1"))
    await trio.sleep(3)
    f0.take()
    # general query, Max Resp Time 2 s: one report of current-state records within 2 s
    t0 = trio.current_time()
    f0.inject(igmp_frame(w.emit_query_v3(0, 20, qrv=3, qqic=30), "224.0.0.1"))
    got: list[Ether] = []
    with trio.fail_after(2.01):
        while not got:
            await trio.sleep(0.01)
            got = reports(f0)
    assert trio.current_time() - t0 <= 2.0
    assert sorted(v3_records(got[0])) == [(w.MODE_IS_INCLUDE, "232.1.1.1", ["10.0.0.7"]),
                                          (w.MODE_IS_EXCLUDE, GROUP, [])]
    assert st.inet.igmp.ifs[f0.index].rv == 3 and st.inet.igmp.ifs[f0.index].qi == 30
    # a group-and-source query: INCLUDE({7}) asked about {7, 8} answers IS_IN({7})
    f0.inject(igmp_frame(w.emit_query_v3(0xE8010101, 10, (0x0A000007, 0x0A000008)), "232.1.1.1"))
    await trio.sleep(1.01)
    assert [v3_records(e) for e in reports(f0)] == [[(w.MODE_IS_INCLUDE, "232.1.1.1", ["10.0.0.7"])]]
    # a query for a group we are not in: nothing
    f0.inject(igmp_frame(w.emit_query_v3(0xEF050505, 10), "239.5.5.5"))
    await trio.sleep(1.01)
    assert reports(f0) == []
    # a general query to something other than 224.0.0.1 is ignored and counted
    f0.inject(igmp_frame(w.emit_query_v3(0, 10), GROUP))
    await trio.sleep(1.01)
    assert reports(f0) == [] and st.inet.igmp.counters["drop_query_bad_dst"] == 1
    s.close()


async def test_v2_querier_switches_to_v2_and_back(two_if_stack, autojump_clock) -> None:
    import trio

    st, f0, _ = two_if_stack
    igmp = st.inet.igmp
    s = st.udp.socket()
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    await trio.sleep(2)
    f0.take()
    f0.inject(igmp_frame(w.emit(w.QUERY, 0, 100), "224.0.0.1"))  # a v2 general query, 10 s
    await trio.sleep(10.01)
    got = reports(f0)
    assert len(got) == 1
    assert got[0][IP].dst == GROUP and got[0][IP].ttl == 1 and bytes(got[0][IP])[20:24] == RA
    assert IGMP(bytes(got[0][IP].payload)).type == 0x16
    assert igmp.counters["compat_v2"] == 1
    # a second member's report for the group suppresses ours (RFC 2236)
    f0.inject(igmp_frame(w.emit(w.QUERY, 0, 100), "224.0.0.1"))
    await trio.sleep(0)
    f0.inject(igmp_frame(w.emit(w.V2_REPORT, 0xEF010203), GROUP, src="10.0.0.9"))
    await trio.sleep(10.01)
    assert reports(f0) == [] and igmp.counters["report_suppressed"] == 1
    # a new join in v2 mode: a v2 report; the leave: a Leave to 224.0.0.2
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq("239.7.7.7", "10.0.0.1"))
    got = reports(f0)
    assert [(e[IP].dst, IGMP(bytes(e[IP].payload)).type) for e in got] == [("239.7.7.7", 0x16)]
    s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq("239.7.7.7", "10.0.0.1"))
    got = reports(f0)
    assert [(e[IP].dst, IGMP(bytes(e[IP].payload)).type, IGMP(bytes(e[IP].payload)).gaddr)
            for e in got] == [("224.0.0.2", 0x17, "239.7.7.7")]
    # Older Version Querier Present: 2 x 125 s + 10 s; then IGMPv3 again
    await trio.sleep(261)
    f0.take()
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq("239.8.8.8", "10.0.0.1"))
    got = reports(f0)
    assert [v3_records(e) for e in got] == [[(w.CHANGE_TO_EXCLUDE, "239.8.8.8", [])]]
    s.close()


@pytest.mark.parametrize("payload,reason", [
    (b"\x11\x00", "drop_truncated"),
    (b"\x11\x64\x00\x00\xef\x01\x02\x03", "drop_bad_checksum"),
    (b"\x11\x64\x00\x00\x00\x00\x00\x00\x00\x00", "drop_bad_length"),
    (w.emit_query_v3(0, 10, (1, 2, 3))[:16], "drop_bad_length"),
    (w.emit(w.QUERY, 0x0A000001, 10), "drop_bad_group"),
    (w.emit_v3_report([w.record(9, 0xEF010203)]), "drop_bad_record"),
])
async def test_malformed_igmp_counted_and_dropped(two_if_stack, payload: bytes,
                                                  reason: str) -> None:
    st, f0, _ = two_if_stack
    data = payload if reason in ("drop_bad_checksum", "drop_bad_group", "drop_bad_record",
                                 "drop_truncated") else _fix(payload)
    f0.inject(igmp_frame(data, "224.0.0.1"))
    await settle()
    assert st.inet.igmp.counters[reason] == 1
    assert reports(f0) == []


async def test_send_ttl_interface_and_loopback(two_if_stack) -> None:
    st, f0, f1 = two_if_stack
    opt = socket.IPPROTO_IP
    rx = st.udp.socket()
    rx.bind(("", 5000))
    rx.setsockopt(opt, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.1.0.1"))
    f1.take()
    tx = st.udp.socket()
    tx.setsockopt(opt, socket.IP_MULTICAST_IF, socket.inet_aton("10.1.0.1"))
    tx.setsockopt(opt, socket.IP_MULTICAST_TTL, 5)
    tx.sendto_nowait(b"hello group", (GROUP, 5000))
    await settle()
    (frame,) = [Ether(b) for b in f1.take()]
    assert frame.dst == GMAC and frame[IP].ttl == 5 and frame[IP].src == "10.1.0.1"
    assert f0.take() == []
    data, peer = rx.recvfrom_nowait()  # looped back (IP_MULTICAST_LOOP is on)
    assert data == b"hello group" and peer.addr == A("10.1.0.1")
    tx.setsockopt(opt, socket.IP_MULTICAST_LOOP, 0)
    tx.sendto_nowait(b"no loop", (GROUP, 5000))
    await settle()
    assert len(f1.take()) == 1
    with pytest.raises(BlockingIOError):
        rx.recvfrom_nowait()
    # TTL 0: this host only
    tx.setsockopt(opt, socket.IP_MULTICAST_LOOP, 1)
    tx.setsockopt(opt, socket.IP_MULTICAST_TTL, 0)
    tx.sendto_nowait(b"host only", (GROUP, 5000))
    await settle()
    assert f1.take() == [] and rx.recvfrom_nowait()[0] == b"host only"
    # no IP_MULTICAST_IF and no route to the group: ENETUNREACH, as Linux
    plain = st.udp.socket()
    with pytest.raises(OSError) as ei:
        plain.sendto_nowait(b"x", ("239.4.4.4", 5000))
    assert ei.value.errno == errno.ENETUNREACH
    for s in (rx, tx, plain):
        s.close()


async def test_raw_socket_membership(two_if_stack) -> None:
    st, f0, _ = two_if_stack
    watcher = st.raw.socket(17)  # no memberships: every multicast UDP the host accepted
    member = st.raw.socket(17)
    member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    other = st.raw.socket(17)
    other.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq("239.6.6.6", "10.0.0.1"))
    f0.inject(udp_frame(GROUP, b"raw"))
    await settle()
    assert watcher.recvfrom_nowait()[0].endswith(b"raw")
    assert member.recvfrom_nowait()[0].endswith(b"raw")
    with pytest.raises(BlockingIOError):
        other.recvfrom_nowait()
    for s in (watcher, member, other):
        s.close()


async def test_interface_up_reports_the_groups_again(two_if_stack, autojump_clock) -> None:
    import trio

    from stack.l2.iface import IFF_UP

    st, f0, _ = two_if_stack
    s = st.udp.socket()
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, "10.0.0.1"))
    await trio.sleep(2)
    f0.take()
    f0.set_flags(clear_bits=IFF_UP)
    f0.set_flags(IFF_UP)
    assert [v3_records(e) for e in reports(f0)] == [[(w.CHANGE_TO_EXCLUDE, GROUP, [])]]
    s.close()
