"""pf over IPv6: the engine's IPv6 front end on packets built with scapy (extension
headers, fragments, ICMPv6 types, states and errors, the layer's split output buffers),
then against the Linux kernel in the test's namespace (ping6 blocked and passed by rule,
a table of IPv6 addresses, a default-deny policy that passes ND and keeps state for the
stack's own echo requests and the ICMPv6 errors they draw, ``block return`` as a TCP RST
and an ICMPv6 port unreachable, pf's log read by tcpdump), and bpf capturing ping6."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from stack.addr import AF_INET6, Prefix, parse_addr
from stack.packet import Packet
from stack.pf.engine import Pf
from stack.pf.parse import ParseError, parse
from stack.pf.rules import compile_ruleset
from tests.conftest import HAVE_FUSE, HAVE_TUN, NetNS, running_stack

S6 = "2001:db8:77::2"  # the stack
K6 = "2001:db8:77::1"  # the kernel
IFACE = SimpleNamespace(name="tap0")


# -- the engine on crafted packets ----------------------------------------------------------
def inbound(p: Any) -> Packet:
    pkt = Packet(memoryview(bytes(14) + bytes(p)))
    pkt.l3 = 14
    return pkt


def engine(rules: str) -> Pf:
    pf = Pf(SimpleNamespace(services=SimpleNamespace(get=lambda key: None)))  # type: ignore[arg-type]
    pf.load(rules)
    return pf


def test_icmp6_rules_parse_render_and_compile() -> None:
    rs = parse("block all\n"
               "pass inet6 proto icmp6 icmp6-type { neighbrsol, neighbradv, routersol, "
               "routeradv } no state\n"
               "pass in proto icmp6 from 2001:db8::/32 icmp6-type echoreq code 0\n"
               "block return-icmp6 in proto udp from 2001:db8::/32\n")
    assert [r.render() for r in rs.rules] == [
        "block drop all",
        "pass inet6 proto icmp6 all icmp6-type neighbrsol no state",
        "pass inet6 proto icmp6 all icmp6-type neighbradv no state",
        "pass inet6 proto icmp6 all icmp6-type routersol no state",
        "pass inet6 proto icmp6 all icmp6-type routeradv no state",
        "pass in proto icmp6 from 2001:db8::/32 to any icmp6-type echoreq code 0 keep state",
        "block return-icmp6 in proto udp from 2001:db8::/32 to any",
    ]
    # pfctl numbers the expanded rules; every one keeps its line
    assert [r.nr for r in rs.rules] == list(range(7))
    assert [r.lineno for r in rs.rules] == [1, 2, 2, 2, 2, 3, 4]
    # proto icmp6 makes a rule inet6: absent from the IPv4 functions
    assert all(r.family == AF_INET6 for r in rs.rules[1:])
    m = compile_ruleset(rs)
    assert set(m[AF_INET6]["in"]) == {6, 17, 58, None}
    in6 = m[AF_INET6]["in"][58]
    src, dst = parse_addr("2001:db8::5"), parse_addr("2001:db8::9")
    assert in6("tap0", 58, src, dst, 7, 7, -1, 128, 0).nr == 5
    assert in6("tap0", 58, src, dst, 7, 7, -1, 128, 1).nr == 0  # code 1: block all
    assert in6("tap0", 58, src, dst, -1, -1, -1, 135, 0).nr == 1
    assert m[AF_INET6]["in"][None]("tap0", 58, src, dst, -1, -1, -1, 128, 0).nr == 0
    with pytest.raises(ParseError) as ei:
        parse("pass inet proto icmp6\n"
              "pass proto icmp6 from 10.0.0.1\n"
              "pass proto icmp icmp6-type echoreq\n"
              "pass proto icmp6 icmp-type echoreq\n"
              "pass proto icmp6 icmp6-type nosuchtype\n")
    assert [n for n, _ in ei.value.errors] == [1, 2, 3, 4, 5]


def test_engine_walks_extension_headers_and_matches_icmp6() -> None:
    from scapy.layers.inet import TCP, UDP
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        ICMPv6ND_NS,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
    )

    pf = engine("block in quick inet6 proto tcp from 2001:db8::/32 to any port 22\n"
                "pass in quick inet6 proto icmp6 icmp6-type neighbrsol no state\n"
                "block in quick proto icmp6 icmp6-type echoreq\n"
                "block in quick inet6 proto udp to port 53\n"
                "pass in all no state\n")
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2")
    # TCP behind hop-by-hop and destination options: the port is found
    hit = ip / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(dport=22, flags="S")
    assert pf.hook_in6(inbound(hit), IFACE, "in") is False  # type: ignore[arg-type]
    assert pf.ruleset.rules[0].packets == 1
    assert pf.hook_in6(inbound(ip / IPv6ExtHdrDestOpt() / TCP(dport=80, flags="S")),
                       IFACE, "in") is None  # type: ignore[arg-type]
    # a first fragment carries the ports; a later one has none (only rules without)
    first = ip / IPv6ExtHdrFragment(id=7, m=1, offset=0) / UDP(dport=53) / (b"x" * 16)
    later = ip / IPv6ExtHdrFragment(id=7, m=0, offset=3, nh=17) / (b"y" * 16)
    assert pf.hook_in6(inbound(first), IFACE, "in") is False  # type: ignore[arg-type]
    assert pf.hook_in6(inbound(later), IFACE, "in") is None  # type: ignore[arg-type]
    assert pf.counters["fragment"] == 1
    # ICMPv6 types
    assert pf.hook_in6(inbound(ip / ICMPv6EchoRequest(id=5)), IFACE, "in") is False  # type: ignore[arg-type]
    assert pf.hook_in6(inbound(IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255)
                               / ICMPv6ND_NS(tgt="2001:db8::2")), IFACE, "in") is None  # type: ignore[arg-type]
    assert [r.packets for r in pf.ruleset.rules] == [1, 1, 1, 1, 2]
    # a chain longer than the layer walks: dropped, counted short
    long = bytes(ip / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) / TCP())
    chain = b"".join(bytes([60, 0]) + bytes(6) for _ in range(40))
    raw = bytearray(long[:40]) + chain + bytes(20)
    raw[6] = 60
    raw[40 + 39 * 8] = 6
    raw[4:6] = (len(raw) - 40).to_bytes(2, "big")
    short = pf.counters["short"]
    assert pf.hook_in6(inbound(raw), IFACE, "in") is False  # type: ignore[arg-type]
    assert pf.counters["short"] == short + 1


def test_engine_states_for_echo_and_icmp6_errors_quoting_them() -> None:
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6TimeExceeded,
        IPv6,
    )

    pf = engine("block all\npass out inet6 proto { icmp6, udp } keep state\n")
    me, peer, far = "2001:db8::2", "2001:db8::1", "2001:db8:99::5"
    req = IPv6(src=me, dst=peer) / ICMPv6EchoRequest(id=0x77, seq=1) / (b"p" * 16)
    # going out as the layer hands it over: the header, the ICMPv6 header, the data
    raw = bytes(req)
    bufs = [raw[:40], raw[40:48], raw[48:]]
    assert pf.hook_out6(bufs, IFACE, "out") is None  # type: ignore[arg-type]
    assert len(pf.states) == 1
    key = next(iter(pf.states.by_dir["out"]))
    assert key == (58, parse_addr(me), 0x77, parse_addr(peer), 0x77)
    assert "all icmp6 2001:db8::2[119] -> 2001:db8::1[119]" in pf.states.render()
    reply = IPv6(src=peer, dst=me) / ICMPv6EchoReply(id=0x77, seq=1) / (b"p" * 16)
    assert pf.hook_in6(inbound(reply), IFACE, "in") is None  # type: ignore[arg-type]
    other = IPv6(src=peer, dst=me) / ICMPv6EchoReply(id=0x78, seq=1)
    assert pf.hook_in6(inbound(other), IFACE, "in") is False  # type: ignore[arg-type]
    # an error quoting the request (from a router on the way) passes by the state ...
    err = IPv6(src=far, dst=me) / ICMPv6TimeExceeded() / req
    assert pf.hook_in6(inbound(err), IFACE, "in") is None  # type: ignore[arg-type]
    # ... one quoting a request we never sent does not
    forged = IPv6(src=far, dst=me) / ICMPv6TimeExceeded() / (
        IPv6(src=me, dst=peer) / ICMPv6EchoRequest(id=0x99))
    assert pf.hook_in6(inbound(forged), IFACE, "in") is False  # type: ignore[arg-type]
    # UDP: the datagram out makes the state, the port unreachable quoting it passes
    dgram = IPv6(src=me, dst=peer) / UDP(sport=4000, dport=9) / b"hello"
    raw = bytes(dgram)
    assert pf.hook_out6([raw[:40], raw[40:]], IFACE, "out") is None  # type: ignore[arg-type]
    unreach = IPv6(src=peer, dst=me) / ICMPv6DestUnreach(code=4) / dgram
    matched = pf.stats["state-match"]
    assert pf.hook_in6(inbound(unreach), IFACE, "in") is None  # type: ignore[arg-type]
    assert pf.stats["state-match"] == matched + 1


# -- against the kernel -------------------------------------------------------------------
class Pf6Net:
    def __init__(self, st: Any, ns: NetNS, prefix: str) -> None:
        self.st = st
        self.ns = ns
        self.prefix = prefix
        self.pfdir = Path(prefix) / "dev" / "pf"
        self.bpfdir = Path(prefix) / "dev" / "bpf"

    @property
    def pf(self) -> Pf:
        return self.st.pf  # type: ignore[no-any-return]

    async def kernel(self, *cmd: str, timeout: float = 20) -> str:
        with trio.fail_after(timeout):
            r = await trio.run_process(["ip", "netns", "exec", self.ns.name, *cmd],
                                       capture_stdout=True, capture_stderr=True, check=False)
        return (r.stdout + r.stderr).decode(errors="replace")

    async def kping6(self, count: int = 1, wait: float = 1, dst: str = S6) -> bool:
        with trio.fail_after(count * wait + 10):
            r = await trio.run_process(["ip", "netns", "exec", self.ns.name, "ping", "-6",
                                        "-n", "-c", str(count), "-W", str(wait), dst],
                                       capture_stdout=True, capture_stderr=True, check=False)
        return r.returncode == 0

    async def ping_out(self, dst: str = K6, timeout: float = 1.5) -> str:
        """The stack pings: "ok", "timeout" or the error's text."""
        try:
            await self.st.inet6.manage.ping(parse_addr(dst), timeout=timeout)
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return str(exc)
        return "ok"

    async def load(self, text: str) -> None:
        self.pf.load(text)

    async def read(self, name: str) -> str:
        return await trio.to_thread.run_sync((self.pfdir / name).read_text)

    async def flush_neighbours(self) -> None:
        self.st.inet6.manage.ndp_flush()
        await self.kernel("ip", "-6", "neigh", "flush", "dev", "tap0")


