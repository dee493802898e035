"""The Linux kernel as the peer: pings both ways (with fragmentation), a router between
two namespaces, ARP against the kernel, scapy-crafted fragments and malformed headers
from inside the namespace. Every address lives in a namespace the test creates."""

from __future__ import annotations

import errno
import subprocess

import pytest
import trio

from stack.core import Stack
from stack.l2.iface import IFF_UP, format_mac
from tests.conftest import NetNS, needs_tun, running_stack
from tests.inet.conftest import VENV_PY

pytestmark = [needs_tun, pytest.mark.root]


async def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(list(cmd), capture_stdout=True, capture_stderr=True,
                                  check=check)


async def nsrun(ns: NetNS, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await run("ip", "netns", "exec", ns.name, *cmd, check=check)


async def link(st: Stack, ns: NetNS, ifname: str, stack_cidr: str, kernel_cidr: str) -> None:
    st.interfaces[ifname].set_flags(IFF_UP)
    st.inet.add_address(ifname, stack_cidr)
    await run("ip", "-n", ns.name, "addr", "add", kernel_cidr, "dev", ifname)
    await run("ip", "-n", ns.name, "link", "set", ifname, "up")


async def kping(ns: NetNS, dst: str, *args: str) -> str:
    r = await nsrun(ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", *args, dst, check=False)
    return r.stdout.decode() + r.stderr.decode()


async def test_pings_both_ways_with_fragmentation(netns: NetNS) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
        await link(st, netns, "tap0", "10.9.0.2/24", "10.9.0.1/24")
        for size in ("56", "4000"):
            out = await kping(netns, "10.9.0.2", "-s", size)
            assert " 0% packet loss" in out, out
        assert st.inet.reass.counters["reassembled"] >= 3  # the kernel's 4000-byte pings
        assert st.inet.counters["out_fragmented"] >= 3  # and our replies
        for size in (56, 4000):
            rtt = await st.inet.ping("10.9.0.1", size=size, timeout=2)
            assert 0 < rtt < 1
        assert st.inet.reass.counters["reassembled"] >= 4  # the kernel's reply


async def test_router_between_two_namespaces(netns_factory) -> None:
    a, b = netns_factory("ra"), netns_factory("rb")
    async with running_stack(drivers=[("tap", f"name=tap0,netns={a}"),
                                      ("tap", f"name=tap1,netns={b}")],
                             tcpip="forward") as st:
        assert st.sysctl["net.inet.ip.forwarding"] == 1
        await link(st, a, "tap0", "10.1.0.254/24", "10.1.0.1/24")
        await link(st, b, "tap1", "10.2.0.254/24", "10.2.0.1/24")
        await run("ip", "-n", a.name, "route", "add", "default", "via", "10.1.0.254")
        await run("ip", "-n", b.name, "route", "add", "default", "via", "10.2.0.254")
        ff = st.l2.fastfwd
        out = await kping(a, "10.2.0.1")
        assert " 0% packet loss" in out, out
        # the first packets of each direction were forwarded by the IP layer, which
        # filled the flow cache; later ones were forwarded from it at layer 2
        assert ff.lookup(0x0A020001) is not None  # 10.2.0.1, the echo requests
        assert ff.lookup(0x0A010001) is not None  # 10.1.0.1, the replies
        assert ff.counters["forwarded"] >= 1, dict(ff.counters)
        assert st.l2.counters["fastforwarded"] == ff.counters["forwarded"]
        before = ff.counters["forwarded"]
        out = await kping(a, "10.2.0.1")  # both flows cached: forwarded from the cache
        assert " 0% packet loss" in out, out
        assert ff.counters["forwarded"] >= before + 1, dict(ff.counters)
        out = await kping(b, "10.1.0.1", "-s", "3000")  # fragments forwarded as they are
        assert " 0% packet loss" in out, out
        assert st.inet.counters["forwarded"] >= 4
        out = await kping(a, "10.2.0.1", "-t", "1")
        assert "Time to live exceeded" in out and "10.1.0.254" in out, out
        assert st.inet.counters["drop_ttl_exceeded"] >= 1
        # no route: the stack answers "net unreachable"
        out = await kping(a, "10.77.0.1")
        assert "Destination Net Unreachable" in out, out
        # forwarding off: nothing crosses
        st.sysctl.set("net.inet.ip.forwarding", "0")
        out = await kping(a, "10.2.0.1")
        assert "100% packet loss" in out, out


async def test_arp_resolution_failure_and_static(netns: NetNS) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
        await link(st, netns, "tap0", "10.9.0.2/24", "10.9.0.1/24")
        tap = st.interfaces["tap0"]
        kmac = format_mac(tap.peer_mac)  # type: ignore[attr-defined]
        # the stack resolves the kernel
        await st.inet.ping("10.9.0.1", timeout=2)
        ent = [e for e in st.inet.arp_list() if e["address"] == "10.9.0.1"]
        assert ent and ent[0]["mac"] == kmac and ent[0]["state"] == "reachable"
        # the kernel resolved the stack
        neigh = (await nsrun(netns, "ip", "neigh", "show", "10.9.0.2")).stdout.decode()
        assert format_mac(tap.mac) in neigh, neigh
        # failure: nobody has 10.9.0.99
        st.sysctl.set("net.inet.arp.rexmit_ms", "200")
        with trio.fail_after(5):
            with pytest.raises(OSError) as e:
                await st.inet.ping("10.9.0.99", timeout=4)
        assert e.value.errno == errno.EHOSTUNREACH
        assert st.inet.arp.counters["resolve_failed"] == 1
        assert st.inet.arp.counters["drop_unresolved"] >= 1
        # static: no request goes out, and pings work
        st.inet.arp_delete("10.9.0.1")
        st.inet.arp_set("10.9.0.1", kmac)
        before = st.inet.arp.counters["out_request"]
        await st.inet.ping("10.9.0.1", timeout=2)
        assert st.inet.arp.counters["out_request"] == before
        assert "permanent" in st.inet.render_arp()


SCAPY = "from scapy.all import *\nconf.verb = 0\n"


async def scapy_in(ns: NetNS, body: str) -> None:
    r = await nsrun(ns, VENV_PY, "-c", SCAPY + body, check=False)
    assert r.returncode == 0, r.stderr.decode()


async def test_crafted_fragments(netns: NetNS) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
        await link(st, netns, "tap0", "10.9.0.2/24", "10.9.0.1/24")
        st.sysctl.set("net.inet.ip.fragttl", "1")
        tap = st.interfaces["tap0"]
        await st.inet.ping("10.9.0.1", timeout=2)  # both sides know each other now
        await scapy_in(netns, f"""
E = Ether(src='{format_mac(tap.peer_mac)}', dst='{format_mac(tap.mac)}')
def echo(i, n):
    return IP(src='10.9.0.1', dst='10.9.0.2', id=i) / ICMP(id=i, seq=1) / (b'Q' * n)
go = lambda frs: sendp([E / f for f in frs], iface='tap0')
# what the kernel receives back: the two echo replies and, 1 s on, time exceeded
sn = AsyncSniffer(iface='tap0', filter='icmp and src 10.9.0.2')
sn.start()
time.sleep(0.3)
fr = fragment(echo(101, 3000), fragsize=1000)
go(list(reversed(fr)))                       # out of order
fr = fragment(echo(102, 3000), fragsize=1000)
go([fr[0], fr[1], fr[1], fr[0], fr[2], fr[3]])  # duplicates
fr = fragment(echo(103, 3000), fragsize=1000)
o = IP(bytes(fr[1])); o.frag -= 16; del o.chksum
go([fr[0], o, fr[1], fr[2], fr[3]])          # overlapping
fr = fragment(echo(104, 3000), fragsize=1000)
go([fr[0], fr[2]])                           # never completed
time.sleep(2.5)
got = [IP(bytes(p[IP])) for p in sn.stop()]
got = [(p[ICMP].type, p[ICMP].code, p) for p in defragment(got) if ICMP in p]
seen = [(t, c, p.summary()) for t, c, p in got]
replies = sorted(p[ICMP].id for t, c, p in got if t == 0)
assert replies == [101, 102] and all(len(p[ICMP].payload) == 3000 for t, c, p in got if t == 0), seen
te = [p for t, c, p in got if (t, c) == (11, 1)]
assert len(te) == 1, seen
q = te[0][IPerror]   # the quoted header is the first fragment of datagram 104
assert q.id == 104 and q.frag == 0 and q.src == '10.9.0.1' and q.flags.MF, q.show(dump=True)
assert te[0][ICMPerror].id == 104, q.show(dump=True)  # and 8 bytes beyond it (RFC 792)
""")
        rc = st.inet.reass.counters
        with trio.move_on_after(3):
            while rc["frag_timeout"] < 1:
                await trio.sleep(0.05)
        assert rc["reassembled"] == 2  # out of order, duplicates
        assert rc["frag_duplicate"] == 2
        assert rc["frag_overlap"] == 1
        assert rc["frag_timeout"] == 1
        assert st.inet.icmp.counters["out_echo_reply"] == 2
        assert st.inet.icmp.counters["out_error_11_1"] == 1  # reassembly time exceeded


async def test_malformed_corpus_while_ping_works(netns: NetNS) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")]) as st:
        await link(st, netns, "tap0", "10.9.0.2/24", "10.9.0.1/24")
        tap = st.interfaces["tap0"]
        await st.inet.ping("10.9.0.1", timeout=2)
        await scapy_in(netns, f"""
E = Ether(src='{format_mac(tap.peer_mac)}', dst='{format_mac(tap.mac)}', type=0x800)
ok = IP(src='10.9.0.1', dst='10.9.0.2') / ICMP() / b'corpus'
raw = bytes(ok)
bad = [
    bytes(IP(bytes(ok))).replace(raw[10:12], bytes([raw[10] ^ 0xff, raw[11]]), 1),  # checksum
    b'\\x65' + raw[1:],                         # version 6 in an IPv4 frame
    b'\\x43' + raw[1:],                         # header length 12
    raw[:2] + (10).to_bytes(2, 'big') + raw[4:],  # total length < header
    raw[:2] + (900).to_bytes(2, 'big') + raw[4:],  # total length > frame
    raw[:12],                                   # truncated header
]
sendp([E / Raw(b) for b in bad], iface='tap0')
""")
        c = st.inet.counters
        with trio.move_on_after(2):
            while c["drop_truncated"] < 2:
                await trio.sleep(0.05)
        # total-length bytes changed without fixing the checksum: those count as bad
        # lengths/truncation first (validation order: version, ihl, lengths, checksum)
        assert c["drop_bad_checksum"] == 1
        assert c["drop_bad_version"] == 1
        assert c["drop_bad_header_length"] == 1
        assert c["drop_bad_length"] == 1
        assert c["drop_truncated"] == 2
        out = await kping(netns, "10.9.0.2")
        assert " 0% packet loss" in out, out
