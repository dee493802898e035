"""The socket door and the text door against the Linux kernel in a namespace: EINTR,
readiness, linger/RST, unclaimed accepted connections, permissions, the listing of every
socket in the text door, and raw ioctls."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import subprocess
import sys

import pytest
import trio

from rmgr import libsocket
from rmgr.libsocket import abi
from stack.sockets import conn as conn_mod
from tests.conftest import REPO, needs_tun

from .conftest import spawn
from .test_apps import nsrun, start, stop

pytestmark = [needs_tun, pytest.mark.root]
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


@pytest.fixture
async def kserv(net):  # type: ignore[no-untyped-def]
    srv = await start([PY, f"{HERE}/scripts/kservers.py", net.KERNEL_IP], net.env(), ns=net.ns)
    yield srv
    await stop(srv)


def in_stack(net, fn):  # type: ignore[no-untyped-def]
    """Run blocking libsocket code off the trio thread that serves the files."""
    def run():  # type: ignore[no-untyped-def]
        libsocket.setsockprefix(net.prefix)
        try:
            return fn()
        finally:
            libsocket.clearsockprefix()
    return trio.to_thread.run_sync(run)


async def test_signal_interrupts_blocked_recv_and_accept_without_loss(net, kserv) -> None:  # type: ignore[no-untyped-def]
    proc = await start([PY, f"{HERE}/scripts/eintr.py", net.KERNEL_IP], net.env())
    try:
        lines = [proc.stdout.readline]  # type: ignore[union-attr]
        got = []
        with trio.fail_after(20):
            got.append(b"recv interrupted\n")  # start() ate the first line; check it below
            while True:
                line = await trio.to_thread.run_sync(lines[0])
                got.append(line)
                if line == b"listening\n" or not line:
                    break
            assert got[1:] == [b"got after\n", b"accept interrupted\n", b"listening\n"], got
            await nsrun(net.ns, "socat", "-", f"TCP:{net.STACK_IP}:7300", stdin=b"late")
            line = await trio.to_thread.run_sync(lines[0])
        assert line == f"accepted {net.KERNEL_IP} late\n".encode()
    finally:
        await stop(proc)


async def test_poll_readiness_and_hangup(net, kserv) -> None:  # type: ignore[no-untyped-def]
    def body():  # type: ignore[no-untyped-def]
        s = libsocket.create_connection((net.KERNEL_IP, 7103), timeout=5)
        p = select.poll()
        p.register(s.fileno(), select.POLLIN | select.POLLOUT)
        ev = dict(p.poll(3000))
        assert ev[s.fileno()] & select.POLLOUT
        assert s.recv(100) == b"hello\n"
        ev = dict(p.poll(0))
        assert not ev.get(s.fileno(), 0) & select.POLLIN
        s.shutdown(libsocket.SHUT_WR)  # the kernel side then closes
        p2 = select.poll()
        p2.register(s.fileno(), select.POLLIN)
        assert p2.poll(3000)
        assert s.recv(100) == b""
        s.close()
        # epoll works too (trio and asyncio wait on it)
        u = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        ep = select.epoll()
        ep.register(u.fileno(), select.EPOLLIN)
        assert ep.poll(0.1) == []
        u.sendto(b"x", (net.KERNEL_IP, 7102))
        assert ep.poll(3)[0][1] & select.EPOLLIN
        assert u.nread() == 1
        ep.close()
        u.close()

    await in_stack(net, body)


async def test_linger_zero_resets_and_close_sends_fin(net) -> None:  # type: ignore[no-untyped-def]
    code = ("import socket,sys\n"
            "s=socket.socket();s.setsockopt(1,2,1);s.bind(('0.0.0.0',7400));s.listen()\n"
            "print('ready',flush=True)\n"
            "for i in range(2):\n"
            "  c,_=s.accept()\n"
            "  try: print(repr(c.recv(10)),flush=True)\n"
            "  except OSError as e: print(type(e).__name__,flush=True)\n")
    peer = await start([PY, "-c", code], net.env(), ns=net.ns)
    try:
        def body():  # type: ignore[no-untyped-def]
            import struct

            a = libsocket.create_connection((net.KERNEL_IP, 7400), timeout=5)
            a.close()  # FIN: the peer reads b''
            b = libsocket.create_connection((net.KERNEL_IP, 7400), timeout=5)
            b.setsockopt(libsocket.SOL_SOCKET, libsocket.SO_LINGER, struct.pack("ii", 1, 0))
            b.close()  # RST

        await in_stack(net, body)
        with trio.fail_after(10):
            out = [await trio.to_thread.run_sync(peer.stdout.readline) for _ in range(2)]  # type: ignore[union-attr]
        assert out == [b"b''\n", b"ConnectionResetError\n"]
    finally:
        await stop(peer)


async def test_unclaimed_accepted_connection_is_reaped(net, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(conn_mod, "ACCEPT_CLAIM_TIMEOUT", 0.5)

    def listen():  # type: ignore[no-untyped-def]
        s = libsocket.socket()
        s.bind(("0.0.0.0", 7500))
        s.listen()
        return s

    srv = await in_stack(net, listen)
    client = await spawn(["ip", "netns", "exec", net.ns.name, "socat", "-",
                          f"TCP:{net.STACK_IP}:7500"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    try:
        def accept_name():  # type: ignore[no-untyped-def]
            out = fcntl.ioctl(srv.fileno(), abi.IOP_ACCEPT, bytes(abi.ACCEPT.size))
            return abi.ACCEPT.unpack(out)[3].split(b"\0")[0].decode()

        name = await in_stack(net, accept_name)
        assert name.startswith("tcp/") and name.endswith("/data")
        kind, n, _ = name.split("/")
        status = await in_stack(net, lambda: open(f"{net.sockdir}/{kind}/{n}/status").read())
        assert "unclaimed" in status
        with trio.fail_after(10):
            # nobody opens it: reset after the claim timeout, and the kernel client ends
            await trio.to_thread.run_sync(client.wait)
        assert not await in_stack(net, lambda: os.path.exists(f"{net.sockdir}/{kind}/{n}"))
    finally:
        client.kill()
        await trio.to_thread.run_sync(client.wait)
        await in_stack(net, srv.close)


async def test_text_door_lists_every_socket_and_serves_listen(net, kserv) -> None:  # type: ignore[no-untyped-def]
    def body():  # type: ignore[no-untyped-def]
        s = libsocket.create_connection((net.KERNEL_IP, 7100), timeout=5)
        u = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        u.bind(("0.0.0.0", 7600))
        info = s.info()
        tcp = os.listdir(f"{net.sockdir}/tcp")
        status = open(f"{net.sockdir}/{info.name}/status").read()
        local = open(f"{net.sockdir}/{info.name}/local").read()
        remote = open(f"{net.sockdir}/{info.name}/remote").read()
        udp_stats = open(f"{net.sockdir}/udp/stats").read()
        # a text-door socket is reachable from the socket door's ioctls too
        with open(f"{net.sockdir}/tcp/clone", "r+b", buffering=0) as ctl:
            n = ctl.read(32).decode().strip()
            ctl.write(b"announce 7601")
            listing = os.listdir(f"{net.sockdir}/tcp")
            lst = open(f"{net.sockdir}/tcp/{n}/status").read()
        s.close()
        u.close()
        return info, tcp, status, local, remote, udp_stats, n, listing, lst

    info, tcp, status, local, remote, udp_stats, n, listing, lst = await in_stack(net, body)
    assert "clone" in tcp and str(info.id) in tcp
    assert "Established" in status
    assert local.startswith(f"{net.STACK_IP}!") and remote == f"{net.KERNEL_IP}!7100\n"
    assert "Bound" in udp_stats
    assert n in listing and "Listen" in lst

    # bash-free listen: open tcp/N/listen blocks until a call arrives
    def announce_and_listen():  # type: ignore[no-untyped-def]
        ctl = open(f"{net.sockdir}/tcp/clone", "r+b", buffering=0)
        n = ctl.read(32).decode().strip()
        ctl.write(b"announce *!7602")
        lfd = open(f"{net.sockdir}/tcp/{n}/listen", "r+b", buffering=0)
        m = lfd.read(32).decode().strip()
        data = open(f"{net.sockdir}/tcp/{m}/data", "r+b", buffering=0)
        got = data.read(100)
        data.write(got.upper())
        data.close()
        lfd.close()
        ctl.close()
        return n, m, got

    async with trio.open_nursery() as nursery:
        result: list[object] = []

        async def server() -> None:
            result.append(await in_stack(net, announce_and_listen))

        nursery.start_soon(server)
        await trio.sleep(0.3)
        r = await nsrun(net.ns, "socat", "-t", "3", "-", f"TCP:{net.STACK_IP}:7602",
                        stdin=b"call")
    assert r.stdout == b"CALL"
    n2, m2, got = result[0]  # type: ignore[misc]
    assert got == b"call" and n2 != m2


async def test_raw_sockets_and_low_ports_need_root(net) -> None:  # type: ignore[no-untyped-def]
    code = ("import os,sys\n"
            "from rmgr import libsocket as s\n"  # import first: /root is not for nobody
            "os.setgid(65534); os.setuid(65534)\n"
            "for fn in (lambda: s.socket(s.AF_INET, s.SOCK_RAW, 1),\n"
            "           lambda: s.socket().bind(('0.0.0.0', 80)),\n"
            "           lambda: s.socket().bind(('0.0.0.0', 7700))):\n"
            "  try: fn(); print('ok')\n"
            "  except OSError as e: print(type(e).__name__)\n")
    with trio.fail_after(20):
        r = await trio.run_process([PY, "-c", code], env=net.env(), cwd=REPO, check=False,
                                   capture_stdout=True, capture_stderr=True)
    assert r.stdout.decode().split() == ["PermissionError", "PermissionError", "ok"], r.stderr

    def raw_ok():  # type: ignore[no-untyped-def]
        with libsocket.socket(libsocket.AF_INET, libsocket.SOCK_RAW, 1) as s:
            return s.type, s.proto

    assert await in_stack(net, raw_ok) == (libsocket.SOCK_RAW, 1)


async def test_raw_ioctls_errors(net) -> None:  # type: ignore[no-untyped-def]
    def body():  # type: ignore[no-untyped-def]
        fd = os.open(f"{net.sockdir}/inet/tcp", os.O_RDWR)
        errs = []
        for cmd, arg in ((abi.IOP_GETPEERNAME, b""), (abi.IOP_ACCEPT, b""),
                         (abi.IOP_LISTEN, abi.INT.pack(5)), (abi.IOP_BIND,
                                                             abi.pack_sockaddr_in("1.2.3.4", 9)),
                         (0x5401, b"")):
            try:
                fcntl.ioctl(fd, cmd, arg.ljust(abi.ioc_size(cmd), b"\0"))
                errs.append(0)
            except OSError as exc:
                errs.append(exc.errno)
        os.close(fd)
        fd = os.open(f"{net.sockdir}/inet/udp", os.O_RDWR)
        try:
            fcntl.ioctl(fd, abi.IOP_BIND, abi.pack_sockaddr_in("1.2.3.4", 9))
        except OSError as exc:
            errs.append(exc.errno)
        os.close(fd)
        return errs

    errs = await in_stack(net, body)
    assert errs[:3] == [errno.ENOTCONN, errno.EINVAL, 0]
    assert errs[3] == errno.EINVAL  # already bound (by listen)
    assert errs[4] == errno.ENOTTY
    assert errs[5] == errno.EADDRNOTAVAIL
