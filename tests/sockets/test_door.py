"""The socket door and the text door against the Linux kernel in a namespace: EINTR,
readiness, linger/RST, unclaimed accepted connections, permissions, the listing of every
socket in the text door, and raw ioctls."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import subprocess
import sys
import time

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


IN, OUT, ERR, HUP = select.POLLIN, select.POLLOUT, select.POLLERR, select.POLLHUP
RDHUP = select.POLLRDHUP


def revents(fd: int, events: int) -> int:
    """What one poll(0) on ``fd`` registered for ``events`` returns (0: nothing)."""
    p = select.poll()
    p.register(fd, events)
    ev = p.poll(0)
    return ev[0][1] if ev else 0


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
    # not start(): it eats the first line, and the first line is what the recv did
    proc = await spawn([PY, f"{HERE}/scripts/eintr.py", net.KERNEL_IP], env=net.env(),
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        readline = proc.stdout.readline  # type: ignore[union-attr]
        got = []
        with trio.fail_after(20):
            while True:
                line = await trio.to_thread.run_sync(readline)
                got.append(line)
                if line == b"listening\n" or not line:
                    break
            assert got == [b"recv interrupted\n", b"got after\n", b"accept interrupted\n",
                           b"listening\n"], got
            await nsrun(net.ns, "socat", "-", f"TCP:{net.STACK_IP}:7300", stdin=b"late")
            line = await trio.to_thread.run_sync(readline)
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
        # our FIN and the peer's: hung up both ways, as Linux says it (no POLLERR)
        assert revents(s.fileno(), IN | OUT | RDHUP) == IN | OUT | RDHUP | HUP
        assert revents(s.fileno(), 0) == HUP  # reported even when not asked for
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


async def test_poll_reports_reset_and_refused_connect(net, kserv) -> None:  # type: ignore[no-untyped-def]
    """Exact poll masks (side by side with Linux in scripts/behaviours.py: poll_*)."""
    def body():  # type: ignore[no-untyped-def]
        s = libsocket.create_connection((net.KERNEL_IP, 7101), timeout=5)  # reads, then RST
        fd = s.fileno()
        assert revents(fd, IN | OUT | RDHUP) == OUT
        s.sendall(b"go")
        p = select.poll()
        p.register(fd, IN)
        assert p.poll(5000), "no reset seen"
        # the reset: POLLERR and POLLHUP, even to a poll that asked for neither
        assert revents(fd, IN) == IN | ERR | HUP
        assert revents(fd, IN | OUT | RDHUP) == IN | OUT | RDHUP | ERR | HUP
        assert revents(fd, 0) == ERR | HUP
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN)
        assert ep.poll(0) == [(fd, select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP)]
        ep.close()
        with pytest.raises(ConnectionResetError):
            s.recv(10)
        # the error was reported: POLLERR goes, the hang-up stays; reads see EOF
        assert revents(fd, IN | OUT | RDHUP) == IN | OUT | RDHUP | HUP
        assert s.recv(10) == b""
        s.close()

        # a refused non-blocking connect, through the raw door: POLLOUT|POLLERR (and
        # POLLHUP, as Linux), then SO_ERROR says ECONNREFUSED and clears POLLERR
        fd = os.open(f"{net.sockdir}/inet/tcp", os.O_RDWR | os.O_NONBLOCK)
        try:
            with pytest.raises(BlockingIOError) as exc:
                fcntl.ioctl(fd, abi.IOP_CONNECT, abi.pack_sockaddr_in(net.KERNEL_IP, 1))
            assert exc.value.errno == errno.EINPROGRESS
            p = select.poll()
            p.register(fd, OUT)
            assert p.poll(5000) == [(fd, OUT | ERR | HUP)]
            assert revents(fd, IN | OUT | RDHUP) == IN | OUT | RDHUP | ERR | HUP
            out = fcntl.ioctl(fd, abi.IOP_GETSOCKOPT, abi.SOCKOPT.pack(
                libsocket.SOL_SOCKET, libsocket.SO_ERROR, 4, 0, b""))
            assert abi.INT.unpack_from(abi.SOCKOPT.unpack(out)[4])[0] == errno.ECONNREFUSED
            assert revents(fd, OUT) == OUT | HUP
            assert os.read(fd, 10) == b""  # the attempt is over: EOF, as on Linux
        finally:
            os.close(fd)

    await in_stack(net, body)


def sockopt_set(fd: int, level: int, name: int, val: bytes) -> None:
    fcntl.ioctl(fd, abi.IOP_SETSOCKOPT, abi.SOCKOPT.pack(level, name, len(val), 0, val))


def sockopt_get(fd: int, level: int, name: int, size: int = 4) -> bytes:
    out = fcntl.ioctl(fd, abi.IOP_GETSOCKOPT, abi.SOCKOPT.pack(level, name, size, 0, b""))
    _level, _name, length, _flags, val = abi.SOCKOPT.unpack(out)
    return bytes(val[:length])


def sockopt_int(fd: int, level: int, name: int) -> int:
    return int(abi.INT.unpack(sockopt_get(fd, level, name))[0])


TIMEVAL = struct.Struct("<qq")  # struct timeval on x86_64 / arm64


async def test_so_rcvtimeo_through_the_raw_door(net, kserv) -> None:  # type: ignore[no-untyped-def]
    """SO_RCVTIMEO set by IOP_SETSOCKOPT with a struct timeval: a blocking read (the fd is
    not O_NONBLOCK) fails with EAGAIN after about the timeout; data that comes in time
    is read; TCP and UDP alike."""
    def body():  # type: ignore[no-untyped-def]
        sol, rcvtimeo = libsocket.SOL_SOCKET, libsocket.SO_RCVTIMEO
        for path, port in (("inet/tcp", 7100), ("inet/udp", 7102)):
            fd = os.open(f"{net.sockdir}/{path}", os.O_RDWR)
            try:
                fcntl.ioctl(fd, abi.IOP_CONNECT, abi.pack_sockaddr_in(net.KERNEL_IP, port))
                assert sockopt_get(fd, sol, rcvtimeo, 16) == TIMEVAL.pack(0, 0)
                sockopt_set(fd, sol, rcvtimeo, TIMEVAL.pack(0, 400_000))
                assert sockopt_get(fd, sol, rcvtimeo, 16) == TIMEVAL.pack(0, 400_000)
                assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
                t = time.monotonic()
                with pytest.raises(BlockingIOError) as exc:
                    os.read(fd, 100)
                took = time.monotonic() - t
                assert exc.value.errno == errno.EAGAIN
                assert 0.35 <= took < 10, took  # not before the timeout; loose above
                os.write(fd, b"echo")  # the kernel echoes it: read in time
                assert os.read(fd, 100) == b"echo"
                # a bad timeval is refused as on Linux, and the old value stays
                with pytest.raises(OSError) as bad:
                    sockopt_set(fd, sol, rcvtimeo, TIMEVAL.pack(0, 1_000_000))
                assert bad.value.errno == errno.EDOM
                assert sockopt_get(fd, sol, rcvtimeo, 16) == TIMEVAL.pack(0, 400_000)
            finally:
                os.close(fd)

    await in_stack(net, body)


async def test_buffer_and_broadcast_options_through_the_raw_door(net) -> None:  # type: ignore[no-untyped-def]
    """SO_RCVBUF/SO_SNDBUF read back doubled (as Linux; scripts/behaviours.py compares
    with the kernel); SO_BROADCAST gates sending to the subnet broadcast (EACCES)."""
    def body():  # type: ignore[no-untyped-def]
        sol = libsocket.SOL_SOCKET
        for path in ("inet/tcp", "inet/udp"):
            fd = os.open(f"{net.sockdir}/{path}", os.O_RDWR)
            try:
                for opt in (libsocket.SO_RCVBUF, libsocket.SO_SNDBUF):
                    sockopt_set(fd, sol, opt, abi.INT.pack(40000))
                    assert sockopt_int(fd, sol, opt) == 80000, (path, opt)
                assert sockopt_int(fd, sol, libsocket.SO_BROADCAST) == 0
                sockopt_set(fd, sol, libsocket.SO_BROADCAST, abi.INT.pack(1))
                assert sockopt_int(fd, sol, libsocket.SO_BROADCAST) == 1
            finally:
                os.close(fd)
        with libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM) as u:
            bcast = ("10.9.0.255", 7102)
            with pytest.raises(PermissionError):
                u.sendto(b"all", bcast)
            u.setsockopt(sol, libsocket.SO_BROADCAST, 1)
            assert u.sendto(b"all", bcast) == 3

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


async def test_text_door_keepalive_and_hangup(net) -> None:  # type: ignore[no-untyped-def]
    """``keepalive 30`` on tcp/N/ctl turns SO_KEEPALIVE on with TCP_KEEPIDLE 30 (read back
    through the socket door's ioctls on tcp/N/data); ``hangup`` sends FIN: the kernel
    peer reads every byte then EOF, our reads see EOF, status shows the state."""
    code = ("import socket\n"
            "s=socket.socket();s.setsockopt(1,2,1);s.bind(('0.0.0.0',7420));s.listen()\n"
            "print('ready',flush=True)\n"
            "c,_=s.accept()\n"
            "got=b''\n"
            "while True:\n"
            "  d=c.recv(100)\n"
            "  if not d: break\n"
            "  got+=d\n"
            "print('eof',got.decode(),flush=True)\n"
            "c.close()\n")
    peer = await start([PY, "-c", code], net.env(), ns=net.ns)
    sol, tcp = libsocket.SOL_SOCKET, libsocket.IPPROTO_TCP
    keepalive, keepidle = libsocket.SO_KEEPALIVE, libsocket.TCP_KEEPIDLE
    tcpdir = f"{net.sockdir}/tcp"
    try:
        def connect():  # type: ignore[no-untyped-def]
            ctl = open(f"{tcpdir}/clone", "r+b", buffering=0)
            n = ctl.read(32).decode().strip()
            ctl.write(f"connect {net.KERNEL_IP}!7420".encode())
            data = open(f"{tcpdir}/{n}/data", "r+b", buffering=0)
            return ctl, n, data

        ctl, n, data = await in_stack(net, connect)

        def keep():  # type: ignore[no-untyped-def]
            fd = data.fileno()
            r: list[object] = [sockopt_int(fd, sol, keepalive), sockopt_int(fd, tcp, keepidle)]
            for bad in (b"keepalive 0", b"keepalive soon"):  # Linux's bounds; not a number
                try:
                    ctl.write(bad)
                    r.append("accepted")
                except OSError as exc:
                    r.append(errno.errorcode[exc.errno or 0])
            r.append(sockopt_int(fd, sol, keepalive))  # a refused command changed nothing
            ctl.write(b"keepalive 30")
            r += [sockopt_int(fd, sol, keepalive), sockopt_int(fd, tcp, keepidle)]
            return r

        assert await in_stack(net, keep) == [0, 7200, "EINVAL", "EINVAL", 0, 1, 30]
        # "keepalive" alone on another connection: on, the idle time left as it was
        def plain():  # type: ignore[no-untyped-def]
            with open(f"{tcpdir}/clone", "r+b", buffering=0) as c2:
                m = c2.read(32).decode().strip()
                c2.write(b"keepalive")
                with open(f"{tcpdir}/{m}/data", "r+b", buffering=0) as d2:
                    return [sockopt_int(d2.fileno(), sol, keepalive),
                            sockopt_int(d2.fileno(), tcp, keepidle)]

        assert await in_stack(net, plain) == [1, 7200]

        def hangup():  # type: ignore[no-untyped-def]
            before = open(f"{tcpdir}/{n}/status").read()
            data.write(b"last words")
            ctl.write(b"hangup")
            return before, data.read(100)

        before, eof = await in_stack(net, hangup)
        assert before.split()[:2] == [f"tcp/{n}", "Established"], before
        assert eof == b""
        with trio.fail_after(10):
            line = await trio.to_thread.run_sync(peer.stdout.readline)  # type: ignore[union-attr]
        assert line == b"eof last words\n"

        def after():  # type: ignore[no-untyped-def]
            status = open(f"{tcpdir}/{n}/status").read()
            try:
                data.write(b"more")
                wrote = "wrote"
            except OSError as exc:
                wrote = errno.errorcode[exc.errno or 0]
            return status, wrote, data.read(100)

        status, wrote, eof = await in_stack(net, after)
        # FIN_WAIT or TIME_WAIT: "Closing" until the last file of the connection goes
        assert status.split()[:2] == [f"tcp/{n}", "Closing"], status
        assert wrote == "EPIPE" and eof == b""

        def close():  # type: ignore[no-untyped-def]
            data.close()
            ctl.close()
            return os.path.exists(f"{tcpdir}/{n}")

        assert not await in_stack(net, close)
    finally:
        await stop(peer)


async def test_create_server_over_the_stack(net) -> None:  # type: ignore[no-untyped-def]
    """rmgr.libsocket.create_server: a listening TCP socket on the stack (SO_REUSEADDR
    on, backlog as given) that a kernel client reaches; the stdlib's errors."""
    def make():  # type: ignore[no-untyped-def]
        srv = libsocket.create_server(("", 7440), backlog=5)
        info = [srv.getsockname(), srv.family, srv.type,
                srv.getsockopt(libsocket.SOL_SOCKET, libsocket.SO_REUSEADDR),
                srv.getsockopt(libsocket.SOL_SOCKET, libsocket.SO_ACCEPTCONN)]
        try:  # the port is taken: the stdlib's message, naming the address
            libsocket.create_server((net.STACK_IP, 7440))
            info.append("bound twice")
        except OSError as exc:
            info += [errno.errorcode[exc.errno or 0], "while attempting to bind" in str(exc)]
        # AF_INET6 is served (IPv6-only unless dualstack_ipv6); dualstack_ipv6 needs
        # AF_INET6, as the stdlib says
        for kw in ({"family": libsocket.AF_INET6}, {"dualstack_ipv6": True}):
            try:
                libsocket.create_server(("", 7441), **kw).close()
                info.append("made")
            except ValueError:
                info.append("ValueError")
        return srv, info

    srv, info = await in_stack(net, make)
    try:
        assert info == [("0.0.0.0", 7440), libsocket.AF_INET, libsocket.SOCK_STREAM, 1, 1,
                        "EADDRINUSE", True, "made", "ValueError"]

        def serve():  # type: ignore[no-untyped-def]
            srv.settimeout(10)
            c, addr = srv.accept()
            with c:
                c.settimeout(10)
                got = b""
                while not got.endswith(b"\n"):
                    chunk = c.recv(100)
                    if not chunk:
                        break
                    got += chunk
                c.sendall(got.upper())
            return addr, got

        async with trio.open_nursery() as nursery:
            result: list[object] = []

            async def server() -> None:
                result.append(await in_stack(net, serve))

            nursery.start_soon(server)
            r = await nsrun(net.ns, "socat", "-t", "5", "-", f"TCP:{net.STACK_IP}:7440",
                            stdin=b"hello server\n")
        assert r.stdout == b"HELLO SERVER\n", r.stderr
        addr, got = result[0]  # type: ignore[misc]
        assert addr[0] == net.KERNEL_IP and got == b"hello server\n"
    finally:
        await in_stack(net, srv.close)


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
