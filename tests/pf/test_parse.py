"""The pf.conf parser, the compiled rules and the state table, without a network."""

from __future__ import annotations

import pytest

from stack.addr import AF_INET, AF_INET6, parse_addr, v4
from stack.pf.parse import ParseError, parse
from stack.pf.rules import compile_ruleset
from stack.pf.state import ESTABLISHED, StateTable

CONF = """
# a macro, a table, options
ext = "tap0"
web = "{ 80, 443 }"
table <bad> persist { 10.0.0.0/8, 192.0.2.1 }
set skip on lo0
set timeout tcp.established 3600
block all
pass in on $ext proto tcp from any to any port $web
pass in quick proto udp from ! <bad> to 10.1.0.0/16 port 1000:2000 no state
block return in log quick proto tcp from <bad> to any port != 22
pass out inet proto icmp all icmp-type echoreq keep state
pass in proto tcp to port { 22, 5000 >< 5010 } flags S/SA \\
    keep state label "ssh"
"""


def test_parse_and_render() -> None:
    rs = parse(CONF)
    assert rs.skip == {"lo0"} and rs.timeouts == {"tcp.established": 3600}
    assert [r.render() for r in rs.rules] == [
        "block drop all",
        "pass in on tap0 proto tcp from any to any port { 80, 443 } flags S/SA keep state",
        "pass in quick proto udp from ! <bad> to 10.1.0.0/16 port 1000:2000 no state",
        "block return in log quick proto tcp from <bad> to any port != 22",
        "pass out inet proto icmp all icmp-type echoreq keep state",
        'pass in proto tcp from any to any port { 22, 5000 >< 5010 } flags S/SA keep state '
        'label "ssh"',
    ]
    assert rs.rules[5].lineno == 13  # a continued line keeps its first line number
    assert rs.tables["bad"].entries() == ["10.0.0.0/8", "192.0.2.1"]


def test_every_bad_line_is_reported_with_its_number() -> None:
    text = ("pass in all\n"
            "block frob\n"
            "pass in proto icmp from any to any port 22\n"
            "block in from 10.0.0.300\n"
            "pass from <nope>\n"
            "pass in proto tcp from any to any port 70000\n"
            "pass in inet from 2001:db8::1\n"
            "pass in proto udp flags S/SA\n"
            "$undefined all\n"
            "block in keep state\n")
    with pytest.raises(ParseError) as ei:
        parse(text, "my.conf")
    lines = [n for n, _ in ei.value.errors]
    assert lines == [2, 3, 4, 6, 7, 8, 9, 10, 5]
    msg = ei.value.format()
    assert "my.conf:3: port only applies to tcp or udp" in msg
    assert "my.conf:4: bad address '10.0.0.300'" in msg
    assert "my.conf:5: table <nope> is not defined" in msg
    assert "my.conf:6: port 70000 out of range" in msg
    assert "my.conf:7: 2001:db8::1: not an inet address" in msg
    assert "my.conf:9: macro $undefined is not defined" in msg


def test_last_match_wins_quick_stops() -> None:
    rs = parse("block all\n"
               "pass in proto tcp to port 22\n"
               "block in quick proto tcp from 10.9.0.0/16\n"
               "pass in proto tcp from 10.9.1.1\n")
    m = compile_ruleset(rs)[AF_INET]
    f = m["in"][6]
    a, b = v4(0x0A000001), v4(1)
    assert f("tap0", 6, a, b, 1000, 22, 2, -1, -1).nr == 1
    assert f("tap0", 6, a, b, 1000, 23, 2, -1, -1).nr == 0
    assert f("tap0", 6, v4(0x0A090101), b, 1000, 22, 2, -1, -1).nr == 2  # quick
    assert m["out"][17]("tap0", 17, a, b, 1, 1, -1, -1, -1).nr == 0
    assert m["in"][None]("tap0", 47, a, b, -1, -1, -1, -1, -1).nr == 0
    # flags S/SA: only the SYN matches the stateful pass rule
    assert f("tap0", 6, a, b, 1000, 22, 0x12, -1, -1).nr == 0


def test_port_operators() -> None:
    rs = parse("pass in proto tcp to port < 1024 no state\n"
               "pass in proto tcp to port 2000 <> 3000 no state\n"
               "pass in proto tcp to port >= 60000 no state\n")
    f = compile_ruleset(rs)[AF_INET]["in"][6]
    s, d = v4(1), v4(2)

    def nr(dp: int) -> int | None:
        r = f("x", 6, s, d, 5, dp, 0, -1, -1)
        return None if r is None else r.nr

    assert [nr(p) for p in (80, 1024, 2500, 1500, 60001)] == [1, 1, None, 1, 2]
    g = compile_ruleset(parse("pass in proto tcp to port < 1024 no state\n"))[AF_INET]["in"][6]
    assert g("x", 6, s, d, 5, 1023, 0, -1, -1) is not None
    assert g("x", 6, s, d, 5, 1024, 0, -1, -1) is None


def test_state_table_tracks_tcp_and_survives() -> None:
    t = StateTable()
    a, b = v4(1), v4(2)
    st = t.insert(6, "in", "tap0", a, 1000, b, 22, None, 0x02, 60)
    assert st is not None
    assert t.by_dir["out"][(6, b, 22, a, 1000)][1] == 1  # the reply key
    t.update(st, 1, 0x12, 60, 0.0)   # SYN+ACK
    t.update(st, 0, 0x10, 52, 0.0)   # ACK
    assert st.s_state == ESTABLISHED and st.d_state == ESTABLISHED
    assert st.timeout == t.timeouts["tcp.established"]
    t.update(st, 0, 0x04, 40, 0.0)   # RST
    assert st.timeout == t.timeouts["tcp.closed"]
    assert t.purge(now=1e12) == 1 and not t.by_dir["in"] and not t.by_dir["out"]