@pytest.fixture
async def pf6net(netns6: NetNS, tmp_path: Path) -> AsyncIterator[Pf6Net]:
    if not (HAVE_FUSE and HAVE_TUN):
        pytest.skip("needs root, /dev/fuse, fusermount3 and /dev/net/tun")
    from stack.l2.iface import IFF_UP

    prefix = str(tmp_path / "s")
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns6}")],
                             protocols=[("pf", ""), ("bpf", "")], prefix=prefix,
                             mount=True, inet6=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        for cmd in (["link", "set", "tap0", "up"],
                    ["addr", "add", f"{K6}/64", "dev", "tap0", "nodad"]):
            await trio.run_process(["ip", "-n", netns6.name, *cmd], capture_stderr=True)
        p = Prefix.parse(f"{S6}/64")
        st.inet6.manage.add_address("tap0", p)
        await st.inet6.manage.wait_usable("tap0", p.addr)
        net = Pf6Net(st, netns6, prefix)
        assert await net.kping6(count=1, wait=2)
        st.pf.enable()
        yield net


async def test_block_and_pass_ping6_by_rule(pf6net: Pf6Net) -> None:
    assert await pf6net.kping6()  # enabled, no rules: pass
    await pf6net.load("block in quick inet6 proto icmp6 icmp6-type echoreq\n")
    assert not await pf6net.kping6()
    assert pf6net.pf.ruleset.rules[0].packets >= 1
    assert pf6net.pf.stats["block-in"] >= 1
    # a pass rule for the kernel's address ahead of it
    await pf6net.load(f"pass in quick inet6 proto icmp6 from {K6} icmp6-type echoreq\n"
                      "block in quick inet6 proto icmp6 icmp6-type echoreq\n")
    assert await pf6net.kping6()
    rules = await pf6net.read("rules.verbose")
    assert f"@0 pass in quick inet6 proto icmp6 from {K6} to any icmp6-type echoreq" in rules
    # an inet rule never touches IPv6: block all IPv4, ping6 still answered
    await pf6net.load("block in quick inet all\n")
    assert await pf6net.kping6()


