"""The pf.conf parser, the compiled rules and the state table, without a network."""

from __future__ import annotations

import pytest

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
            "pass in inet6 all\n"
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
    assert "my.conf:9: macro $undefined is not defined" in msg


def test_last_match_wins_quick_stops() -> None:
    rs = parse("block all\n"
               "pass in proto tcp to port 22\n"
               "block in quick proto tcp from 10.9.0.0/16\n"
               "pass in proto tcp from 10.9.1.1\n")
    m = compile_ruleset(rs)
    f = m["in"][6]
    a = 0x0A000001
    assert f("tap0", 6, a, 1, 1000, 22, 2, -1, -1).nr == 1
    assert f("tap0", 6, a, 1, 1000, 23, 2, -1, -1).nr == 0
    assert f("tap0", 6, 0x0A090101, 1, 1000, 22, 2, -1, -1).nr == 2  # quick
    assert m["out"][17]("tap0", 17, a, 1, 1, 1, -1, -1, -1).nr == 0
    assert m["in"][None]("tap0", 47, a, 1, -1, -1, -1, -1, -1).nr == 0
    # flags S/SA: only the SYN matches the stateful pass rule
    assert f("tap0", 6, a, 1, 1000, 22, 0x12, -1, -1).nr == 0


def test_port_operators() -> None:
    rs = parse("pass in proto tcp to port < 1024 no state\n"
               "pass in proto tcp to port 2000 <> 3000 no state\n"
               "pass in proto tcp to port >= 60000 no state\n")
    f = compile_ruleset(rs)["in"][6]

    def nr(dp: int) -> int | None:
        r = f("x", 6, 1, 2, 5, dp, 0, -1, -1)
        return None if r is None else r.nr

    assert [nr(p) for p in (80, 1024, 2500, 1500, 60001)] == [1, 1, None, 1, 2]
    g = compile_ruleset(parse("pass in proto tcp to port < 1024 no state\n"))["in"][6]
    assert g("x", 6, 1, 2, 5, 1023, 0, -1, -1) is not None
    assert g("x", 6, 1, 2, 5, 1024, 0, -1, -1) is None


def test_state_table_tracks_tcp_and_survives() -> None:
    t = StateTable()
    st = t.insert(6, "in", "tap0", 1, 1000, 2, 22, None, 0x02, 60)
    assert st is not None
    assert t.by_dir["out"][(6, 2, 22, 1, 1000)][1] == 1  # the reply key
    t.update(st, 1, 0x12, 60, 0.0)   # SYN+ACK
    t.update(st, 0, 0x10, 52, 0.0)   # ACK
    assert st.s_state == ESTABLISHED and st.d_state == ESTABLISHED
    assert st.timeout == t.timeouts["tcp.established"]
    t.update(st, 0, 0x04, 40, 0.0)   # RST
    assert st.timeout == t.timeouts["tcp.closed"]
    assert t.purge(now=1e12) == 1 and not t.by_dir["in"] and not t.by_dir["out"]
