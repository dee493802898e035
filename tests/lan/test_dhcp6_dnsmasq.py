"""The DHCPv6 client against dnsmasq in a namespace the test creates, with IPv6 on:
stateful (an RA with the M flag starts it; SOLICIT/ADVERTISE/REQUEST/REPLY, the address
installed, renewal at T1, RELEASE at stop and at shutdown), and stateless (an RA with
the O flag; INFORMATION-REQUEST for the DNS servers). dnsmasq's log is the server's
view; the stack, dnsmasq and the namespace go on every path (tests/lan/conftest.py)."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import NetNS, StackProcess
from tests.lan.conftest import MAC, SERVER, Lan, needs_lan

pytestmark = [needs_lan, pytest.mark.root]

KERNEL6 = "2001:db8:d::1"
RANGE = "--dhcp-range=2001:db8:d::100,2001:db8:d::1ff,64,2m"
DNS6 = "2001:db8:d::53"


@pytest.fixture
def lan6(netns6: NetNS, stack_process: Callable[..., StackProcess], tmp_path: Path
         ) -> Iterator[Callable[..., Lan]]:
    """The stack's tap0 in a namespace with IPv6 (kernel side 2001:db8:d::1/64 and
    192.0.2.1/24); dnsmasq started with ``extra`` (its DHCPv6 range, RA)."""
    made: list[Lan] = []

    def make(*extra: str) -> Lan:
        word = ",".join(["name=tap0", f"netns={netns6}", f"mac={MAC}"])
        sp = stack_process("-d", "tap", word)
        ln = Lan(netns6, sp, tmp_path)
        made.append(ln)
        deadline = time.monotonic() + 10
        while netns6.run("ip", "link", "show", "tap0", check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError("tap0 did not appear in the namespace")
            time.sleep(0.05)
        netns6.run("ip", "addr", "add", f"{SERVER}/24", "dev", "tap0")
        netns6.run("ip", "-6", "addr", "add", f"{KERNEL6}/64", "dev", "tap0", "nodad")
        netns6.run("ip", "link", "set", "tap0", "up")
        sp.tool("ifconfig", "tap0", "up")  # a link-local address, RS; RAs heard
        ln.start_dnsmasq("--enable-ra", "--ra-param=tap0,4", "--log-debug",
                         f"--dhcp-option=option6:dns-server,[{DNS6}]",
                         "--dhcp-option=option6:domain-search,lan6", *extra)
        return ln

    yield make
    for ln in made:
        ln.stop_dnsmasq()
        ln.stack.stop()


def state6(ln: Lan) -> dict[str, str]:
    try:
        text = ln.file("config/dhcp/v6/tap0")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def wait_state(ln: Lan, want: str, timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    st: dict[str, str] = {}
    while time.monotonic() < deadline:
        st = state6(ln)
        if st.get("state") == want:
            return st
        time.sleep(0.1)
    raise AssertionError(f"DHCPv6 not {want}: {st}\n{ln.log_text()[-3000:]}")


def test_stateful_from_ra_lease_installed_released(lan6: Callable[..., Lan]) -> None:
    """dnsmasq's RA carries M: the stack solicits by itself, gets an address of the
    range as a /128, DNS from option 23; ``dhcp -6 -x`` releases it."""
    ln = lan6(RANGE)
    st = wait_state(ln, "bound")
    assert st["mode"] == "stateful" and st["duid"].startswith("00030001")
    addr = st["address"].removesuffix("/128")
    a = ipaddress.IPv6Address(addr)
    assert ipaddress.IPv6Address("2001:db8:d::100") <= a <= ipaddress.IPv6Address("2001:db8:d::1ff")
    assert int(st["valid"]) == 120 and 0 < int(st["renew_in"]) <= 60
    assert st["server_duid"] != "-"
    log = ln.wait_log(f"DHCPREPLY(tap0) {addr}")
    assert "DHCPSOLICIT(tap0)" in log and "DHCPADVERTISE(tap0)" in log \
        and "DHCPREQUEST(tap0)" in log
    ifc = ln.tool("ifconfig", "tap0").stdout
    assert addr in ifc, ifc
    conf = ln.file("config/resolv.conf")
    assert f"nameserver {DNS6}  # dhcp6:tap0" in conf and "lan6" in conf, conf
    shown = ln.tool("dhcp", "-U", "-6", "tap0").stdout
    assert f"address {addr}/128" in shown and "expires_in" in shown
    # the kernel reaches the stack at the leased address (on-link from dnsmasq's RA)
    assert ln.ns.run("ping", "-6", "-c", "1", "-W", "3", addr, check=False).returncode == 0
    ln.tool("dhcp", "-6", "-x", "tap0")
    ln.wait_log("DHCPRELEASE(tap0)")
    assert addr not in ln.tool("ifconfig", "tap0").stdout
    assert "dhcp6:tap0" not in ln.file("config/resolv.conf")
    assert ln.stat("dhcp")["v6_out_release"] == 1


@pytest.mark.slow  # dnsmasq's shortest lease makes T1 60 s; the renewal itself is also
# tested in-process (test_dhcp6_client.py) with a short T1
def test_tool_start_renews_at_t1_releases_at_shutdown(lan6: Callable[..., Lan]) -> None:
    """``io-pkt dhcp -6 tap0`` (the RA trigger off); a 2-minute lease renews at T1
    (60 s: dnsmasq's minimum lease) keeping its address; the stack stopping releases."""
    ln = lan6(RANGE)
    ln.tool("sysctl", "-w", "net.inet6.dhcp6.ra_start=0")
    r = ln.tool("dhcp", "-6", "tap0")
    assert "state bound" in r.stdout
    st = state6(ln)
    addr = st["address"].removesuffix("/128")
    assert int(st["t1"]) == 60, st
    ln.wait_log("DHCPRENEW(tap0)", timeout=80)
    ln.wait_log(f"DHCPREPLY(tap0) {addr}", count=2, timeout=10)
    deadline = time.monotonic() + 10
    while ln.stat("dhcp").get("v6_renewed", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = ln.stat("dhcp")
    assert stats["v6_renewed"] == 1 and stats.get("v6_rebound", 0) == 0
    assert state6(ln)["address"] == f"{addr}/128" and int(state6(ln)["renew_in"]) > 50
    ln.stack.stop()
    ln.wait_log("DHCPRELEASE(tap0)")


def test_stateless_dns_by_information_request(lan6: Callable[..., Lan]) -> None:
    """ra-stateless: SLAAC from the RA, its O flag starts an INFORMATION-REQUEST; the
    DNS server and domain list reach resolv.conf as dhcp6:tap0."""
    ln = lan6("--dhcp-range=2001:db8:d::,ra-stateless")
    st = wait_state(ln, "configured")
    assert st["mode"] == "stateless" and "address" not in st
    assert st["dns"] == DNS6 and st["domains"] == "lan6"
    assert 80000 < int(st["refresh_in"]) <= 86400  # option 32 absent: IRT_DEFAULT
    ln.wait_log("DHCPINFORMATION-REQUEST(tap0)")
    conf = ln.file("config/resolv.conf")
    assert f"nameserver {DNS6}  # dhcp6:tap0" in conf and "lan6" in conf, conf
    # SLAAC gave the stack its address from the RA's prefix (no IA_NA asked)
    assert re.search(r"2001:db8:d:0?:[0-9a-f:]+", ln.tool("ifconfig", "tap0").stdout)
    assert ln.stat("dhcp").get("v6_out_solicit", 0) == 0


def test_dad_failure_declines_and_takes_another(lan6: Callable[..., Lan]) -> None:
    """The address dnsmasq gives this client, held by the kernel: our DAD fails, the
    client DECLINEs it (dnsmasq's log) and is bound to another address of the range."""
    ln = lan6(RANGE)
    ln.tool("sysctl", "-w", "net.inet6.dhcp6.ra_start=0")
    ln.tool("dhcp", "-6", "tap0")
    first = state6(ln)["address"].removesuffix("/128")
    ln.tool("dhcp", "-6", "-x", "tap0")
    ln.wait_log("DHCPRELEASE(tap0)")
    ln.ns.run("ip", "-6", "addr", "add", f"{first}/128", "dev", "tap0", "nodad")
    r = ln.tool("dhcp", "-6", "-w", "40", "tap0", check=False)
    log = ln.wait_log("DHCPDECLINE(tap0)")
    assert r.returncode == 0, (r.stdout, r.stderr, log[-2000:])
    st = state6(ln)
    second = st["address"].removesuffix("/128")
    assert second != first and st["declines"] == "1"
    assert ln.stat("dhcp")["v6_dad_failed"] == 1 and ln.stat("dhcp")["v6_out_decline"] >= 1
    assert first not in ln.tool("ifconfig", "tap0").stdout.replace(second, "")