async def test_table_of_ipv6_addresses(pf6net: Pf6Net) -> None:
    await pf6net.load(f"table <bad6> {{ 2001:db8:99::/48, {K6} }}\n"
                      "block in quick inet6 proto icmp6 from <bad6> icmp6-type echoreq\n")
    assert not await pf6net.kping6()
    code = pf6net.pf.table_command("bad6", "delete", [K6])
    assert code.startswith("1/1"), code
    assert await pf6net.kping6()
    assert "2001:db8:99::/48" in pf6net.pf.table_command("bad6", "show", [])
    pf6net.pf.table_command("bad6", "add", ["2001:db8:77::/64"])
    assert not await pf6net.kping6()


ND_PASS = ("pass inet6 proto icmp6 icmp6-type { neighbrsol, neighbradv, routersol, "
           "routeradv }\n")


async def test_default_deny_needs_nd_and_keeps_echo_state(pf6net: Pf6Net) -> None:
    # without the ND rules a default deny starves Neighbor Discovery: our echo request
    # would pass by its rule, but the neighbour is never resolved
    await pf6net.flush_neighbours()
    await pf6net.load("block all\npass out inet6 proto icmp6 icmp6-type echoreq keep state\n")
    assert await pf6net.ping_out(timeout=1.5) != "ok"
    # with them: ND works, the request makes a state, the reply rides it
    await pf6net.flush_neighbours()
    await pf6net.load("block all\n" + ND_PASS +
                      "pass out inet6 proto icmp6 icmp6-type echoreq keep state\n")
    assert await pf6net.ping_out(timeout=3) == "ok"
    states = await pf6net.read("states")
    assert f"all icmp6 {S6}[" in states and f"-> {K6}[" in states, states
    assert pf6net.pf.stats["state-match"] >= 1
    # the kernel's own pings have neither state nor rule
    assert not await pf6net.kping6()
    # an ICMPv6 error about our echo request (the kernel as a router with no route)
    # passes by the state; without a state it is blocked and the ping just times out
    await pf6net.kernel("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    pf6net.st.inet6.manage.route_add(Prefix.parse("2001:db8:99::/48"), parse_addr(K6))
    got = await pf6net.ping_out("2001:db8:99::5", timeout=3)
    assert "unreachable" in got.lower(), got
    await trio.sleep(1.1)  # the kernel's ICMPv6 error rate limit (1 s)
    await pf6net.load("block all\n" + ND_PASS +
                      "pass out inet6 proto icmp6 icmp6-type echoreq no state\n")
    pf6net.pf.states.flush()
    assert await pf6net.ping_out("2001:db8:99::5", timeout=1.5) == "timeout"


async def test_block_return_rst_and_icmp6_unreachable(pf6net: Pf6Net) -> None:
    await pf6net.load("block return in quick inet6 proto tcp to port 8080\n"
                      "block return in quick inet6 proto udp to port 9999\n")
    tcp = ("import socket\ntry:\n"
           f" socket.create_connection(('{S6}', 8080), timeout=3); print('connected')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except OSError as e: print('error', e)")
    assert (await pf6net.kernel("python3", "-c", tcp)).strip() == "refused"
    udp = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
           f"s.connect(('{S6}', 9999)); s.settimeout(2); s.send(b'x')\n"
           "try:\n s.recv(10); print('data')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except socket.timeout: print('timeout')")
    assert (await pf6net.kernel("python3", "-c", udp)).strip() == "refused"
    assert pf6net.pf.stats["return-rst"] >= 1
    assert pf6net.pf.stats["return-icmp"] >= 1


