"""IPv6 through the socket files, the Linux kernel as the peer in a namespace the test
creates: the door's AF_INET6 rows (``24/<type>/<proto>``, ``inet6/tcp``, ``inet6/udp``,
``inet6/raw/P``, ``inet6/icmp6``); curl -6 (and curl -4: a dual-stack server takes IPv4
clients as ``::ffff:a.b.c.d``) from an unmodified ``python -m http.server --bind ::``
over rmgr.libsocket; a C program with ``struct sockaddr_in6`` through the door (global,
link-local with a scope id, IPv4-mapped); the text door connecting to and announcing on
IPv6 addresses; rmgr.libsocket's AF_INET6: has_ipv6, getaddrinfo (numeric, ``%tap0``),
create_server(dualstack_ipv6=True), 4-tuple names, UDP both ways, recvmsg with
IPV6_RECVPKTINFO / IPV6_RECVHOPLIMIT, IPV6_V6ONLY."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from rmgr import libsocket
from stack.addr import Prefix
from stack.l2.iface import IFF_UP
from tests.conftest import HAVE_FUSE, HAVE_TUN, REPO, NetNS, running_stack

from .conftest import spawn

pytestmark = pytest.mark.root

PY = sys.executable
LIB = [PY, "-m", "rmgr.libsocket"]
ME, KERNEL = "2001:db8:7::2", "2001:db8:7::1"
ME4, KERNEL4 = "10.9.7.2", "10.9.7.1"


class Net6:
    def __init__(self, st: Any, ns: NetNS, prefix: str, kll: str) -> None:
        self.st, self.ns, self.prefix, self.kll = st, ns, prefix, kll
        self.sockdir = f"{prefix}/dev/socket"
        self.ifindex = st.interfaces["tap0"].index

    def env(self) -> dict[str, str]:
        from tests.conftest import io_pkt_env

        env = io_pkt_env(SOCK=self.prefix, PYTHONUNBUFFERED="1")
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
            env.pop(k, None)
        env["no_proxy"] = "*"
        return env


async def _ip(ns: NetNS, *args: str) -> None:
    await trio.run_process(["ip", "-n", ns.name, *args], capture_stderr=True)


async def _kernel_ll(ns: NetNS) -> str:
    with trio.fail_after(10):
        while True:
            r = await trio.run_process(["ip", "-n", ns.name, "-6", "addr", "show", "dev", "tap0",
                                        "scope", "link"], capture_stdout=True)
            out = r.stdout.decode()
            if "inet6 " in out and "tentative" not in out:
                return out.split("inet6 ")[1].split("/")[0]
            await trio.sleep(0.1)


@pytest.fixture
async def net6(netns6: NetNS) -> AsyncIterator[Net6]:
    if not (HAVE_FUSE and HAVE_TUN):
        pytest.skip("needs root, /dev/fuse, fusermount3 and /dev/net/tun")
    top = tempfile.mkdtemp(prefix="iopkt-sock6-")
    os.chmod(top, 0o755)
    prefix = f"{top}/s"
    try:
        async with running_stack(drivers=[("tap", f"name=tap0,netns={netns6}")], prefix=prefix,
                                 mount=True, inet6=True) as st:
            st.interfaces["tap0"].set_flags(IFF_UP)
            st.inet.add_address("tap0", f"{ME4}/24")
            await _ip(netns6, "link", "set", "tap0", "up")
            await _ip(netns6, "addr", "add", f"{KERNEL}/64", "dev", "tap0", "nodad")
            await _ip(netns6, "addr", "add", f"{KERNEL4}/24", "dev", "tap0")
            p = Prefix.parse(f"{ME}/64")
            st.inet6.manage.add_address("tap0", p)
            await st.inet6.manage.wait_usable("tap0", p.addr)
            kll = await _kernel_ll(netns6)
            yield Net6(st, netns6, prefix, kll)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def in_stack(net: Net6, fn: Any) -> Any:
    """Run blocking libsocket code off the trio thread that serves the files."""
    def run() -> Any:
        libsocket.setsockprefix(net.prefix)
        try:
            return fn()
        finally:
            libsocket.clearsockprefix()
    return trio.to_thread.run_sync(run)


async def nsrun(ns: NetNS, *cmd: str, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(["ip", "netns", "exec", ns.name, *cmd],
                                      capture_stdout=True, capture_stderr=True, check=check)


#: the kernel's side: a TCP server on [::]:PORT (dual-stack) answering each client with
#: the address it saw, a UDP echo on the same port; "up" when listening
KERNEL_SERVER = """
import socket, sys, threading
port = int(sys.argv[1])
t = socket.socket(socket.AF_INET6); t.setsockopt(41, 26, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("::", port)); t.listen(8)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::", port))
def udp():
    while True:
        d, a = u.recvfrom(70000); u.sendto(d.upper(), a)
