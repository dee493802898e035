"""The DHCP client against dnsmasq in the kernel's namespace (tests/lan/conftest.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.lan.conftest import MAC, SERVER, Lan, needs_lan

pytestmark = [needs_lan, pytest.mark.root]

FAST = ["net.inet.dhcp.retransmit_ms=500", "net.inet.dhcp.arp_probe_ms=200",
        "net.inet.dhcp.decline_wait=1"]


def fast(ln: Lan) -> None:
    for kv in FAST:
        ln.tool("sysctl", "-w", kv)


def lease_of(ln: Lan) -> dict[str, str]:
    out = {}
    for line in ln.file("config/dhcp/tap0").splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def test_lease_obtained_and_installed(lan: Callable[..., Lan]) -> None:
    ln = lan()
    fast(ln)
    r = ln.tool("dhcp", "tap0")
    assert "state bound" in r.stdout
    lease = lease_of(ln)
    addr = lease["address"]
    assert re.fullmatch(r"192\.0\.2\.(5\d|60)/24", addr), lease
    assert lease["server"] == SERVER and lease["routers"] == SERVER
    assert lease["dns"] == SERVER and lease["domain"] == "lan"
    assert int(lease["lease"]) == 120 and int(lease["expires_in"]) <= 120
    # installed: ifconfig, route, resolv.conf
    ip = addr.split("/")[0]
    assert ip in ln.tool("ifconfig", "tap0").stdout
    routes = ln.tool("route", "show").stdout
    assert re.search(rf"default\s+{SERVER}\s", routes) or "0.0.0.0/0" in routes, routes
    conf = ln.file("config/resolv.conf")
    assert f"nameserver {SERVER}  # dhcp:tap0" in conf and "search lan" in conf
    # the server's view: the lease for our MAC, and the exchange in its log
    log = ln.wait_log(f"DHCPACK(tap0) {ip} {MAC}")
    assert f"DHCPDISCOVER(tap0) {MAC}" in log and f"DHCPREQUEST(tap0) {ip} {MAC}" in log
    assert ip in ln.leases.read_text()
    # the kernel reaches the stack at its new address
    assert ln.ns.run("ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0
    # release: dnsmasq hears it, the address, the route and the servers go
    ln.tool("dhcp", "-x", "tap0")
    ln.wait_log(f"DHCPRELEASE(tap0) {ip} {MAC}")
    assert ip not in ln.tool("ifconfig", "tap0").stdout
    assert "dhcp:tap0" not in ln.file("config/resolv.conf")


def test_driver_option_renews_at_t1(lan: Callable[..., Lan]) -> None:
    """``-d tap ...,dhcp`` starts the client at once; T1 of 3 s makes it renew (unicast
    REQUEST to the server, ACKed), keeping the address."""
    ln = lan("dhcp", extra=("--dhcp-option=option:T1,3", "--dhcp-option=option:T2,6"))
    ip = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lease = lease_of(ln) if "tap0" in ln.file("config/dhcp/ctl") else {}
        if lease.get("state") == "bound":
            ip = lease["address"].split("/")[0]
            break
        time.sleep(0.1)
    assert ip, ln.file("config/dhcp/ctl")
    assert lease["t1"] == "3" and lease["t2"] == "6"
    ln.wait_log(f"DHCPACK(tap0) {ip} {MAC}", count=2, timeout=15)
    stats = ln.stat("dhcp")
    assert stats["renewed"] >= 1 and stats.get("rebound", 0) == 0
    assert lease_of(ln)["address"].startswith(ip + "/")
    assert int(lease_of(ln)["renew_in"]) <= 3


def test_arp_conflict_declines_and_gets_another(lan: Callable[..., Lan]) -> None:
    """dnsmasq offers .50 (reserved for our MAC), which the kernel already holds: the
    probe hears it, the client DECLINEs and is given another address."""
    ln = lan(dnsmasq=False)
    ln.ns.run("ip", "addr", "add", "192.0.2.50/24", "dev", "tap0")
    ln.start_dnsmasq(f"--dhcp-host={MAC},192.0.2.50")
    fast(ln)
    ln.tool("dhcp", "tap0")
    lease = lease_of(ln)
    assert lease["address"] != "192.0.2.50/24", (ln.stat("dhcp"), ln.stat("arp"))
    assert int(lease["declines"]) == 1, (ln.stat("dhcp"), ln.stat("arp"))
    log = ln.wait_log("DHCPDECLINE(tap0) 192.0.2.50")
    assert "DHCPACK(tap0) " + lease["address"].split("/")[0] in log
    stats = ln.stat("dhcp")
    assert stats["arp_conflicts"] == 1 and stats["out_decline"] == 1


def test_init_reboot_of_a_remembered_lease(lan: Callable[..., Lan]) -> None:
    """Stopped without a release, a client started again asks for the same address with
    no DISCOVER (INIT-REBOOT), and dnsmasq ACKs it."""
    ln = lan()
    fast(ln)
    ln.tool("dhcp", "tap0")
    ip = lease_of(ln)["address"].split("/")[0]
    ln.tool("dhcp", "-k", "tap0")
    discovers = ln.log_text().count("DHCPDISCOVER")
    ln.tool("dhcp", "tap0")
    assert lease_of(ln)["address"].split("/")[0] == ip
    assert ln.log_text().count("DHCPDISCOVER") == discovers
    assert ln.stat("dhcp")["reboot_ack"] == 1


def test_stack_stop_releases(lan: Callable[..., Lan]) -> None:
    """SIGTERM to io-pkt: the driver's interface goes, and the lease with it (RELEASE)."""
    ln = lan()
    fast(ln)
    ln.tool("dhcp", "tap0")
    ip = lease_of(ln)["address"].split("/")[0]
    rc, _ = ln.stack.stop()
    assert rc == 0
    ln.wait_log(f"DHCPRELEASE(tap0) {ip} {MAC}", timeout=5)