async def test_log_of_ipv6_packets_read_by_tcpdump(pf6net: Pf6Net) -> None:
    await pf6net.load("block in log quick inet6 proto icmp6 icmp6-type echoreq\n")
    assert not await pf6net.kping6()
    data = await trio.to_thread.run_sync((pf6net.pfdir / "log").read_bytes)
    out = await trio.run_process(["tcpdump", "-n", "-r", "-"], stdin=data,
                                 capture_stdout=True, capture_stderr=True)
    assert f"IP6 {K6} > {S6}: ICMP6, echo request" in out.stdout.decode(), out
    assert pf6net.pf.stats["logged"] >= 1


async def test_bpf_captures_ping6_unchanged(pf6net: Pf6Net, tmp_path: Path) -> None:
    """Frames read through the bpf device (tests/pf/bpf_client.py, a tcpdump -ddd ip6
    filter by ioctl) are the IPv6 frames on the wire: tshark decodes them."""
    pf6net.pf.disable()
    ddd = subprocess.run(["tcpdump", "-y", "EN10MB", "-ddd", "icmp6"], capture_output=True,
                         text=True, check=True).stdout
    (tmp_path / "icmp6.ddd").write_text(ddd)
    client = Path(__file__).with_name("bpf_client.py")
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(client), str(pf6net.bpfdir / "clone"), "tap0", "--filter",
         str(tmp_path / "icmp6.ddd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        buf = b""
        with trio.fail_after(10):
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(1 << 16)
        assert buf.startswith(b"ready"), buf
        buf = buf.partition(b"\n")[2]
        assert await pf6net.kping6(count=2)
        assert await pf6net.ping_out() == "ok"
        await proc.stdin.send_all(b"go\n")
        with trio.fail_after(10):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some(1 << 20)
                assert chunk, buf
                buf += chunk
        res = json.loads(buf.partition(b"\n")[0])
    finally:
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    recs = [bytes.fromhex(r) for r in res["records"]]
    assert recs and all(r[12:14] == b"\x86\xdd" for r in recs)
    pcap = tmp_path / "ping6.pcap"
    import struct

    with open(pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for r in recs:
            f.write(struct.pack("<IIII", 0, 0, len(r), len(r)) + r)
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "ipv6.src",
                          "-e", "ipv6.dst", "-e", "icmpv6.type", "-e", "icmpv6.checksum.status"],
                         capture_output=True, text=True, check=True).stdout
    rows = {tuple(line.split("\t")) for line in out.splitlines()}
    # the kernel's requests and our replies, our request and its reply; checksums good
    assert (K6, S6, "128", "1") in rows and (S6, K6, "129", "1") in rows, rows
    assert (S6, K6, "128", "1") in rows and (K6, S6, "129", "1") in rows, rows
