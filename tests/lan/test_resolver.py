"""Names resolved through the stack: rmgr.libsocket's getaddrinfo & co. and the text
door's cs/dns files ask the servers of the stack's resolv.conf over the stack's own
UDP/TCP (dnsmasq's query log shows the stack's address as the asker; the host's
resolver is never used), with the errors glibc gives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rmgr import libsocket
from rmgr.libsocket import dns as ldns
from tests.lan.conftest import SERVER, Lan, needs_lan
from tests.lan.test_dhcp_dnsmasq import fast, lease_of

pytestmark = [needs_lan, pytest.mark.root]

HOSTS = "192.0.2.1 www\n192.0.2.42 printer\n"
HERE = Path(__file__).parent
REPO = HERE.parent.parent


@pytest.fixture
def over(lan: Callable[..., Lan]) -> Iterator[Callable[[Lan], None]]:
    """``over(ln)``: this process's libsocket talks to ``ln``'s stack until the test ends."""
    def use(ln: Lan) -> None:
        libsocket.setsockprefix(ln.stack.prefix)

    yield use
    libsocket.clearsockprefix()


def dhcp_lan(lan: Callable[..., Lan], *extra: str) -> tuple[Lan, str]:
    ln = lan(hosts=HOSTS, extra=("--cname=alias.lan,www.lan", *extra))
    fast(ln)
    ln.tool("dhcp", "tap0")
    return ln, lease_of(ln)["address"].split("/")[0]


def test_getaddrinfo_through_the_stack(lan: Callable[..., Lan],
                                       over: Callable[[Lan], None]) -> None:
    ln, me = dhcp_lan(lan)
    over(ln)
    # "printer" has fewer dots than ndots: the search domain from DHCP (lan) applies
    r = libsocket.getaddrinfo("printer", 631, type=socket.SOCK_STREAM)
    assert r == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.42", 631))]
    log = ln.wait_log(f"query[A] printer.lan from {me}")
    assert "printer.lan is 192.0.2.42" in log
    # a CNAME chain: the canonical name comes back with AI_CANONNAME
    r = libsocket.getaddrinfo("alias.lan", "http", socket.AF_INET, socket.SOCK_STREAM,
                              flags=socket.AI_CANONNAME)
    assert r[0][3] == "www.lan" and r[0][4] == ("192.0.2.1", 80)
    assert libsocket.gethostbyname("www.lan") == "192.0.2.1"
    assert libsocket.gethostbyname_ex("alias.lan") == ("www.lan", [], ["192.0.2.1"])
    # reverse: dnsmasq answers PTR for its hosts
    assert libsocket.gethostbyaddr("192.0.2.42")[0] == "printer.lan"
    assert libsocket.getnameinfo(("192.0.2.42", 80), 0) == ("printer.lan", "http")
    # NXDOMAIN: glibc's EAI_NONAME, after asking the server
    with pytest.raises(socket.gaierror) as ei:
        libsocket.getaddrinfo("nosuch.lan", 80)
    assert ei.value.errno == socket.EAI_NONAME
    assert ei.value.strerror == "Name or service not known"
    ln.wait_log(f"query[A] nosuch.lan from {me}")
    with pytest.raises(socket.gaierror) as ei:
        libsocket.getnameinfo(("192.0.2.99", 80), socket.NI_NAMEREQD)
    assert ei.value.errno == socket.EAI_NONAME


def test_unmodified_urllib_program_fetches_by_name(lan: Callable[..., Lan],
                                                   tmp_path: Path) -> None:
    ln, me = dhcp_lan(lan)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.txt").write_text("served over the stack\n")
    httpd = ln.ns.popen(sys.executable, "-m", "http.server", "-b", SERVER, "-d",
                        str(tmp_path / "www"), "8080", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while ln.ns.run("ss", "-ltnH", "sport = :8080", check=False).stdout.strip() == "":
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
        out = tmp_path / "body"
        env = dict(os.environ, SOCK=ln.stack.prefix,
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, "-m", "rmgr.libsocket",
                            str(REPO / "tests/sockets/scripts/urllib_fetch.py"),
                            "http://www:8080/index.txt", str(out)],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert out.read_text() == "served over the stack\n"
        # the name went to dnsmasq from the stack's address, not from the host
        ln.wait_log(f"query[A] www.lan from {me}")
    finally:
        httpd.terminate()
        httpd.wait(5)


def test_dead_server_times_out(lan: Callable[..., Lan], over: Callable[[Lan], None]) -> None:
    ln, _ = dhcp_lan(lan)
    over(ln)
    ln.stop_dnsmasq()  # the kernel answers port unreachable; nobody answers the query
    Path(ln.stack.path, "config/resolv.conf").write_text("options timeout:0.5 attempts:2\n")
    before = ldns.counters["timeouts"]
    t0 = time.monotonic()
    with pytest.raises(socket.gaierror) as ei:
        libsocket.getaddrinfo("www.lan", 80)
    took = time.monotonic() - t0
    assert ei.value.errno == socket.EAI_AGAIN
    assert ei.value.strerror == "Temporary failure in name resolution"
    assert 0.9 < took < 5, took
    assert ldns.counters["timeouts"] - before == 2


def test_cs_and_dns_files(lan: Callable[..., Lan]) -> None:
    ln, me = dhcp_lan(lan)
    door = ln.stack.path
    fd = os.open(f"{door}/cs", os.O_RDWR)
    try:
        os.write(fd, b"tcp!www.lan!http")
        assert os.read(fd, 4096).decode() == f"{door}/tcp/clone 192.0.2.1!80\n"
    finally:
        os.close(fd)
    ln.wait_log(f"query[A] www.lan from {me}")
    # a shell script resolves and connects through the text door
    r = subprocess.run(["sh", "-c", f"exec 3<>{door}/cs; echo -n 'udp!printer!53' >&3; "
                                    f"cat <&3"], capture_output=True, text=True, timeout=30)
    assert r.stdout == f"{door}/udp/clone 192.0.2.42!53\n", r
    fd = os.open(f"{door}/cs", os.O_RDWR)
    try:
        with pytest.raises(OSError):
            os.write(fd, b"tcp!nosuch.lan!http")
        assert "can't translate address" in os.read(fd, 4096).decode()
    finally:
        os.close(fd)
    fd = os.open(f"{door}/dns", os.O_RDWR)
    try:
        os.write(fd, b"printer.lan ip")
        assert os.read(fd, 4096).decode() == "printer.lan ip 192.0.2.42\n"
    finally:
        os.close(fd)


def test_resolv_conf_by_hand(lan: Callable[..., Lan]) -> None:
    ln = lan(dnsmasq=False)
    conf = Path(ln.stack.path, "config/resolv.conf")
    conf.write_text("nameserver 192.0.2.53\nsearch example.lan\noptions ndots:2 timeout:1\n")
    text = conf.read_text()
    assert "nameserver 192.0.2.53  # manual" in text and "search example.lan" in text
    assert "options ndots:2 timeout:1 attempts:2" in text


def test_hostile_answers_refused_and_counted(lan: Callable[..., Lan],
                                             over: Callable[[Lan], None],
                                             tmp_path: Path) -> None:
    """Spoofed source, wrong id, compression loop, cut short, impossible counts, another
    question: each refused and counted; the truncated answer sends the query over TCP,
    whose answer is the one used."""
    ln = lan(dnsmasq=False)
    ln.tool("ifconfig", "tap0", "192.0.2.2/24", "up")
    ln.ns.run("ip", "addr", "add", "192.0.2.9/24", "dev", "tap0")
    log = tmp_path / "fake.log"
    srv = ln.ns.popen(sys.executable, str(HERE / "fake_dns.py"), SERVER, "192.0.2.9",
                      str(log), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and "ready" in log.read_text()):
            assert srv.poll() is None, srv.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        Path(ln.stack.path, "config/resolv.conf").write_text(
            f"nameserver {SERVER}\noptions timeout:2 attempts:1\n")
        over(ln)
        before = dict(ldns.counters)
        assert libsocket.gethostbyname("good.lan") == "192.0.2.77"
        got = {k: v - before.get(k, 0) for k, v in ldns.counters.items()}
        for reason in ("drop_spoofed_source", "drop_bad_id", "drop_pointer_loop",
                       "drop_truncated", "drop_too_many_records", "drop_question_mismatch",
                       "tcp_fallback"):
            assert got.get(reason) == 1, (reason, got)
        assert log.read_text().splitlines()[1:] == ["udp good.lan", "tcp good.lan"]
        # the stack's own lookups (the cs file) refuse the same, in the dns group
        fd = os.open(f"{ln.stack.path}/cs", os.O_RDWR)
        try:
            os.write(fd, b"tcp!good.lan!80")
            assert os.read(fd, 4096).decode().endswith("/tcp/clone 192.0.2.77!80\n")
        finally:
            os.close(fd)
        stats = ln.stat("dns")
        assert stats["drop_spoofed_source"] == 1 and stats["drop_pointer_loop"] == 1
        assert stats["tcp_fallback"] == 1 and stats["drop_bad_id"] == 1
    finally:
        srv.kill()
        srv.wait(5)


def test_getaddrinfo_aaaa_through_the_stack(lan: Callable[..., Lan],
                                            over: Callable[[Lan], None]) -> None:
    """The stack serves AF_INET6, so getaddrinfo asks AAAA too (over the stack's IPv4
    path to the server here): an IPv6-only name resolves for AF_INET6 and AF_UNSPEC,
    and is "no address" for AF_INET, as glibc says."""
    ln = lan(hosts=HOSTS + "2001:db8:d::7 v6host\n")
    fast(ln)
    ln.tool("dhcp", "tap0")
    me = lease_of(ln)["address"].split("/")[0]
    over(ln)
    r = libsocket.getaddrinfo("v6host.lan", 80, socket.AF_INET6, socket.SOCK_STREAM)
    assert [(x[0], x[4][:2]) for x in r] == [(socket.AF_INET6, ("2001:db8:d::7", 80))]
    ln.wait_log(f"query[AAAA] v6host.lan from {me}")
    r = libsocket.getaddrinfo("v6host.lan", 80, type=socket.SOCK_STREAM)
    assert [x[4][0] for x in r] == ["2001:db8:d::7"]
    with pytest.raises(socket.gaierror) as ei:
        libsocket.getaddrinfo("v6host.lan", 80, socket.AF_INET)
    assert ei.value.errno in (socket.EAI_NODATA, socket.EAI_NONAME, socket.EAI_ADDRFAMILY)
