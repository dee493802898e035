"""The tools in IPv6 (KAME/NetBSD syntax) against a real io-pkt process and its FUSE
mount, the Linux kernel as the peer in a namespace the test creates (IPv6 on there;
every address lives inside the namespace or the stack)."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import needs_fuse, needs_tun
from tests.tools.test_tools import tool_err, tool_ok

pytestmark = [needs_fuse, needs_tun]

ADDR6 = "2001:db8:77::2"
PEER6 = "2001:db8:77::1"


def wait_for(fn: object, what: str, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()  # type: ignore[operator]
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def inet6_lines(sp: object, ifname: str = "tap0") -> list[str]:
    return [ln.strip() for ln in tool_ok(sp, "ifconfig", ifname).splitlines()
            if ln.strip().startswith("inet6 ")]


def kernel_ll(ns: object) -> str:
    out = ns.run("ip", "-6", "addr", "show", "dev", "tap0", "scope", "link").stdout  # type: ignore[attr-defined]
    return out.split("inet6 ")[1].split("/")[0]


@pytest.fixture
def six(stack_process: object, netns_factory: object) -> tuple[object, object]:
    """io-pkt with tap0 in an IPv6 namespace: the stack at 2001:db8:77::2/64 (past DAD),
    the kernel at ::1 (nodad), both with their link-local addresses."""
    ns = netns_factory("v6", ipv6=True)  # type: ignore[operator]
    sp = stack_process("-d", "tap", f"name=tap0,netns={ns}")  # type: ignore[operator]
    tool_ok(sp, "ifconfig", "tap0", "up")
    ns.run("ip", "link", "set", "tap0", "up")
    ns.run("ip", "addr", "add", f"{PEER6}/64", "dev", "tap0", "nodad")
    tool_ok(sp, "ifconfig", "tap0", "inet6", ADDR6, "prefixlen", "64", "alias")
    wait_for(lambda: f"inet6 {ADDR6} prefixlen 64" in inet6_lines(sp), "DAD of the address")
    wait_for(lambda: any(ln.startswith("inet6 fe80::") and "tentative" not in ln
                         for ln in inet6_lines(sp)), "the link-local address")
    wait_for(lambda: "tentative" not in ns.run("ip", "-6", "addr", "show", "dev", "tap0").stdout,
             "the kernel's link-local address")
    return sp, ns


def test_ifconfig_ping6_ndp_with_the_kernel(six: tuple[object, object]) -> None:
    sp, ns = six
    out = tool_ok(sp, "ifconfig", "tap0")
    idx = _index(sp, "tap0")
    ll = [ln for ln in inet6_lines(sp) if ln.startswith("inet6 fe80::")]
    assert len(ll) == 1 and re.fullmatch(
        rf"inet6 fe80::[0-9a-f:]+%tap0 prefixlen 64 scopeid {idx:#x}", ll[0]), out
    assert f"\tinet6 {ADDR6} prefixlen 64\n" in out
    assert "\tnd6 options=23<PERFORMNUD,ACCEPT_RTADV,AUTO_LINKLOCAL>" in out
    only6 = tool_ok(sp, "ifconfig", "tap0", "inet6")
    assert "\tinet6 " in only6 and "\tinet " not in only6 and "address:" not in only6
    assert "pltime infty vltime infty" in tool_ok(sp, "ifconfig", "-L", "tap0")

    # ping6 to the kernel's global address: KAME's lines and statistics
    r = sp.tool("ping6", "-c", "3", "-i", "0.2", PEER6)  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"PING6(104=40+8+56 bytes) {ADDR6} --> {PEER6}", lines
    for seq in range(3):
        assert re.search(rf"^64 bytes from {PEER6}, icmp_seq={seq} hlim=64 time=\d+\.\d{{3}} ms$",
                         r.stdout, re.M), r.stdout
    assert f"--- {PEER6} ping6 statistics ---" in r.stdout
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in r.stdout
    assert re.search(r"round-trip min/avg/max/std-dev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", r.stdout)
    # size and hop limit reach the reply / the wire; ping -6 and a bare IPv6 host too
    r = sp.tool("ping6", "-c", "1", "-s", "1400", "-h", "7", PEER6)  # type: ignore[attr-defined]
    assert r.returncode == 0 and "1408 bytes from" in r.stdout, r.stdout
    for args in (["ping", "-6", "-c", "1", PEER6], ["ping", "-c", "1", PEER6]):
        r = sp.tool(*args)  # type: ignore[attr-defined]
        assert r.returncode == 0 and f"bytes from {PEER6}, icmp_seq=0" in r.stdout, r.stdout

    # the kernel's link-local, by scope (%tap0 and -I)
    kll = kernel_ll(ns)
    r = sp.tool("ping6", "-c", "2", "-i", "0.2", f"{kll}%tap0")  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    assert f"bytes from {kll}%tap0, icmp_seq=1 hlim=64" in r.stdout, r.stdout
    assert "2 packets received" in r.stdout
    assert sp.tool("ping6", "-c", "1", "-I", "tap0", kll).returncode == 0  # type: ignore[attr-defined]

    # and the kernel reaches us
    ns.run("ping", "-6", "-c", "1", "-W", "2", ADDR6)
    stack_ll = ll[0].split()[1].split("%")[0]
    ns.run("ping", "-6", "-c", "1", "-W", "2", f"{stack_ll}%tap0")

    # ndp -a: NetBSD's columns, the kernel's entries with its MAC
    kmac = ns.run("cat", "/sys/class/net/tap0/address").stdout.strip()
    out = tool_ok(sp, "ndp", "-a")
    head = out.splitlines()[0]
    assert head.split() == ["Neighbor", "Linklayer", "Address", "Netif", "Expire", "S", "Flags"]
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert rows[PEER6][1:3] == [kmac, "tap0"], out
    assert rows[PEER6][4] in ("R", "S", "D", "P"), out
    assert re.fullmatch(r"\d+s|\d+m\d+s", rows[PEER6][3]), out
    assert rows[f"{kll}%tap0"][1] == kmac, out
    assert tool_ok(sp, "ndp", PEER6).splitlines()[1].split()[:3] == [PEER6, kmac, "tap0"]
    # -s / -d / -c
    tool_ok(sp, "ndp", "-s", "2001:db8:77::50", "02:00:00:00:00:50", "proxy")
    line = [ln for ln in tool_ok(sp, "ndp", "-a").splitlines() if "2001:db8:77::50" in ln][0]
    assert line.split()[1:] == ["02:00:00:00:00:50", "tap0", "permanent", "R", "p"], line
    assert tool_ok(sp, "ndp", "-d", "2001:db8:77::50").strip() == \
        "2001:db8:77::50 (2001:db8:77::50) deleted"
    assert "2001:db8:77::50" not in tool_ok(sp, "ndp", "-a")
    flushed = tool_ok(sp, "ndp", "-c")
    assert f"{PEER6} ({PEER6}) deleted" in flushed
    assert PEER6 not in tool_ok(sp, "ndp", "-a")
    assert sp.tool("ping6", "-c", "1", PEER6).returncode == 0  # type: ignore[attr-defined]
    assert PEER6 in tool_ok(sp, "ndp", "-a")  # resolved again

    # ndp -i: the interface's ND state and switches, shared with ifconfig
    out = tool_ok(sp, "ndp", "-i", "tap0")
    assert out.startswith("linkmtu=1500, maxmtu=1500, curhlim=64, basereachable=30s0ms")
    assert out.splitlines()[1] == "Flags: PERFORMNUD ACCEPT_RTADV AUTO_LINKLOCAL"
    out = tool_ok(sp, "ndp", "-i", "tap0", "-accept_rtadv")
    assert out.splitlines()[1] == "Flags: PERFORMNUD AUTO_LINKLOCAL"
    assert "nd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>" in tool_ok(sp, "ifconfig", "tap0")
    tool_ok(sp, "ifconfig", "tap0", "inet6", "accept_rtadv", "-auto_linklocal")
    assert tool_ok(sp, "ndp", "-i", "tap0").splitlines()[1] == "Flags: PERFORMNUD ACCEPT_RTADV"

    # statistics: the IPv6 sections, and -f inet6 alone
    st = tool_ok(sp, "netstat", "-s")
    assert "\nip:" in "\n" + st and "\nip6:" in st and "\nicmp6:" in st and "\nnd6:" in st
    six_only = tool_ok(sp, "netstat", "-s", "-f", "inet6")
    sections = [ln[:-1] for ln in six_only.splitlines() if not ln.startswith("\t")]
    assert {"ip6", "icmp6", "nd6", "mld6"} <= set(sections) and "ip" not in sections, sections
    icmp6 = tool_ok(sp, "netstat", "-s", "-p", "icmp6")
    counts = {ln.split(None, 1)[1]: int(ln.split(None, 1)[0]) for ln in icmp6.splitlines()[1:]}
    assert counts["in echo reply"] >= 9 and counts["in echo"] >= 2, icmp6
    assert re.search(rf"^tap0 +1500 +2001:db8:77::/64 +{ADDR6} ", tool_ok(sp, "netstat", "-i"),
                     re.M)
    assert "Active Internet6 connections" in tool_ok(sp, "netstat", "-an", "-f", "inet6")

    # an address that does not answer, a network without a route: ping's exit 2
    r = sp.tool("ping6", "-c", "1", "-W", "0.5", "2001:db8:77::99", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 2 and "1 packets transmitted, 0 packets received" in r.stdout, r
    r = sp.tool("ping6", "-c", "1", "2001:db8:99::1", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 2 and "Network is unreachable" in r.stderr, r


def _index(sp: object, ifname: str) -> int:
    text = open(f"{sp.prefix}/dev/socket/config/interfaces").read()  # type: ignore[attr-defined]
    stanza = text.split(f"{ifname}:\n", 1)[1]
    return int(stanza.split("\tindex ", 1)[1].split()[0])


def test_routes_inet6(six: tuple[object, object]) -> None:
    sp, ns = six
    # a network behind the kernel, reachable only by a route through it
    ns.run("ip", "-6", "addr", "add", "2001:db8:99::1/128", "dev", "lo")
    out = tool_ok(sp, "route", "add", "-inet6", "2001:db8:99::/48", PEER6)
    assert out.strip() == f"add net 2001:db8:99::/48: gateway {PEER6}"
    assert sp.tool("ping6", "-c", "1", "2001:db8:99::1").returncode == 0  # type: ignore[attr-defined]
    kll = kernel_ll(ns)
    tool_ok(sp, "route", "add", "-inet6", "2001:db8:9::/48", f"{kll}%tap0")
    tool_ok(sp, "route", "add", "-inet6", "default", PEER6)
    show = tool_ok(sp, "route", "show", "-inet6")
    assert "Internet6:" in show and "Internet:" not in show
    rows = [ln.split() for ln in show.splitlines()]
    assert ["2001:db8:99::/48", PEER6, "UGS", "0", "1", "-", "tap0"] in rows, show
    assert ["2001:db8:9::/48", f"{kll}%tap0", "UGS", "0", "0", "-", "tap0"] in rows, show
    assert ["default", PEER6, "UGS", "0", "0", "-", "tap0"] in rows, show
    assert any(r[:3] == ["2001:db8:77::/64", "link", "UC"] for r in rows), show
    both = tool_ok(sp, "netstat", "-rn")
    assert "Internet:" in both and "Internet6:" in both
    assert tool_ok(sp, "netstat", "-rn", "-f", "inet6") == show
    get = tool_ok(sp, "route", "get", "-inet6", "2001:db8:9::5")
    assert f"gateway: {kll}%tap0" in get and "interface: tap0" in get
    assert "destination: 2001:db8:9::" in get and "mask: ffff:ffff:ffff::" in get
    assert f"if address: {ADDR6}" in get
    get = tool_ok(sp, "route", "get", "2001:db8:1234::1")  # the default route
    assert f"gateway: {PEER6}" in get and "destination: default" in get
    # delete by gateway with its scope, then flush only IPv6's static routes
    out = tool_ok(sp, "route", "delete", "-inet6", "2001:db8:9::/48", f"{kll}%tap0")
    assert out.strip() == f"delete net 2001:db8:9::/48: gateway {kll}%tap0"
    tool_ok(sp, "ifconfig", "tap0", "10.78.0.2/24")
    tool_ok(sp, "route", "add", "10.79.0.0/16", "10.78.0.1")
    assert "flushed 2 routes" in tool_ok(sp, "route", "flush", "-inet6")
    show = tool_ok(sp, "netstat", "-rn")
    assert "2001:db8:99::/48" not in show and "10.79.0.0/16" in show
    assert "2001:db8:77::/64" in show  # connected routes stay
    r = sp.tool("ping6", "-c", "1", "-W", "0.5", "2001:db8:99::1", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 2
    # errors: one line each, a message saying what was wrong
    assert "is link-local: give its interface" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8:8::/48", "fe80::1")
    assert "bad address: 2001:db8::zz" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8::zz/48", PEER6)
    assert "bad prefix length: 129" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8:8::/129", PEER6)
    assert "no such interface: tap9" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8:8::/48", "fe80::1%tap9")
    assert "not on a connected network" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8:8::/48", "2001:db8:5::1")
    assert "no route" in tool_err(sp, "route", "delete", "-inet6", "2001:db8:8::/48")
    assert "not an IPv6 address" in tool_err(
        sp, "route", "add", "-inet6", "2001:db8:8::/48", "10.78.0.1")


def test_dad_flags_in_ifconfig(six: tuple[object, object]) -> None:
    sp, ns = six
    # three probes 1 s apart: the address is tentative for ~3 s
    assert tool_ok(sp, "sysctl", "-w", "net.inet6.ip6.dad_count=3").strip() == \
        "net.inet6.ip6.dad_count: 1 -> 3"
    ns.run("ip", "addr", "add", "2001:db8:77::7/64", "dev", "tap0", "nodad")
    tool_ok(sp, "ifconfig", "tap0", "inet6", "2001:db8:77::7/64")
    tool_ok(sp, "ifconfig", "tap0", "inet6", "2001:db8:77::8", "prefixlen", "64", "alias")
    assert "inet6 2001:db8:77::8 prefixlen 64 tentative" in inet6_lines(sp)
    wait_for(lambda: "inet6 2001:db8:77::7 prefixlen 64 duplicated" in inet6_lines(sp),
             "DAD to fail for the kernel's address")
    wait_for(lambda: "inet6 2001:db8:77::8 prefixlen 64" in inet6_lines(sp),
             "DAD to pass for the other address")
    stats = tool_ok(sp, "netstat", "-s", "-p", "ip6")
    assert re.search(r"^\t1 addr duplicated$", stats, re.M), stats
    # the duplicate is not used: the kernel's ping to it is answered by the kernel alone
    r = sp.tool("ping6", "-c", "1", "-W", "1", "-S", "2001:db8:77::7", PEER6, check=False)  # type: ignore[attr-defined]
    assert r.returncode != 0
    # delete / -alias, and the errors
    tool_ok(sp, "ifconfig", "tap0", "inet6", "2001:db8:77::7", "delete")
    tool_ok(sp, "ifconfig", "tap0", "inet6", "2001:db8:77::8", "-alias")
    assert not any("2001:db8:77::7 " in ln or "2001:db8:77::8 " in ln for ln in inet6_lines(sp))
    assert "is not an address of tap0" in tool_err(sp, "ifconfig", "tap0", "inet6",
                                                   "2001:db8:77::8", "delete")
    assert "bad address" in tool_err(sp, "ifconfig", "tap0", "inet6", "2001:db8::g")
    assert "bad prefix length: 129" in tool_err(sp, "ifconfig", "tap0", "inet6",
                                                "2001:db8::9", "prefixlen", "129")
    assert "bad prefix length" in tool_err(sp, "ifconfig", "tap0", "inet6", "2001:db8::9/x")
    assert "not an IPv6 address" in tool_err(sp, "ifconfig", "tap0", "inet6", "10.1.1.1")
    assert "already on tap0" in tool_err(sp, "ifconfig", "tap0", "inet6", f"{ADDR6}/64")
    assert tool_err(sp, "ifconfig", "tap9", "inet6", "2001:db8::9") == \
        "ifconfig: no such interface: tap9"
    assert "scope %tap1 is not tap0" in tool_err(sp, "ifconfig", "tap0", "inet6",
                                                 "fe80::9%tap1")
    assert "not a unicast address" in tool_err(sp, "ifconfig", "tap0", "inet6", "ff02::1")


def test_sysctl_inet6_and_rtadvd(six: tuple[object, object]) -> None:
    sp, ns = six
    out = tool_ok(sp, "sysctl", "net.inet6")
    names = [ln.split(" = ")[0] for ln in out.splitlines()]
    assert names == sorted(names) and all(n.startswith("net.inet6.") for n in names)
    assert {"net.inet6.ip6.forwarding", "net.inet6.ip6.accept_rtadv", "net.inet6.ip6.hlim",
            "net.inet6.icmp6.errppslimit"} <= set(names)
    assert "net.inet.ip.forwarding" not in names
    assert tool_ok(sp, "sysctl", "-n", "net.inet6.ip6.hlim").strip() == "64"
    tool_ok(sp, "sysctl", "-w", "net.inet6.ip6.hlim=33")
    ns.run("ip", "neigh", "flush", "dev", "tap0")
    assert "ttl=33" in ns.run("ping", "-6", "-c", "1", "-W", "2", ADDR6).stdout
    assert "out of range" in tool_err(sp, "sysctl", "-w", "net.inet6.ip6.hlim=300")

    # rtadvd before router mode: enabled, waiting
    out = tool_ok(sp, "rtadvd", "-p", "2001:db8:aa::/64", "-m", "1400", "-d", PEER6,
                  "-i", "4", "-l", "30", "tap0")
    assert out.strip() == "enabled tap0 (advertisements start when net.inet6.ip6.forwarding=1)"
    status = tool_ok(sp, "rtadvd")
    assert status.startswith("tap0:\n\tstate waiting\n\tmtu 1400\n\tprefix 2001:db8:aa::/64\n"
                             f"\trdnss {PEER6}\n\tlifetime 30\n\tinterval 4\n"), status
    tool_ok(sp, "sysctl", "-w", "net.inet6.ip6.forwarding=1")
    assert "\tstate advertising\n" in tool_ok(sp, "rtadvd")
    # the kernel (a host accepting RAs) autoconfigures from our advertisement
    wait_for(lambda: "2001:db8:aa:" in ns.run("ip", "-6", "addr", "show", "dev", "tap0").stdout,
             "the kernel's SLAAC address from the stack's RA", timeout=15)
    route = wait_for(lambda: ns.run("ip", "-6", "route", "show", "default").stdout.strip(),
                     "the kernel's default route via the stack")
    assert "dev tap0" in str(route) and "via fe80::" in str(route)
    assert "mtu 1400" in ns.run("ip", "-6", "route", "show", "2001:db8:aa::/64").stdout or \
        ns.run("cat", "/proc/sys/net/ipv6/conf/tap0/mtu").stdout.strip() == "1400"
    # stopping sends a final RA with router lifetime 0: the kernel drops the router
    assert tool_ok(sp, "rtadvd", "-s", "tap0").strip() == "disabled tap0"
    wait_for(lambda: not ns.run("ip", "-6", "route", "show", "default").stdout.strip(),
             "the kernel to drop the default route")
    assert tool_ok(sp, "rtadvd") == ""
    # errors
    assert "not advertising on tap0" in tool_err(sp, "rtadvd", "-s", "tap0")
    assert "no such interface: tap9" in tool_err(sp, "rtadvd", "tap9")
    assert "interval 2 out of range" in tool_err(sp, "rtadvd", "-i", "2", "tap0")
    assert "give its length" in tool_err(sp, "rtadvd", "-p", "2001:db8:aa::", "tap0")
    assert "not a global unicast prefix" in tool_err(sp, "rtadvd", "-p", "fe80::/64", "tap0")
    assert "the advertised MTU must be between 1280" in tool_err(sp, "rtadvd", "-m", "9000",
                                                                   "tap0")
    assert "below the interval" in tool_err(sp, "rtadvd", "-i", "600", "-l", "60", "tap0")
    assert "unknown option -Z" in tool_err(sp, "rtadvd", "-Z", "tap0")


def test_inet6_usage_errors(six: tuple[object, object], tmp_path: object) -> None:
    sp, _ = six
    assert "unknown option -Z" in tool_err(sp, "ndp", "-Z")
    assert "no entry" in tool_err(sp, "ndp", "2001:db8:77::42")
    assert "no ND entry" in tool_err(sp, "ndp", "-d", "2001:db8:77::42")
    assert "bad MAC address" in tool_err(sp, "ndp", "-s", "2001:db8:77::42", "zz")
    assert "is link-local: give its interface" in tool_err(sp, "ndp", "-s", "fe80::42",
                                                           "02:00:00:00:00:42")
    assert "no such interface: tap9" in tool_err(sp, "ndp", "-i", "tap9")
    assert "unsupported ND flag" in tool_err(sp, "ndp", "-i", "tap0", "nud")
    assert "unknown option -Z" in tool_err(sp, "ping6", "-Z", PEER6)
    assert "numeric IPv6" in tool_err(sp, "ping6", "-c", "1", "nosuchhost")
    assert "is link-local: give its interface" in tool_err(sp, "ping6", "fe80::1")
    assert "no such interface: tap9" in tool_err(sp, "ping6", "-c", "1", "fe80::1%tap9")
    assert "bad hop limit" in tool_err(sp, "ping6", "-h", "x", PEER6)
    assert "unknown address family" in tool_err(sp, "netstat", "-s", "-f", "inet7")
    assert "unknown option -Z" in tool_err(sp, "route", "show", "-Z")
    nowhere = f"--prefix={tmp_path}/nothing"
    for args in (["ndp", "-a"], ["ping6", "-c", "1", PEER6], ["rtadvd"]):
        assert "no io-pkt stack at" in tool_err(sp, *args, nowhere)