def test_inet6_rules_parse_and_keep_to_their_family() -> None:
    """inet6 rules and IPv6 addresses parse into the same structures (stack.addr
    Prefixes, tables of both families); a rule's family is real: an inet6 rule (said,
    or implied by its addresses) is compiled only for IPv6 and never matches IPv4."""
    rs = parse("table <both> { 10.0.0.0/8, 2001:db8::/32, ::1 }\n"
               "pass in inet6 proto tcp from 2001:db8::/32 to any port 22 no state\n"
               "block in quick from 2001:db8:1::/48\n"
               "pass in quick proto tcp from { 10.1.0.0/16, 2001:db8:2::/48 } no state\n"
               "block in quick inet from <both>\n"
               "pass in quick inet6 from ! ::/0 no state\n")
    assert [r.render() for r in rs.rules] == [
        "pass in inet6 proto tcp from 2001:db8::/32 to any port = 22 no state",
        "block drop in quick from 2001:db8:1::/48 to any",
        "pass in quick proto tcp from { 10.1.0.0/16, 2001:db8:2::/48 } to any no state",
        "block drop in quick inet from <both> to any",
        "pass in quick inet6 from ! ::/0 to any no state",
    ]
    assert [r.family for r in rs.rules[:5]] == [AF_INET6, AF_INET6, 0, AF_INET, AF_INET6]
    # address order in the one 128-bit space: ::1, then IPv4 (::ffff:0:0/96), then 2001:...
    assert rs.tables["both"].entries() == ["::1", "10.0.0.0/8", "2001:db8::/32"]
    m = compile_ruleset(rs)
    in4, in6 = m[AF_INET]["in"][6], m[AF_INET6]["in"][6]
    x6, y6 = parse_addr("2001:db8::5"), parse_addr("2001:db8:ffff::1")
    x4, y4 = parse_addr("10.1.2.3"), parse_addr("192.0.2.9")
    # IPv4: the inet6 rules are not there; the mixed list matches by its IPv4 member
    assert in4("tap0", 6, x4, y4, 1000, 22, 2, -1, -1).nr == 2
    assert in4("tap0", 6, parse_addr("10.200.0.1"), y4, 1000, 22, 2, -1, -1).nr == 3
    assert in4("tap0", 6, y4, x4, 1000, 22, 2, -1, -1) is None
    # IPv6: the same structures, the other family's rules absent
    assert in6("tap0", 6, x6, y6, 1000, 22, 2, -1, -1).nr == 0
    assert in6("tap0", 6, parse_addr("2001:db8:1::1"), y6, 1000, 22, 2, -1, -1).nr == 1
    assert in6("tap0", 6, parse_addr("2001:db8:2::1"), y6, 1000, 80, 2, -1, -1).nr == 2
    # a table holds both families; an address is tested against its own family only
    t = rs.tables["both"]
    assert x4 in t and v4(0x0A000000) in t and parse_addr("2001:db8::9") in t
    assert parse_addr("::1") in t and parse_addr("::2") not in t and y4 not in t
    # a state key is the same tuple for either family
    st = StateTable()
    s6 = st.insert(6, "in", "tap0", x6, 1000, y6, 22, None, 0x02, 60)
    assert s6 is not None and st.by_dir["out"][(6, y6, 22, x6, 1000)][1] == 1
    assert "2001:db8:ffff::1[22] <- 2001:db8::5[1000]" in st.render()


def test_rules_of_different_families_are_refused() -> None:
    with pytest.raises(ParseError) as ei:
        parse("pass from 10.0.0.1 to 2001:db8::1\n"
              "pass inet6 from 10.0.0.0/8\n"
              "pass inet6 proto icmp\n"
              "block from 2001:db8::/129\n")
    assert [n for n, _ in ei.value.errors] == [1, 2, 3, 4]
    assert "different families" in ei.value.errors[0][1]


def test_engine_keeps_ipv4_packets_from_inet6_rules() -> None:
    """Through the engine's IPv4 front end (the wire module's view, Addr state keys): an
    IPv4 packet never matches an inet6 rule, said or implied, and matches an IPv4 one."""
    import socket
    import struct
    from types import SimpleNamespace

    from stack.packet import Packet
    from stack.pf.engine import Pf

    def packet(src: str, dst: str, dport: int) -> Packet:
        tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        pkt = Packet(memoryview(bytes(14) + ip + tcp))
        pkt.l3 = 14
        return pkt

    pf = Pf(SimpleNamespace())  # type: ignore[arg-type]
    iface = SimpleNamespace(name="tap0")
    pf.load("block in quick inet6 all\n"
            "block in quick from ::/0\n"
            "block in quick proto tcp from 2001:db8::/32 to any port 22\n"
            "pass in quick proto tcp from { 2001:db8::/32, 10.9.0.0/16 } to any port 22\n"
            "block in all\n")
    assert pf.hook_in(packet("10.9.0.1", "10.0.0.2", 22), iface, "in") is None  # type: ignore[arg-type]
    assert pf.ruleset.rules[3].packets == 1
    assert pf.hook_in(packet("10.8.0.1", "10.0.0.2", 22), iface, "in") is False  # type: ignore[arg-type]
    assert [r.packets for r in pf.ruleset.rules] == [0, 0, 0, 1, 1]
    # the state it made is keyed on Addr values and rendered as before
    assert len(pf.states) == 1
    key = next(iter(pf.states.by_dir["in"]))
    assert key == (6, parse_addr("10.9.0.1"), 40000, parse_addr("10.0.0.2"), 22)
    assert pf.states.render().startswith("all tcp 10.0.0.2:22 <- 10.9.0.1:40000 ")
