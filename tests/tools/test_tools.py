"""The tools against a real io-pkt process, the kernel as the peer in a namespace the test
creates (every address lives inside a namespace)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import IO_PKT, REPO, io_pkt_env, needs_fuse, needs_tun

pytestmark = [needs_fuse, needs_tun]

ADDR = "10.77.0.2"
PEER = "10.77.0.1"


def tool_ok(sp: object, *args: str) -> str:
    return sp.tool(*args).stdout  # type: ignore[attr-defined,no-any-return]


def tool_err(sp: object, *args: str) -> str:
    """Run a tool that must fail: exit 1, exactly one line on stderr, named by tool, and
    nothing on stdout."""
    r = sp.tool(*args, check=False)  # type: ignore[attr-defined]
    assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", (args, r.stdout)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, (args, r.stderr)
    assert lines[0].startswith(f"{args[0]}: "), lines
    return lines[0]


def wait_listening(dump: subprocess.Popen[str]) -> None:
    """tcpdump prints "listening on" to stderr once its capture is open."""
    assert dump.stderr is not None
    line = dump.stderr.readline()
    assert "listening on" in line, line


def peer_up(ns: object, ifname: str, cidr: str) -> None:
    ns.run("ip", "addr", "add", cidr, "dev", ifname)  # type: ignore[attr-defined]
    ns.run("ip", "link", "set", ifname, "up")  # type: ignore[attr-defined]


@pytest.fixture
def one(stack_process: object, netns: object) -> tuple[object, object]:
    """io-pkt with tap0 inside ``netns``, the stack at 10.77.0.2, the kernel at .1."""
    sp = stack_process("-d", "tap", f"name=tap0,netns={netns}")  # type: ignore[operator]
    tool_ok(sp, "ifconfig", "tap0", f"{ADDR}/24", "up")
    peer_up(netns, "tap0", f"{PEER}/24")
    return sp, netns


def test_ifconfig_address_ping_arp(one: tuple[object, object]) -> None:
    sp, ns = one
    out = tool_ok(sp, "ifconfig", "tap0")
    assert out.startswith("tap0: flags=") and "UP" in out and "mtu 1500" in out
    assert f"inet {ADDR} netmask 0xffffff00 broadcast 10.77.0.255" in out
    # the kernel reaches the address, the stack reaches the kernel
    ns.run("ping", "-c", "1", "-W", "2", ADDR)  # type: ignore[attr-defined]
    r = sp.tool("ping", "-c", "3", "-i", "0.2", PEER)  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    assert f"bytes from {PEER}: icmp_seq=0 ttl=64 time=" in r.stdout
    assert f"--- {PEER} ping statistics ---" in r.stdout
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in r.stdout
    assert "round-trip min/avg/max/stddev = " in r.stdout
    kmac = ns.run("cat", "/sys/class/net/tap0/address").stdout.strip()  # type: ignore[attr-defined]
    assert f"? ({PEER}) at {kmac} on tap0" in tool_ok(sp, "arp", "-a")
    # ttl and size reach the wire: the kernel sees TTL 9 and 1428 bytes of IP; 1408 back
    dump = ns.popen("tcpdump", "-n", "-v", "-l", "--immediate-mode", "-c", "1", "-i", "tap0",  # type: ignore[attr-defined]
                    f"icmp[icmptype] == icmp-echo and src {ADDR}",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(dump)
        r = sp.tool("ping", "-c", "1", "-s", "1400", "-T", "9", PEER)  # type: ignore[attr-defined]
        seen, _ = dump.communicate(timeout=10)
    finally:
        dump.kill()
        dump.wait()
    assert "1408 bytes from" in r.stdout
    assert "ttl 9," in seen and "length 1428)" in seen, seen
    # alias / -alias / mtu / down
    tool_ok(sp, "ifconfig", "tap0", "inet", "10.77.0.9", "netmask", "255.255.255.0", "alias")
    tool_ok(sp, "ifconfig", "tap0", "mtu", "1400")
    out = tool_ok(sp, "ifconfig", "tap0")
    assert "inet 10.77.0.9 netmask 0xffffff00" in out and "mtu 1400" in out
    ns.run("ping", "-c", "1", "-W", "2", "10.77.0.9")  # type: ignore[attr-defined]
    tool_ok(sp, "ifconfig", "tap0", "10.77.0.9", "-alias")
    assert "10.77.0.9" not in tool_ok(sp, "ifconfig", "tap0")
    # replacing the first address (no alias) keeps one address
    tool_ok(sp, "ifconfig", "tap0", "10.77.0.3/24")
    out = tool_ok(sp, "ifconfig", "tap0")
    assert "inet 10.77.0.3 " in out and f"inet {ADDR} " not in out
    tool_ok(sp, "ifconfig", "tap0", "down")
    assert "UP" not in tool_ok(sp, "ifconfig", "tap0").split(">")[0]
    # arp -s / -d
    tool_ok(sp, "ifconfig", "tap0", "up")
    tool_ok(sp, "arp", "-s", "10.77.0.50", "02:00:00:00:00:50")
    assert "? (10.77.0.50) at 02:00:00:00:00:50 on tap0 permanent" in tool_ok(sp, "arp", "-a")
    assert "deleted" in tool_ok(sp, "arp", "-d", "10.77.0.50")
    assert "10.77.0.50" not in tool_ok(sp, "arp", "-a")
    # per-interface and per-protocol counters moved
    nic = {ln.split(" .")[0].strip(): ln.rsplit(" ", 1)[-1]
           for ln in tool_ok(sp, "nicinfo", "tap0").splitlines() if " .." in ln}
    # the labels are printed even at zero: the values are what must have moved
    assert int(nic["Packets Received OK"]) >= 5, nic  # >= 4 echo replies + 1 request
    assert int(nic["Packets Transmitted OK"]) >= 5, nic
    assert int(nic["Bytes Received OK"]) > 1400, nic
    stats = tool_ok(sp, "netstat", "-s", "-p", "icmp")
    assert stats.startswith("icmp:"), stats
    icmp = {ln.split(None, 1)[1]: int(ln.split(None, 1)[0]) for ln in stats.splitlines()[1:]}
    # the kernel's answers to the stack's 3 + 1 pings (ping's requests leave through its
    # raw ICMP socket, which the ICMP layer's output counters do not see, as on BSD)
    assert icmp.get("in echo reply", 0) >= 4, stats
    assert icmp.get("out echo reply", 0) >= 2, stats  # the kernel's pings of tap0's addresses
    assert "tap0" in tool_ok(sp, "netstat", "-i")


def test_route_used_by_traffic_and_monitor(one: tuple[object, object]) -> None:
    sp, ns = one
    # a network behind the kernel: only reachable through a route via 10.77.0.1
    ns.run("ip", "addr", "add", "10.99.0.1/32", "dev", "lo")  # type: ignore[attr-defined]
    mon = subprocess.Popen(IO_PKT + ["route", "monitor", "-c", "2"], cwd=REPO,
                           env=io_pkt_env(SOCK=sp.prefix),  # type: ignore[attr-defined]
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the monitor has its file open
        r = sp.tool("ping", "-c", "1", "-W", "0.5", "10.99.0.1", check=False)  # type: ignore[attr-defined]
        assert r.returncode == 2 and "Network is unreachable" in r.stderr
        out = tool_ok(sp, "route", "add", "-net", "10.99.0.0/16", PEER, "-metric", "5")
        assert out.strip() == f"add net 10.99.0.0/16: gateway {PEER}"
        assert sp.tool("ping", "-c", "1", "10.99.0.1").returncode == 0  # type: ignore[attr-defined]
        get = tool_ok(sp, "route", "get", "10.99.1.2")
        assert f"gateway: {PEER}" in get and "interface: tap0" in get
        assert "destination: 10.99.0.0" in get and "mask: 255.255.0.0" in get
        show = tool_ok(sp, "netstat", "-rn")
        assert any(ln.split()[:3] == ["10.99.0.0/16", PEER, "UGS"] for ln in show.splitlines())
        tool_ok(sp, "route", "change", "10.99.0.0/16", PEER, "-metric", "7")
        assert any(ln.split()[:4] == ["10.99.0.0/16", PEER, "UGS", "7"]
                   for ln in tool_ok(sp, "route", "show").splitlines())
        out, err = mon.communicate(timeout=10)
        assert "RTM_ADD: dst 10.99.0.0/16 gateway 10.77.0.1 if tap0 metric 5" in out, (out, err)
        assert "RTM_CHANGE: dst 10.99.0.0/16" in out
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.communicate()
    tool_ok(sp, "route", "add", "default", PEER)
    assert "flushed 2 routes" in tool_ok(sp, "route", "flush")
    assert "10.99.0.0/16" not in tool_ok(sp, "route", "show")
    assert "10.77.0.0/24" in tool_ok(sp, "route", "show")  # connected routes stay


def test_sysctl_forwarding_changes_behaviour(stack_process: object, netns_factory: object) -> None:
    a, b = netns_factory("fa"), netns_factory("fb")  # type: ignore[operator]
    sp = stack_process("-d", "tap", f"name=tap0,netns={a}",  # type: ignore[operator]
                       "-d", "tap", f"name=tap1,netns={b}")
    tool_ok(sp, "ifconfig", "tap0", "10.81.0.2/24", "up")
    tool_ok(sp, "ifconfig", "tap1", "10.82.0.2/24", "up")
    peer_up(a, "tap0", "10.81.0.1/24")
    peer_up(b, "tap1", "10.82.0.1/24")
    a.run("ip", "route", "add", "default", "via", "10.81.0.2")
    b.run("ip", "route", "add", "default", "via", "10.82.0.2")
    assert tool_ok(sp, "sysctl", "-n", "net.inet.ip.forwarding").strip() == "0"
    assert a.run("ping", "-c", "1", "-W", "1", "10.82.0.1", check=False).returncode != 0
    out = tool_ok(sp, "sysctl", "-w", "net.inet.ip.forwarding=1")
    assert out.strip() == "net.inet.ip.forwarding: 0 -> 1"
    a.run("ping", "-c", "2", "-W", "2", "10.82.0.1")
    assert "net.inet.ip.forwarding = 1" in tool_ok(sp, "sysctl", "net.inet.ip")
    assert "net.inet.ip.forwarding = 1" in tool_ok(sp, "sysctl", "-a")
    assert tool_ok(sp, "sysctl", "net.inet.ip.forwarding=0").strip().endswith("1 -> 0")
    assert a.run("ping", "-c", "1", "-W", "1", "10.82.0.1", check=False).returncode != 0


_CLIENT = ("import socket,sys,time; s=socket.create_connection((sys.argv[1],int(sys.argv[2])),5);"
           " print('up', flush=True); time.sleep(20)")


def test_netstat_listen_and_established(one: tuple[object, object]) -> None:
    sp, ns = one
    clone = f"{sp.prefix}/dev/socket/tcp/clone"  # type: ignore[attr-defined]
    if not os.path.exists(clone):
        pytest.skip("the text door (tcp/clone) is not in this build")
    fd = os.open(clone, os.O_RDWR)
    client = None
    try:
        os.write(fd, b"announce 8080")
        out = tool_ok(sp, "netstat", "-an")
        assert any(ln.split()[0] == "tcp" and ln.split()[3] == "*.8080" and ln.split()[-1] == "LISTEN"
                   for ln in out.splitlines()[2:]), out
        assert "8080" not in tool_ok(sp, "netstat", "-n")  # listeners only with -a
        client = ns.popen(sys.executable, "-c", _CLIENT, ADDR, "8080",  # type: ignore[attr-defined]
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert client.stdout.readline().strip() == b"up"
        out = tool_ok(sp, "netstat", "-an")
        est = [ln for ln in out.splitlines() if ln.endswith("ESTABLISHED")]
        assert any(ln.split()[3] == f"{ADDR}.8080" and ln.split()[4].startswith(f"{PEER}.")
                   for ln in est), out
    finally:
        os.close(fd)
        if client is not None:
            client.kill()
            client.communicate()


def test_bridge_and_vlan_and_driver_create_destroy(stack_process: object,
                                                   netns_factory: object) -> None:
    a, b = netns_factory("ba"), netns_factory("bb")  # type: ignore[operator]
    sp = stack_process("-d", "tap", f"name=tap0,netns={a}")  # type: ignore[operator]
    # a driver interface made by ifconfig create (the driver module loads)
    tool_ok(sp, "ifconfig", "tap1", "create", f"netns={b}")
    assert "tap1" in tool_ok(sp, "ifconfig", "-l").split()
    tool_ok(sp, "ifconfig", "bridge0", "create")
    tool_ok(sp, "brconfig", "bridge0", "add", "tap0", "add", "tap1", "up")
    tool_ok(sp, "ifconfig", "tap0", "up")
    tool_ok(sp, "ifconfig", "tap1", "up")
    peer_up(a, "tap0", "10.83.0.1/24")
    peer_up(b, "tap1", "10.83.0.2/24")
    a.run("ping", "-c", "2", "-W", "2", "10.83.0.2")
    out = tool_ok(sp, "brconfig", "bridge0")
    amac = a.run("cat", "/sys/class/net/tap0/address").stdout.strip()
    assert out.startswith("bridge0: flags=") and "tap0 flags=3<LEARNING,DISCOVER>" in out
    assert f"{amac} tap0 " in out
    tool_ok(sp, "brconfig", "bridge0", "timeout", "60", "maxaddr", "20",
            "static", "tap1", "02:00:00:00:00:77")
    out = tool_ok(sp, "brconfig", "bridge0")
    assert "max cache: 20, timeout: 60" in out and "02:00:00:00:00:77 tap1 0 flags=1<STATIC>" in out
    tool_ok(sp, "brconfig", "bridge0", "flush")
    table = tool_ok(sp, "brconfig", "bridge0", "addr")
    assert "02:00:00:00:00:77" in table and amac not in table
    tool_ok(sp, "brconfig", "bridge0", "deladdr", "02:00:00:00:00:77")
    assert "02:00:00:00:00:77" not in tool_ok(sp, "brconfig", "bridge0", "addr")
    assert "bridge: bridge0" in tool_ok(sp, "ifconfig", "tap0")
    tool_ok(sp, "ifconfig", "bridge0", "destroy")
    # vlan: create with its parent in one go, then an address
    tool_ok(sp, "ifconfig", "vlan0", "create", "vlan", "6", "vlanif", "tap0")
    tool_ok(sp, "ifconfig", "vlan0", "10.84.0.2/24", "up")
    out = tool_ok(sp, "ifconfig", "vlan0")
    assert "vlan: 6 parent: tap0" in out and "inet 10.84.0.2 " in out
    tool_ok(sp, "ifconfig", "vlan0", "destroy")
    # destroying the last interface of a driver unloads it
    tool_ok(sp, "ifconfig", "tap1", "destroy")
    assert "tap1" not in tool_ok(sp, "ifconfig", "-l").split()
    modules = open(f"{sp.prefix}/dev/socket/config/modules").read()  # type: ignore[attr-defined]
    assert "tap1" not in modules and "tap0" in modules


def test_error_paths(one: tuple[object, object], tmp_path: object) -> None:
    sp, _ = one
    assert tool_err(sp, "ifconfig", "tap9") == "ifconfig: no such interface: tap9"
    assert tool_err(sp, "ifconfig", "tap9", "10.1.1.1/24") == "ifconfig: no such interface: tap9"
    assert "bad address" in tool_err(sp, "ifconfig", "tap0", "10.1.1.300/24")
    assert "bad prefix length" in tool_err(sp, "ifconfig", "tap0", "10.1.1.1/40")
    assert "bad netmask" in tool_err(sp, "ifconfig", "tap0", "10.1.1.1", "netmask", "255.0.255.0")
    assert "not an address of tap0" in tool_err(sp, "ifconfig", "tap0", "10.9.9.9", "-alias")
    assert "mtu" in tool_err(sp, "ifconfig", "tap0", "mtu", "12")
    assert "unknown argument" in tool_err(sp, "ifconfig", "tap0", "frobnicate")
    assert "lo0 cannot be destroyed" in tool_err(sp, "ifconfig", "lo0", "destroy")
    assert "not on a connected network" in tool_err(sp, "route", "add", "10.50.0.0/16", "10.60.0.1")
    assert "bad address" in tool_err(sp, "route", "add", "10.50.0.0/16", "10.60.0.x")
    assert "no route" in tool_err(sp, "route", "delete", "10.51.0.0/16", PEER)
    assert "no such interface: tap9" in tool_err(sp, "route", "add", "10.50.0.0/16", "-interface", "tap9")
    assert "bad address" in tool_err(sp, "route", "get", "999.1.1.1")
    assert "bad MAC address" in tool_err(sp, "arp", "-s", "10.77.0.60", "zz:zz")
    assert "no ARP entry" in tool_err(sp, "arp", "-d", "10.77.0.61")
    assert "bad address" in tool_err(sp, "arp", "-d", "nonsense")
    assert tool_err(sp, "sysctl", "net.inet.ip.nope") == "sysctl: unknown sysctl: net.inet.ip.nope"
    assert "unknown sysctl" in tool_err(sp, "sysctl", "-w", "net.inet.nope=1")
    assert "takes an integer" in tool_err(sp, "sysctl", "-w", "net.inet.ip.forwarding=yes")
    assert "numeric IPv4" in tool_err(sp, "ping", "-c", "1", "nosuchhost")
    assert "bad count" in tool_err(sp, "ping", "-c", "x", PEER)
    assert "no such bridge" in tool_err(sp, "brconfig", "bridge7")
    assert "unknown command" in tool_err(sp, "brconfig", "bridge7", "frob")
    assert tool_err(sp, "nicinfo", "tap9") == "nicinfo: no such interface: tap9"
    assert "unknown protocol" in tool_err(sp, "netstat", "-s", "-p", "xyz")
    # no stack at that prefix: every tool says so in one line
    nowhere = f"--prefix={tmp_path}/nothing"
    for args in (["ifconfig"], ["route", "show"], ["arp", "-a"], ["netstat", "-an"],
                 ["sysctl", "-a"], ["ping", "-c", "1", PEER], ["brconfig", "-a"],
                 ["nicinfo"], ["mount", "-T", "io-pkt", "devnp-tap"]):
        line = tool_err(sp, *args, nowhere)
        assert "no io-pkt stack at" in line, line


def test_two_instances_configured_independently(stack_process: object,
                                                netns_factory: object) -> None:
    a, b = netns_factory("ia"), netns_factory("ib")  # type: ignore[operator]
    s0 = stack_process("-d", "tap", f"name=tap0,netns={a}")  # type: ignore[operator]
    s1 = stack_process("-i", "1", "-d", "tap", f"name=tap0,netns={b}")  # type: ignore[operator]
    tool_ok(s0, "ifconfig", "tap0", "10.85.0.2/24", "up")
    tool_ok(s1, "ifconfig", "tap0", "10.86.0.2/24", "up")
    tool_ok(s1, "sysctl", "-w", "net.inet.ip.ttl=33")
    tool_ok(s1, "route", "add", "10.87.0.0/16", "10.86.0.1")
    peer_up(a, "tap0", "10.85.0.1/24")
    peer_up(b, "tap0", "10.86.0.1/24")
    assert "10.85.0.2" in tool_ok(s0, "ifconfig", "tap0") and "10.86.0.2" not in tool_ok(s0, "ifconfig")
    assert "10.86.0.2" in tool_ok(s1, "ifconfig", "tap0") and "10.85.0.2" not in tool_ok(s1, "ifconfig")
    assert tool_ok(s0, "sysctl", "-n", "net.inet.ip.ttl").strip() == "64"
    assert tool_ok(s1, "sysctl", "-n", "net.inet.ip.ttl").strip() == "33"
    assert "10.87.0.0/16" in tool_ok(s1, "route", "show")
    assert "10.87.0.0/16" not in tool_ok(s0, "route", "show")
    # the kernel sees each stack's own TTL
    assert "ttl=64" in a.run("ping", "-c", "1", "-W", "2", "10.85.0.2").stdout
    assert "ttl=33" in b.run("ping", "-c", "1", "-W", "2", "10.86.0.2").stdout
    # --prefix picks the stack as well as SOCK does
    r = subprocess.run(IO_PKT + ["ifconfig", "-l", f"--prefix={s1.prefix}"], cwd=REPO,  # type: ignore[attr-defined]
                       env=io_pkt_env(SOCK=s0.prefix), text=True,  # type: ignore[attr-defined]
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.split() == ["lo0", "tap0"]
    assert "instance 1" in open(f"{s1.prefix}/dev/socket/config/status").read()  # type: ignore[attr-defined]


# -- usage errors: one line, every tool ------------------------------------------------

#: (argv, what the one stderr line says after "TOOL: ") for an unknown option or argument
USAGE_ERRORS = [
    (["ifconfig", "-Z"], "unknown option -Z"),
    (["ifconfig", "-a", "-Z"], "unexpected argument: -Z"),
    (["route", "-Z", "show"], "unknown option -Z"),
    (["route", "show", "-Z"], "unknown option -Z"),
    (["route", "add", "-Z", "10.50.0.0/16", PEER], "unknown option -Z"),
    (["route", "get", "-Z", PEER], "unknown option -Z"),
    (["route", "monitor", "-Z"], "unknown option -Z"),
    (["route", "frob"], "unknown command: frob"),
    (["arp", "-Z"], "unknown option -Z"),
    (["arp", "-a", "-Z"], "unknown option -Z"),
    (["netstat", "-Z"], "unknown option -Z"),
    (["netstat", "-rZ"], "unknown option -Z"),
    (["netstat", "frob"], "unexpected argument: frob"),
    (["sysctl", "-Z"], "unknown option -Z"),
    (["sysctl", "-aZ"], "unknown option -Z"),
    (["ping", "-Z", PEER], "unknown option -Z"),
    (["ping", PEER, PEER], f"unexpected argument: {PEER}"),
    (["ping", "-c", "1"], "no host given"),
    (["brconfig", "-Z"], "unknown option -Z"),
    (["nicinfo", "-Z"], "unknown option -Z"),
    (["mount", "-Z"], "unknown option -Z"),
    (["mount", "-T", "io-pkt", "-Z", "devnp-tap"], "unknown option -Z"),
    (["waitfor", "-Z"], "unknown option -Z"),
    (["pfctl", "-Z"], "unknown option -Z"),
    (["pfctl", "-f"], "option -f requires argument"),
]


def test_usage_errors_are_one_line(stack_process: object) -> None:
    """docs/control.md: an error is exactly one line ``TOOL: message`` on stderr, exit 1,
    nothing on stdout (tool_err); a usage error has the usage in parentheses on that line."""
    sp = stack_process()  # type: ignore[operator]
    for argv, what in USAGE_ERRORS:
        line = tool_err(sp, *argv)
        assert line.startswith(f"{argv[0]}: {what} ("), (argv, line)
        assert "usage: " in line and line.endswith(")"), (argv, line)
    # -h / --help: the usage on stdout, exit 0 (the same usage the errors quote)
    for tool in ("ifconfig", "route", "arp", "netstat", "sysctl", "ping", "brconfig",
                 "nicinfo", "mount", "waitfor", "pfctl"):
        for flag in ("-h", "--help"):
            r = sp.tool(tool, flag, check=False)
            assert r.returncode == 0 and r.stderr == "", (tool, flag, r)
            assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith("usage: "), r.stdout
    # a wrong-but-known invocation with no better message: still one line, the usage
    assert tool_err(sp, "arp").startswith("arp: usage: arp ")
    assert tool_err(sp, "sysctl").startswith("sysctl: usage: sysctl ")


# -- route delete, seen by show/netstat, traffic and the monitor ------------------------

def _wait_opened(pid: int, suffix: str, timeout: float = 20) -> None:
    """Until process ``pid`` has a file open whose path ends with ``suffix``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(suffix):
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not open {suffix} in {timeout}s")


