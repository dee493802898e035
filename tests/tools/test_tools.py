"""The tools against a real io-pkt process, the kernel as the peer in a namespace the test
creates (every address lives inside a namespace)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import IO_PKT, REPO, io_pkt_env, needs_fuse, needs_tun

pytestmark = [needs_fuse, needs_tun]

ADDR = "10.77.0.2"
PEER = "10.77.0.1"


def tool_ok(sp: object, *args: str) -> str:
    return sp.tool(*args).stdout  # type: ignore[attr-defined,no-any-return]


def tool_err(sp: object, *args: str) -> str:
    """Run a tool that must fail: exit 1 and exactly one line on stderr, named by tool."""
    r = sp.tool(*args, check=False)  # type: ignore[attr-defined]
    assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
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
    assert icmp.get("out echo", 0) >= 4, stats  # the stack's 3 + 1 pings of the kernel
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