threading.Thread(target=udp, daemon=True).start()
print("up", flush=True)
while True:
    c, a = t.accept()
    data = c.recv(1000)
    c.sendall(("%s %s" % (a[0], data.decode())).encode()); c.close()
"""


async def kernel_server(net: Net6, port: int) -> subprocess.Popen[bytes]:
    p = await spawn(["ip", "netns", "exec", net.ns.name, PY, "-c", KERNEL_SERVER, str(port)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with trio.fail_after(10):
        line = await trio.to_thread.run_sync(p.stdout.readline)  # type: ignore[union-attr]
    assert line.strip() == b"up", line
    return p


async def stop(p: subprocess.Popen[bytes]) -> None:
    p.kill()
    await trio.to_thread.run_sync(p.wait)


# -- the door's rows ---------------------------------------------------------------------
async def test_door_serves_inet6_rows(net6: Net6) -> None:
    def look() -> dict[str, bool]:
        d = net6.sockdir
        names = ["24/1/6", "24/1/0", "24/2/17", "24/2/0", "24/3/58", "24/3/6", "inet6/tcp",
                 "inet6/stream", "inet6/udp", "inet6/dgram", "inet6/raw/58", "inet6/icmp6",
                 "tcp/clone", "udp/clone"]
        return {n: os.path.exists(f"{d}/{n}") for n in names}

    seen = await trio.to_thread.run_sync(look)
    assert all(seen.values()), seen

    def sockinfo() -> tuple[int, int, int, tuple[Any, ...]]:
        s = libsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.bind(("::", 0))
            info = s.info()
            return info.domain, info.type, info.protocol, s.getsockname()
        finally:
            s.close()

    dom, typ, proto, name = await in_stack(net6, sockinfo)
    assert (dom, typ, proto) == (socket.AF_INET6, socket.SOCK_DGRAM, 17)
    assert len(name) == 4 and name[0] == "::" and name[1] > 0


# -- curl -6 to http.server over the stack; dual stack -------------------------------------
async def test_curl6_and_curl4_to_http_server_bound_to_any6(net6: Net6, tmp_path: Any) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_bytes(b"hello over IPv6\n" * 1000)
    srv = await spawn([*LIB, "-m", "http.server", "8006", "--bind", "::", "--directory",
                       str(www)], env=net6.env(), cwd=REPO, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(20):
            first = await trio.to_thread.run_sync(srv.stdout.readline)  # type: ignore[union-attr]
        assert b"Serving HTTP on :: port 8006" in first, first
        r = await nsrun(net6.ns, "curl", "-6", "-sS", "--fail", "--max-time", "20",
                        f"http://[{ME}]:8006/hello.txt")
        assert r.stdout == b"hello over IPv6\n" * 1000
        # the same server (dual-stack: IPV6_V6ONLY off) takes an IPv4 client
        r = await nsrun(net6.ns, "curl", "-4", "-sS", "--fail", "--max-time", "20",
                        f"http://{ME4}:8006/hello.txt")
        assert r.stdout == b"hello over IPv6\n" * 1000
        logs = []
        with trio.fail_after(10):
            while len(logs) < 2:
                line = await trio.to_thread.run_sync(srv.stdout.readline)  # type: ignore[union-attr]
                if b"GET /hello.txt" in line:
                    logs.append(line.decode())
        assert logs[0].startswith(f"{KERNEL} "), logs
        assert logs[1].startswith(f"::ffff:{KERNEL4} "), logs  # seen as IPv4-mapped
    finally:
        await stop(srv)


# -- a C program with sockaddr_in6 -----------------------------------------------------------
async def test_c_program_with_sockaddr_in6(net6: Net6, tmp_path: Any) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    exe = str(tmp_path / "tcp6_client")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-I", f"{REPO}/rmgr/include",
                    "-o", exe, f"{REPO}/examples/tcp6_client.c"], check=True,
                   capture_output=True)
    k = await kernel_server(net6, 7600)
    try:
        cases = [(KERNEL, ME, 0), (f"{net6.kll}%{net6.ifindex}", None, net6.ifindex),
                 (f"::ffff:{KERNEL4}", f"::ffff:{ME4}", 0)]
        for dst, expect_src, scope in cases:
            with trio.fail_after(20):
                r = await trio.run_process([exe, dst, "7600", "hi6"], env=net6.env(),
                                           capture_stdout=True, capture_stderr=True,
                                           check=False)
            err = r.stderr.decode()
            assert r.returncode == 0, err
            saw, msg = r.stdout.decode().split()
            assert msg == "hi6"
            local = [ln for ln in err.splitlines() if " local " in ln][0]
            remote = [ln for ln in err.splitlines() if " remote " in ln][0]
            assert f"scope {scope}" in local and f"scope {scope}" in remote, err
            host = dst.split("%")[0]
            assert f"[{host}]:7600" in remote, err
            if expect_src is not None:
                assert saw == expect_src and f"[{expect_src}]:" in local, (saw, err)
            else:  # link-local: from our link-local address on that interface
                assert saw.startswith("fe80::") and f"[{saw.split('%')[0]}]:" in local, err
    finally:
        await stop(k)


# -- the text door -------------------------------------------------------------------------
TEXT_CONNECT = r"""
set -e
D=$SOCK/dev/socket
exec 3<>$D/tcp/clone; read -r N <&3
echo "connect $1!7601" >&3
exec 4<>$D/tcp/$N/data
printf 'text6' >&4
cat $D/tcp/$N/local $D/tcp/$N/remote $D/tcp/$N/status
IFS= read -r -N 200 line <&4 || true
echo "reply $line"
"""


async def test_text_door_connect_and_announce_v6(net6: Net6) -> None:
    k = await kernel_server(net6, 7601)
    try:
        with trio.fail_after(30):
            r = await trio.run_process(["bash", "-c", TEXT_CONNECT, "x", KERNEL], env=net6.env(),
                                       capture_stdout=True, capture_stderr=True, check=False)
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr.decode()
        lines = out.splitlines()
        assert lines[0].startswith(f"{ME}!"), out
        assert lines[1] == f"{KERNEL}!7601", out
        assert " Established " in lines[2], out
        assert lines[3] == f"reply {ME} text6", out
    finally:
        await stop(k)

    # announce [::]!PORT: a dual-stack listener reached by IPv6 and IPv4 clients
    script = r"""
    D=$SOCK/dev/socket
    exec 3<>$D/tcp/clone; read -r N <&3
    echo "announce [::]!7602" >&3
    cat $D/tcp/$N/local
    echo ready
    for i in 1 2; do
      exec 5<$D/tcp/$N/listen; read -r M <&5
      exec 6<>$D/tcp/$M/data
      cat $D/tcp/$M/remote
      printf 'ok' >&6
      exec 6>&- 5<&-
    done
    """
    proc = await spawn(["bash", "-c", script], env=net6.env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        with trio.fail_after(20):
            local = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
            assert local.strip() == b"::!7602", local
            assert (await trio.to_thread.run_sync(proc.stdout.readline)).strip() == b"ready"  # type: ignore[union-attr]
        for target in (f"[{ME}]", ME4):
            r = await nsrun(net6.ns, "socat", "-u", f"TCP:{target}:7602", "-")
            assert r.stdout == b"ok"
        with trio.fail_after(20):
            rest = (await trio.to_thread.run_sync(proc.communicate))[0].decode()  # type: ignore[arg-type]
        assert rest.splitlines()[0].startswith(f"{KERNEL}!"), rest
        assert rest.splitlines()[1].startswith(f"{KERNEL4}!"), rest  # an IPv4 caller
    finally:
        if proc.poll() is None:
            await stop(proc)


# -- rmgr.libsocket --------------------------------------------------------------------------
async def test_libsocket_ipv6(net6: Net6) -> None:
    k = await kernel_server(net6, 7603)

    def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with libsocket.patch():
            out["has_ipv6"] = socket.has_ipv6 and socket.has_dualstack_ipv6()
            out["gai"] = socket.getaddrinfo(KERNEL, 80, socket.AF_INET6, socket.SOCK_STREAM)
            out["gai_ll"] = socket.getaddrinfo(f"{net6.kll}%tap0", 80, socket.AF_INET6,
                                               socket.SOCK_DGRAM)
            out["index"] = socket.if_nametoindex("tap0")
            # TCP, 4-tuple names
            c = socket.create_connection((KERNEL, 7603), timeout=10)
            c.sendall(b"tcp6")
            out["tcp"] = c.recv(100).decode()
            out["names"] = (c.getsockname(), c.getpeername())
            c.close()
            # link-local, named with %tap0
            c = socket.socket(socket.AF_INET6)
            c.settimeout(10)
            c.connect((f"{net6.kll}%tap0", 7603))
            c.sendall(b"ll")
            out["ll"] = (c.recv(100).decode(), c.getpeername())
            c.close()
            # UDP both ways, with the received datagram's packet info and hop limit
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.settimeout(10)
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            u.sendto(b"udp6", (KERNEL, 7603))
            data, anc, _flags, frm = u.recvmsg(100, 256)
            out["udp"] = (data, frm[:2])
            out["anc"] = {(lvl, typ): val for lvl, typ, val in anc}
            u.close()
            # IPV6_V6ONLY on a socket refuses an IPv4-mapped destination
            v = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            v.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v.sendto(b"x", (f"::ffff:{KERNEL4}", 7603))
                out["v6only"] = "sent"
            except OSError as exc:
                out["v6only"] = exc.errno
            v.close()
            # a dual-stack server from create_server
            srv = socket.create_server(("", 7604), family=socket.AF_INET6, dualstack_ipv6=True)
            out["srv"] = (srv.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
                          srv.getsockname())
            srv.close()
        return out

    try:
        out = await in_stack(net6, body)
    finally:
        await stop(k)
    assert out["has_ipv6"]
    assert out["gai"] == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (KERNEL, 80, 0, 0))]
    assert out["gai_ll"][0][4] == (f"{net6.kll}%tap0", 80, 0, net6.ifindex)
    assert out["index"] == net6.ifindex
    assert out["tcp"] == f"{ME} tcp6"
    me, peer = out["names"]
    assert len(me) == 4 and me[0] == ME and peer == (KERNEL, 7603, 0, 0)
    reply, peer = out["ll"]
    assert reply.endswith(" ll") and reply.startswith("fe80::")
    assert peer == (f"{net6.kll}%tap0", 7603, 0, net6.ifindex)
    assert out["udp"] == (b"UDP6", (KERNEL, 7603))
    pktinfo = out["anc"][(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)]
    assert socket.inet_ntop(socket.AF_INET6, pktinfo[:16]) == ME
    assert struct.unpack("@I", pktinfo[16:20])[0] == net6.ifindex
    assert struct.unpack("@i", out["anc"][(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)])[0] == 64
    assert out["v6only"] == 97  # EAFNOSUPPORT
    assert out["srv"] == (0, ("::", 7604, 0, 0))


async def test_raw_icmp6_through_the_door(net6: Net6) -> None:
    """A raw ICMPv6 socket as ping6 makes it (socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6),
    root only): the stack fills in the checksum, the reply comes without the IPv6 header
    (RFC 3542), the sender as a 4-tuple; ``inet6/icmp6`` opens the same kind of socket."""
    def body() -> tuple[bytes, Any, tuple[int, int, int]]:
        s = libsocket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.settimeout(5)
            s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x77, 1) + b"door6", (KERNEL, 0))
            while True:
                data, frm = s.recvfrom(2000)
                if data[0] == 129:
                    break
        finally:
            s.close()
        fd = os.open(f"{net6.sockdir}/inet6/icmp6", os.O_RDWR)
        try:
            info = libsocket.fromfd(fd, socket.AF_INET6, socket.SOCK_RAW).info()
        finally:
            os.close(fd)
        return data, frm, (info.domain, info.type, info.protocol)

    data, frm, info = await in_stack(net6, body)
    assert data[:2] == b"\x81\x00" and data[4:] == struct.pack("!HH", 0x77, 1) + b"door6"
    assert frm[0] == KERNEL and len(frm) == 4
    assert info == (socket.AF_INET6, socket.SOCK_RAW, 58)