def _route_rows(text: str, dest: str) -> list[list[str]]:
    return [ln.split() for ln in text.splitlines() if ln.split()[:1] == [dest]]


def test_route_delete_and_monitor(one: tuple[object, object]) -> None:
    sp, ns = one
    ns.run("ip", "addr", "add", "10.98.0.1/32", "dev", "lo")  # type: ignore[attr-defined]
    mon = subprocess.Popen(IO_PKT + ["route", "monitor"], cwd=REPO,
                           env=io_pkt_env(SOCK=sp.prefix),  # type: ignore[attr-defined]
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert mon.stdout is not None
        for ln in mon.stdout:
            lines.put(ln.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []

    def until(pred: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ln = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(ln)
            if pred(ln):
                return ln
        raise AssertionError(f"monitor: no such line within {timeout}s; got {seen}")

    try:
        _wait_opened(mon.pid, "/config/route_monitor")  # its queue exists from the open
        out = tool_ok(sp, "route", "add", "-net", "10.98.0.0/16", PEER, "-metric", "3")
        assert out.strip() == f"add net 10.98.0.0/16: gateway {PEER}"
        assert _route_rows(tool_ok(sp, "route", "show"), "10.98.0.0/16") == \
            [["10.98.0.0/16", PEER, "UGS", "3", "0", "-", "tap0"]]
        assert [r[:3] for r in _route_rows(tool_ok(sp, "netstat", "-rn"), "10.98.0.0/16")] == \
            [["10.98.0.0/16", PEER, "UGS"]]
        assert sp.tool("ping", "-c", "1", "10.98.0.1").returncode == 0  # type: ignore[attr-defined]
        # a default route too, deleted without naming its gateway (the first match)
        tool_ok(sp, "route", "add", "default", PEER)
        out = tool_ok(sp, "route", "delete", "10.98.0.0/16", PEER)
        assert out.strip() == f"delete net 10.98.0.0/16: gateway {PEER}"
        assert tool_ok(sp, "route", "delete", "default").strip() == "delete net default"
        # gone from every view, and traffic no longer has a way there
        for view in (["route", "show"], ["netstat", "-rn"]):
            text = tool_ok(sp, *view)
            assert "10.98.0.0/16" not in text and "default" not in text, (view, text)
            assert _route_rows(text, "10.77.0.0/24"), text  # the connected route stays
        routes = open(f"{sp.prefix}/dev/socket/config/routes").read()  # type: ignore[attr-defined]
        assert "10.98.0.0/16" not in routes and "default" not in routes, routes
        assert "no route" in tool_err(sp, "route", "get", "10.98.1.1")
        r = sp.tool("ping", "-c", "1", "-W", "0.5", "10.98.0.1", check=False)  # type: ignore[attr-defined]
        assert r.returncode == 2 and "Network is unreachable" in r.stderr, r
        assert "no route" in tool_err(sp, "route", "delete", "10.98.0.0/16", PEER)
        # the monitor printed the add and then the delete, with the route's details
        dst = f"dst 10.98.0.0/16 gateway {PEER} if tap0 metric 3 flags UGS"
        until(lambda ln: ln == f"RTM_ADD: {dst}")
        until(lambda ln: ln == f"RTM_DELETE: {dst}")
        until(lambda ln: ln.startswith("RTM_DELETE: dst default "))
        while not lines.empty():
            seen.append(lines.get())
    finally:
        mon.kill()
        mon.communicate()
    assert seen.count(f"RTM_DELETE: {dst}") == 1 and seen.count(f"RTM_ADD: {dst}") == 1, seen
    assert seen.index(f"RTM_ADD: {dst}") < seen.index(f"RTM_DELETE: {dst}"), seen
    assert f"RTM_ADD: dst default gateway {PEER} if tap0 metric 0 flags UGS" in seen, seen


# -- ping -f ---------------------------------------------------------------------------

def _kernel_icmp(ns: object) -> dict[str, int]:
    """The namespace's Icmp counters from /proc/net/snmp (per network namespace)."""
    rows = [ln.split()[1:] for ln in ns.run("cat", "/proc/net/snmp").stdout.splitlines()  # type: ignore[attr-defined]
            if ln.startswith("Icmp:")]
    return dict(zip(rows[0], map(int, rows[1]), strict=True))


def test_ping_flood_bounded(one: tuple[object, object]) -> None:
    sp, ns = one
    tool_ok(sp, "ping", "-c", "1", PEER)  # ARP resolved before the clock starts
    before = _kernel_icmp(ns)
    t0 = time.monotonic()
    r = sp.tool("ping", "-f", "-c", "200", PEER, timeout=120)  # type: ignore[attr-defined]
    took = time.monotonic() - t0
    after = _kernel_icmp(ns)
    assert r.returncode == 0 and r.stderr == "", r
    # no pause between requests: the default 1 s interval would take 200 s
    assert took < 60, took
    # the kernel answered every one of the 200 requests it got
    assert after["InEchos"] - before["InEchos"] == 200, (before, after)
    assert after["OutEchoReps"] - before["OutEchoReps"] == 200, (before, after)
    m = re.search(r"^(\d+) packets transmitted, (\d+) packets received, ([\d.]+)% packet loss$",
                  r.stdout, re.M)
    assert m is not None, r.stdout
    sent, received = int(m[1]), int(m[2])
    assert sent == 200 and 0 < received <= sent, r.stdout  # a reply over 10 ms counts lost
    assert float(m[3]) == round(100.0 * (sent - received) / sent, 1)
    # BSD flood output: a "." per request, erased ("\b \b") per reply; no per-reply lines
    assert r.stdout.startswith(f"PING {PEER} ({PEER}): 56 data bytes\n"), r.stdout[:80]
    flood = r.stdout.split("\n")[1]
    assert flood.count(".") == sent and flood.count("\b \b") == received, repr(flood[:200])
    assert "bytes from" not in r.stdout and "Request timeout" not in r.stdout
    assert f"--- {PEER} ping statistics ---" in r.stdout
    assert "round-trip min/avg/max/stddev = " in r.stdout
    # without -c the flood is bounded: 1000 requests, then the summary
    before = _kernel_icmp(ns)
    r = sp.tool("ping", "-f", PEER, timeout=300)  # type: ignore[attr-defined]
    after = _kernel_icmp(ns)
    assert r.returncode == 0, r
    assert re.search(r"^1000 packets transmitted, \d+ packets received", r.stdout, re.M), r.stdout
    assert r.stdout.split("\n")[1].count(".") == 1000
    assert after["InEchos"] - before["InEchos"] == 1000, (before, after)


# -- ping over the raw ICMP socket ----------------------------------------------------

def _icmp_stats(sp: object) -> dict[str, int]:
    text = Path(sp.prefix, "dev/socket/config/stats/icmp").read_text()  # type: ignore[attr-defined]
    return {ln.split()[0]: int(ln.split()[1]) for ln in text.splitlines() if ln.strip()}


def _raw_icmp_sockets(sp: object) -> tuple[list[str], list[str]]:
    """The raw ICMP sockets as the stack lists them: rows of config/sockets, and the
    text door's raw/N/status lines."""
    sock = Path(sp.prefix, "dev/socket")  # type: ignore[attr-defined]
    rows = [ln for ln in (sock / "config/sockets").read_text().splitlines()
            if ln.split()[:1] == ["raw1"]]
    status = []
    for n in os.listdir(sock / "raw"):
        if n.isdigit():
            try:
                line = (sock / "raw" / n / "status").read_text().strip()
            except FileNotFoundError:
                continue
            if " proto 1 " in f"{line} ":
                status.append(line)
    return rows, status


def test_ping_uses_a_raw_icmp_socket(one: tuple[object, object]) -> None:
    """As BSD ping: a raw ICMP socket of the stack (listed while ping runs, gone after),
    echo requests built by the tool (identifier = its pid & 0xffff, sequence 0, 1, ...,
    TOS set by setsockopt), and the stack's own echo client (the config/ping door) idle."""
    sp, ns = one
    tool_ok(sp, "ping", "-c", "1", PEER)  # ARP resolved
    assert _raw_icmp_sockets(sp) == ([], [])
    before = _icmp_stats(sp)
    count = 6
    dump = ns.popen("tcpdump", "-n", "-v", "-l", "--immediate-mode", "-c", str(count),  # type: ignore[attr-defined]
                    "-i", "tap0", f"icmp[icmptype] == icmp-echo and src {ADDR}",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ping = None
    try:
        wait_listening(dump)
        ping = subprocess.Popen(IO_PKT + ["ping", "-c", str(count), "-i", "0.3", "-Q", "16", PEER],
                                cwd=REPO, env=io_pkt_env(SOCK=sp.prefix),  # type: ignore[attr-defined]
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen_rows: list[str] = []
        seen_status: list[str] = []
        deadline = time.monotonic() + 10
        while ping.poll() is None and time.monotonic() < deadline and not (seen_rows and seen_status):
            rows, status = _raw_icmp_sockets(sp)
            seen_rows += rows
            seen_status += status
            time.sleep(0.05)
        out, err = ping.communicate(timeout=30)
        seen, _ = dump.communicate(timeout=10)
    finally:
        for p in (dump, ping):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert ping.returncode == 0 and err == "", (out, err)
    # the raw socket was there while ping ran (netstat's list and the text door's raw/N)
    assert seen_rows and seen_rows[0].split()[1:] == ["0", "0", "*:*", "*:*", "-"], seen_rows
    assert seen_status and " uid 0 proto 1 " in seen_status[0] + " ", seen_status
    # same output as ever
    lines = out.splitlines()
    assert lines[0] == f"PING {PEER} ({PEER}): 56 data bytes", out
    for seq in range(count):
        assert re.fullmatch(rf"64 bytes from {re.escape(PEER)}: icmp_seq={seq} ttl=64 "
                            r"time=\d+\.\d{3} ms", lines[1 + seq]), out
    assert f"{count} packets transmitted, {count} packets received, 0.0% packet loss" in out
    assert re.search(r"^round-trip min/avg/max/stddev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", out, re.M)
    # on the wire: the tool's identifier, its sequence numbers, the TOS it asked for
    reqs = re.findall(r"ICMP echo request, id (\d+), seq (\d+), length (\d+)", seen)
    assert [(int(i), int(q), int(n)) for i, q, n in reqs] == \
        [(ping.pid & 0xFFFF, q, 64) for q in range(count)], seen
    assert seen.count("tos 0x10,") == count, seen
    # the stack's echo client sent nothing: every reply went to the raw socket, none to it
    after = _icmp_stats(sp)
    assert after.get("out_echo", 0) == before.get("out_echo", 0), (before, after)
    assert after.get("in_echo_reply", 0) - before.get("in_echo_reply", 0) == count
    assert after.get("echo_reply_unmatched", 0) - before.get("echo_reply_unmatched", 0) == count
    # closed with the tool
    deadline = time.monotonic() + 5
    while _raw_icmp_sockets(sp) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _raw_icmp_sockets(sp) == ([], [])


def test_ping_reports_icmp_errors_for_its_requests(one: tuple[object, object]) -> None:
    """An ICMP error that quotes one of ping's requests is that request's answer (matched
    by the quoted identifier and sequence): BSD's "N bytes from ROUTER: text" line."""
    sp, ns = one
    ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")  # type: ignore[attr-defined]
    ns.run("ip", "route", "add", "unreachable", "10.97.0.0/16")  # type: ignore[attr-defined]
    tool_ok(sp, "route", "add", "-net", "10.97.0.0/16", PEER)
    r = sp.tool("ping", "-c", "1", "-W", "2", "10.97.0.1", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 2, r
    # the kernel quotes our 84-byte datagram whole: 8 + 20 + 64
    assert f"92 bytes from {PEER}: Destination Host Unreachable" in r.stdout, r.stdout
    assert "1 packets transmitted, 0 packets received, 100.0% packet loss" in r.stdout


def test_ping_without_a_raw_socket_uses_the_door(one: tuple[object, object],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A caller refused a raw socket (EPERM: not root) pings through config/ping: the same
    output, and the stack's own echo client did the work."""
    from rmgr import libsocket
    from stack.tools import ping

    sp, _ = one
    tool_ok(sp, "ping", "-c", "1", PEER)

    def refused(*args: object, **kw: object) -> object:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(libsocket, "socket", refused)
    before = _icmp_stats(sp)
    try:
        rc = ping.main(["-c", "3", "-i", "0.2", f"--prefix={sp.prefix}", PEER])  # type: ignore[attr-defined]
    finally:
        libsocket.clearsockprefix()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith(f"PING {PEER} ({PEER}): 56 data bytes\n"), out
    for seq in range(3):
        assert f"64 bytes from {PEER}: icmp_seq={seq} ttl=64 time=" in out, out
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in out
    after = _icmp_stats(sp)
    assert after.get("out_echo", 0) - before.get("out_echo", 0) == 3, (before, after)


def test_ping_datagram_parsing() -> None:
    """What the tool takes from a raw socket's datagram: the IP header's TTL, its own
    echo reply only (identifier, sequence, source, checksum), ICMP errors quoting its
    request; a datagram without an IP header gives no TTL."""
    import struct

    from stack.inet.wire import icmp as wicmp
    from stack.tools import ping

    def ip(src: str, dst: str, ttl: int, payload: bytes) -> bytes:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, ttl, 1, 0,
                           bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + payload

    req = ping.echo_request(0x1234, 7, 56, time.monotonic_ns())
    assert len(req) == 64 and req[:2] == b"\x08\x00" and req[4:8] == b"\x12\x34\x00\x07"
    assert wicmp.parse(req, verify=True).rest == 0x1234 << 16 | 7  # checksum right
    assert req[16:] == bytes(range(8, 56))  # after the 8-byte timestamp: data byte i is i
    reply = wicmp.build_header(wicmp.ECHO_REPLY, 0, 0x1234 << 16 | 7, (req[8:],)) + req[8:]
    got = ping.classify(ip(PEER, ADDR, 61, reply), PEER, 0x1234, 7, PEER)
    assert got is not None and got[:2] == ("reply", 61) and len(got[2]) == 64
    assert ping.classify(reply, PEER, 0x1234, 7, PEER) == ("reply", None, reply)  # no header
    assert ping.classify(ip(PEER, ADDR, 61, reply), PEER, 0x1235, 7, PEER) is None  # not ours
    assert ping.classify(ip(PEER, ADDR, 61, reply), PEER, 0x1234, 6, PEER) is None  # old seq
    assert ping.classify(ip(PEER, ADDR, 61, reply), "10.77.0.5", 0x1234, 7, PEER) is None
    bad = reply[:2] + bytes([reply[2] ^ 1]) + reply[3:]
    assert ping.classify(ip(PEER, ADDR, 61, bad), PEER, 0x1234, 7, PEER) is None  # checksum
    quote = ip(ADDR, PEER, 1, req)[:28]
    err = wicmp.build_header(wicmp.TIME_EXCEEDED, 0, 0, (quote,)) + quote
    assert ping.classify(ip("10.77.0.254", ADDR, 64, err), "10.77.0.254", 0x1234, 7, PEER) == \
        ("icmp", 36, "Time to live exceeded")
    assert ping.classify(ip("10.77.0.254", ADDR, 64, err), "10.77.0.254", 0x4321, 7, PEER) is None
    assert ping.classify(ip(ADDR, ADDR, 64, req), ADDR, 0x1234, 7, PEER) is None  # a request
    rtt = ping._rtt_ms(reply, 0, time.monotonic_ns())
    assert 0 <= rtt < 1000, rtt


# -- status, sysctl, modules: the formats docs/control.md gives ------------------------

DOC = Path(REPO, "docs", "control.md")
STATUS_COUNTER = re.compile(r"counter [a-z][a-z0-9_]* \d+")
SYSCTL_LINE = re.compile(r"([a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)+)=(\S*)")
MODULE_LINE = re.compile(r"((?:devnp|lsm)-[A-Za-z0-9_.-]+) (driver|protocol) (running|unloaded) "
                         r"interfaces=(\S+) options=(\S+) from=(\S+)")


def _doc_example(section: str) -> list[str]:
    """The first code block under ``### `section``` in docs/control.md."""
    text = DOC.read_text().split(f"### `{section}`\n", 1)[1]
    block = text.split("```\n", 2)[1]
    return block.splitlines()


def _config(sp: object, name: str) -> str:
    return Path(sp.prefix, "dev/socket/config", name).read_text()  # type: ignore[attr-defined]


def _config_command(sp: object, name: str, command: bytes) -> bytes:
    """Write one command to config/NAME and read the stack's reply on the same open."""
    fd = os.open(Path(sp.prefix, "dev/socket/config", name), os.O_RDWR)  # type: ignore[attr-defined]
    try:
        os.write(fd, command)
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def test_status_sysctl_modules_formats(one: tuple[object, object]) -> None:
    sp, ns = one
    # status: pid, instance, prefix, interfaces, then sorted "counter NAME VALUE" lines
    lines = _config(sp, "status").splitlines()
    assert lines[:4] == [f"pid {sp.proc.pid}", "instance 0", f"prefix {sp.prefix}",  # type: ignore[attr-defined]
                         "interfaces lo0 tap0"], lines
    counters = lines[4:]
    assert counters and all(STATUS_COUNTER.fullmatch(ln) for ln in counters), counters
    names = [ln.split()[1] for ln in counters]
    assert names == sorted(names) and "if_attached" in names, names
    stack_stats = {ln.split()[0] for ln in _config(sp, "stats/stack").splitlines()}
    assert set(names) <= stack_stats, (names, stack_stats)
    doc = _doc_example("status")
    assert [ln.split()[0] for ln in doc[:4]] == ["pid", "instance", "prefix", "interfaces"]
    assert all(STATUS_COUNTER.fullmatch(ln) for ln in doc[4:] if ln != "..."), doc
    # sysctl: sorted NAME=VALUE lines; a write answers NAME=NEWVALUE
    lines = _config(sp, "sysctl").splitlines()
    assert lines and all(SYSCTL_LINE.fullmatch(ln) for ln in lines), lines
    knobs = dict(ln.split("=", 1) for ln in lines)
    assert list(knobs) == sorted(knobs)
    assert knobs["net.inet.ip.forwarding"] == "0" and knobs["net.inet.ip.ttl"] == "64"
    assert all(SYSCTL_LINE.fullmatch(ln) for ln in _doc_example("sysctl"))
    assert _config_command(sp, "sysctl", b"net.inet.ip.ttl=0x30") == b"net.inet.ip.ttl=48\n"
    assert "net.inet.ip.ttl=48" in _config(sp, "sysctl").splitlines()
    # modules: NAME KIND STATE interfaces= options= from=, "-" for an empty value
    [tap] = _config(sp, "modules").splitlines()
    m = MODULE_LINE.fullmatch(tap)
    assert m is not None, tap
    assert m.groups()[:5] == ("devnp-tap", "driver", "running", "tap0",
                              f"name=tap0,netns={ns}"), tap
    assert m[6] == str(Path(REPO, "modules", "devnp-tap.py")), tap
    assert tool_ok(sp, "mount", "-T", "io-pkt", "lsm-pf").strip() == "loaded lsm-pf"
    lines = _config(sp, "modules").splitlines()
    assert lines[0] == tap and len(lines) == 2, lines
    m = MODULE_LINE.fullmatch(lines[1])
    assert m is not None and m.groups()[:5] == ("lsm-pf", "protocol", "running", "-", "-"), lines
    assert all(MODULE_LINE.fullmatch(ln) for ln in _doc_example("modules"))
    assert _config_command(sp, "modules", b"unload lsm-pf") == b"unloaded lsm-pf\n"
    deadline = time.monotonic() + 10
    while len(_config(sp, "modules").splitlines()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _config(sp, "modules").splitlines() == [tap]


# -- netstat -i columns after known traffic ----------------------------------------------

def _netstat_i(sp: object) -> dict[tuple[str, str], list[str]]:
    """(name, network) → the row's columns; only rows with every column filled."""
    lines = tool_ok(sp, "netstat", "-i").splitlines()
    assert lines[0].split() == ["Name", "Mtu", "Network", "Address", "Ipkts", "Ierrs", "Opkts",
                                "Oerrs", "Colls"], lines[0]
    return {(w[0], w[2]): w for w in (ln.split() for ln in lines[1:]) if len(w) == 9}


def test_netstat_interfaces_counts_traffic(one: tuple[object, object]) -> None:
    sp, _ = one
    mac = Path(sp.prefix, "dev/socket/config/nicinfo/tap0").read_text()  # type: ignore[attr-defined]
    mac = dict(ln.split(" ", 1) for ln in mac.splitlines())["mac"]
    before = _netstat_i(sp)
    r = sp.tool("ping", "-c", "5", "-i", "0.2", PEER)  # type: ignore[attr-defined]
    assert "5 packets transmitted, 5 packets received" in r.stdout, r.stdout
    after = _netstat_i(sp)
    link, net = after[("tap0", "<Link>")], after[("tap0", "10.77.0.0/24")]
    assert link[:4] == ["tap0", "1500", "<Link>", mac], link
    assert net[:4] == ["tap0", "1500", "10.77.0.0/24", ADDR], net
    assert link[4:] == net[4:]  # the counters are the interface's, on both rows
    ipkts, ierrs, opkts, oerrs, colls = map(int, net[4:])
    b_ipkts, _, b_opkts, _, _ = map(int, before[("tap0", "10.77.0.0/24")][4:])
    # 5 echo requests out and 5 replies in, at least (ARP may add to both)
    assert ipkts - b_ipkts >= 5 and opkts - b_opkts >= 5, (before, after)
    assert ipkts >= 5 and opkts >= 5
    assert ierrs == oerrs == colls == 0, net


def test_ping_dont_fragment(one: tuple[object, object]) -> None:
    """ping -D: the request leaves with DF (seen by the kernel's tcpdump); one too big
    for the MTU is refused locally ("Message too long"), not fragmented."""
    sp, ns = one
    dump = ns.popen("tcpdump", "-n", "-v", "-l", "--immediate-mode", "-c", "1", "-i", "tap0",  # type: ignore[attr-defined]
                    f"icmp[icmptype] == icmp-echo and src {ADDR}",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(dump)
        r = sp.tool("ping", "-D", "-c", "1", "-s", "1000", PEER)  # type: ignore[attr-defined]
        seen, _ = dump.communicate(timeout=10)
    finally:
        dump.kill()
        dump.wait()
    assert r.returncode == 0 and "1008 bytes from" in r.stdout, (r.stdout, r.stderr)
    assert "flags [DF]" in seen and "length 1028)" in seen, seen
    r = sp.tool("ping", "-D", "-c", "1", "-s", "2000", PEER, check=False)  # type: ignore[attr-defined]
    assert r.returncode != 0 and "Message too long" in (r.stdout + r.stderr), (r.stdout, r.stderr)
