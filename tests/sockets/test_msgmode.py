"""Message mode through the socket files (issue 21): IOP_MSGMODE makes a read return
iop_msg records (header with the address, then the data) and a write take them, so a
datagram and its address cost one FUSE request, and many datagrams can share one.
The Linux kernel is the peer in a namespace; rmgr.libsocket's recvfrom/sendto use the
mode, recvmmsg/sendmmsg batch; raw records test the stack's checks; a C program uses
the header alone."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import trio

from rmgr import libsocket
from rmgr.libsocket import abi
from tests.conftest import REPO, needs_tun

from .test_apps import start, stop
from .test_door import in_stack
from .test_inet6 import KERNEL, Net6, kernel_server, net6  # noqa: F401 - the fixture
from .test_inet6 import in_stack as in_stack6
from .test_inet6 import stop as stop6

pytestmark = [needs_tun, pytest.mark.root]
HERE = f"{REPO}/tests/sockets"
PY = sys.executable
HDR = abi.MSG.size

#: the kernel's peer: echoes every datagram to its sender; "burst N SIZE" sends N
#: datagrams "i:xxx..." back instead; a second socket on PORT+1 is bound and never read
KPEER = """
import socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, port))
hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); hole.bind((ip, port + 1))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65536)
    if d.startswith(b"burst "):
        _, n, size = d.split()
        for i in range(int(n)):
            s.sendto((b"%d:" % i).ljust(int(size), b"x"), a)
    else:
        s.sendto(d, a)
"""


async def kpeer(net: Any, port: int) -> subprocess.Popen[bytes]:
    return await start([PY, "-c", KPEER, net.KERNEL_IP, str(port)], net.env(), ns=net.ns)


def _msgmode(fd: int, count: int) -> int:
    out = fcntl.ioctl(fd, abi.IOP_MSGMODE, abi.INT.pack(count))
    return int(abi.INT.unpack(out)[0])


def _record(data: bytes, addr: tuple[str, int] | None = None, *, length: int | None = None,
            flags: int = 0, alen: int | None = None, ifindex: int = 0) -> bytes:
    if addr is None:
        al, field = 0, b""
    else:
        _f, al, field = abi.SOCKADDR.unpack(abi.pack_sockaddr_in(*addr))
    return abi.MSG.pack(len(data) if length is None else length, flags,
                        al if alen is None else alen, ifindex, field) + data


def _errname(fn: Any) -> str:
    try:
        fn()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


def _wait_queued(s: Any, n: int) -> None:
    """Until ``n`` datagrams could be queued (the kernel's burst is on its way)."""
    deadline = time.monotonic() + 5
    while s.nread() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)


async def test_recvfrom_and_sendto_are_one_request_each(net) -> None:  # type: ignore[no-untyped-def]
    peer = await kpeer(net, 7970)
    fuse = net.st.fuse_counters
    door = net.st.services.get("sockets").counters if hasattr(net.st.services.get("sockets"),
                                                               "counters") else None
    from stack.services import SOCKETS

    door = net.st.services.get(SOCKETS).counters
    dest = (net.KERNEL_IP, 7970)

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 7971))
            s.sendto(b"warm", dest)  # switches message mode on (one ioctl, then the write)
            out["warm"] = s.recvfrom(100)
            r0 = fuse["requests"]
            out["sent"] = s.sendto(b"hello", dest)
            out["sendto_requests"] = fuse["requests"] - r0
            time.sleep(0.3)  # the echo is queued: the blocking read does not wait
            r0 = fuse["requests"]
            out["got"] = s.recvfrom(100)
            out["recvfrom_requests"] = fuse["requests"] - r0
            out["empty"] = s.sendto(b"", dest)  # the header carries it: no IOP_SEND0
            out["got_empty"] = s.recvfrom(100)
            buf = bytearray(8)
            s.sendto(b"0123456789", dest)
            out["into"] = s.recvfrom_into(buf)  # cut to the buffer
            out["buf"] = bytes(buf)
            s.sendto(b"abcdef", dest)
            out["recv"] = s.recv(3)  # recv in the mode strips the header (and cuts)
            s.sendto(b"trunc-me", dest)
            data, _anc, flags, addr = s.recvmsg(4)
            out["recvmsg"] = (data, flags & libsocket.MSG_TRUNC != 0, addr)
            s.connect(dest)
            out["send"] = s.send(b"conn")
            out["recv_conn"] = s.recv(100)
            s.settimeout(0.2)  # timeouts still apply
            try:
                s.recvfrom(100)
            except TimeoutError:
                out["timeout"] = True
            s.setblocking(False)
            out["nonblock"] = _errname(lambda: s.recvfrom(100))
            s.setblocking(True)
            out["dontwait"] = _errname(lambda: s.recvfrom(100, libsocket.MSG_DONTWAIT))
            s.send(b"peek")
            time.sleep(0.2)
            out["peek"] = s.recvfrom(100, libsocket.MSG_PEEK)
            out["after_peek"] = s.recvfrom(100)
        finally:
            s.close()
        return out

    try:
        m0 = door["msg_reads"]
        out = await in_stack(net, client)
        assert out.pop("warm") == (b"warm", dest)
        assert out == {
            "sent": 5, "sendto_requests": 1, "got": (b"hello", dest), "recvfrom_requests": 1,
            "empty": 0, "got_empty": (b"", dest), "into": (8, dest), "buf": b"01234567",
            "recv": b"abc", "recvmsg": (b"trun", True, dest), "send": 4,
            "recv_conn": b"conn", "timeout": True, "nonblock": "EAGAIN",
            "dontwait": "EAGAIN", "peek": (b"peek", dest), "after_peek": (b"peek", dest)}
        assert door["msg_reads"] - m0 >= 10
        assert door["msg_truncated"] >= 3
    finally:
        await stop(peer)


async def test_recvmmsg_takes_queued_datagrams_in_one_read(net) -> None:  # type: ignore[no-untyped-def]
    from stack.services import SOCKETS

    peer = await kpeer(net, 7972)
    fuse = net.st.fuse_counters
    door = net.st.services.get(SOCKETS).counters
    dest = (net.KERNEL_IP, 7972)

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 7973))
            s.sendto(b"warm", dest)
            out["warm"] = s.recvmmsg(16, 2048)  # switches the mode (an ioctl, then the read)
            s.sendto(b"burst 10 20", dest)
            _wait_queued(s, 10)
            r0, b0 = fuse["requests"], door["msg_read_batches"]
            got = s.recvmmsg(16, 2048)
            out["requests"] = fuse["requests"] - r0
            out["batches"] = door["msg_read_batches"] - b0
            out["got"] = got
            # a small vlen stops the batch; the rest waits for the next read
            s.sendto(b"burst 5 30", dest)
            _wait_queued(s, 5)
            out["three"] = [d[:2] for d, _a in s.recvmmsg(3, 2048)]
            out["two"] = [d[:2] for d, _a in s.recvmmsg(3, 2048)]
            s.setblocking(False)
            out["empty"] = _errname(lambda: s.recvmmsg(8))
            s.setblocking(True)
            # a datagram longer than bufsize is cut (the first: flagged by the stack)
            s.sendto(b"burst 2 100", dest)
            _wait_queued(s, 2)
            # (the second does not fit whole beside the first: the next read takes it)
            out["cut"] = [len(d) for _ in range(2) for d, _a in s.recvmmsg(2, 10)]
            out["vlen0"] = s.recvmmsg(0)
            # sendmmsg: several datagrams, one write; the echoes come back in order
            w0 = fuse["requests"]
            out["sent"] = s.sendmmsg([(b"a", dest), (b"", dest), (b"ccc", dest)])
            out["send_requests"] = fuse["requests"] - w0
            got2: list[bytes] = []
            while len(got2) < 3:
                got2 += [d for d, _a in s.recvmmsg(8)]
            out["echo"] = got2
        finally:
            s.close()
        return out

    try:
        out = await in_stack(net, client)
        assert out["requests"] == 1
        assert out["batches"] == 1
        assert out["warm"] == [(b"warm", dest)]
        assert out["got"] == [((b"%d:" % i).ljust(20, b"x"), dest) for i in range(10)]
        assert out["three"] == [b"0:", b"1:", b"2:"] and out["two"] == [b"3:", b"4:"]
        assert out["empty"] == "EAGAIN"
        assert out["cut"] == [10, 10]
        assert out["vlen0"] == []
        assert out["sent"] == 3 and out["send_requests"] == 1
        assert out["echo"] == [b"a", b"", b"ccc"]
    finally:
        await stop(peer)


async def test_sendmmsg_partial_batch_and_malformed_records(net) -> None:  # type: ignore[no-untyped-def]
    from stack.services import SOCKETS

    peer = await kpeer(net, 7974)
    door = net.st.services.get(SOCKETS).counters
    dest = (net.KERNEL_IP, 7974)
    nowhere = ("10.99.0.1", 9)  # no route: the batch stops there

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.bind(("0.0.0.0", 7975))
            msgs = [(b"p1", dest), (b"p2", dest), (b"bad", nowhere), (b"p4", dest)]
            out["first"] = s.sendmmsg(msgs)
            out["second"] = _errname(lambda: s.sendmmsg(msgs[2:]))  # its error now
            out["third"] = s.sendmmsg(msgs[3:])
            got: list[bytes] = []
            s.settimeout(5)
            while len(got) < 3:
                got += [d for d, _a in s.recvmmsg(8)]
            out["echo"] = got
            fd = s.fileno()
            good = _record(b"ok", dest)
            bad = [
                ("short header", good[:HDR - 1]),
                ("length past the end", _record(b"xy", dest, length=100)),
                ("flags", _record(b"xy", dest, flags=1)),
                ("ifindex", _record(b"xy", dest, ifindex=3)),
                ("huge addrlen", _record(b"xy", dest, alen=0xFFFFFFFF)),
                ("addrlen 4", _record(b"xy", dest, alen=4)),
                ("negative length", abi.MSG.pack(0xFFFFFFFF, 0, 0, 0, b"") + b"xy"),
            ]
            for name, rec in bad:
                out[name] = _errname(lambda rec=rec: os.write(fd, rec))  # type: ignore[misc]
            v6 = abi.SOCKADDR.unpack(abi.pack_sockaddr(libsocket.AF_INET6, "::1", 9))
            out["v6 address"] = _errname(lambda: os.write(
                fd, abi.MSG.pack(1, 0, v6[1], 0, v6[2]) + b"z"))
            # a good record then garbage: the good one is sent, its bytes returned
            padded = good + bytes(abi.msg_pad(len(good)) - len(good))
            out["good+garbage"] = os.write(fd, padded + b"\xff" * 20)
            out["good+garbage len"] = len(padded)
            out["echo2"] = s.recvfrom(100)
            # connected peer: address length 0
            s.connect(dest)
            out["to peer"] = os.write(fd, _record(b"peer"))
            out["echo3"] = s.recvfrom(100)
            # a read with no room for a header
            out["tiny read"] = _errname(lambda: os.read(fd, HDR - 1))
        finally:
            s.close()
        return out

    try:
        m0 = door["msg_malformed"]
        out = await in_stack(net, client)
        assert out["first"] == 2
        assert out["second"] in ("ENETUNREACH", "EHOSTUNREACH"), out["second"]
        assert out["third"] == 1
        assert out["echo"] == [b"p1", b"p2", b"p4"]
        for name in ("short header", "length past the end", "flags", "ifindex", "huge addrlen",
                     "addrlen 4", "negative length"):
            assert out[name] == "EINVAL", (name, out[name])
        assert out["v6 address"] == "EAFNOSUPPORT"
        assert out["good+garbage"] == out["good+garbage len"]
        assert out["echo2"] == (b"ok", dest)
        assert out["to peer"] == HDR + 4 and out["echo3"] == (b"peer", dest)
        assert out["tiny read"] == "EINVAL"
        assert door["msg_malformed"] - m0 >= 9
        assert door["msg_write_short"] >= 1
    finally:
        await stop(peer)


async def test_mode_ioctl_hostile_values_and_plain_users(net) -> None:  # type: ignore[no-untyped-def]
    peer = await kpeer(net, 7976)
    dest = (net.KERNEL_IP, 7976)
    hole = (net.KERNEL_IP, 7977)

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        tcp = os.open(f"{net.sockdir}/2/1/6", os.O_RDWR)
        fd = os.open(f"{net.sockdir}/2/2/17", os.O_RDWR)
        plain = -1
        try:
            out["tcp"] = _errname(lambda: _msgmode(tcp, 1))
            out["negative"] = _errname(lambda: _msgmode(fd, -1))
            out["huge"] = _msgmode(fd, 1 << 30)
            out["clamped"] = _msgmode(fd, 4)
            fcntl.ioctl(fd, abi.IOP_BIND, abi.pack_sockaddr_in("0.0.0.0", 7978))
            # many empty records in one write: at most IOP_MSG_MAXCOUNT are taken
            many = _record(b"", hole) * (abi.IOP_MSG_MAXCOUNT + 10)
            out["many"] = os.write(fd, many)
            # another open of the same socket (the text door's data file): mode off, plain
            info = abi.SockInfo.unpack(fcntl.ioctl(fd, abi.IOP_SOCKINFO, bytes(abi.SOCKINFO.size)))
            plain = os.open(f"{net.sockdir}/{info.name}/data", os.O_RDWR)
            fcntl.ioctl(plain, abi.IOP_SENDTO, abi.pack_sockaddr_in(*dest))
            out["plain write"] = os.write(plain, b"plain")
            out["plain read"] = os.read(plain, 100)  # the echo, no header
            out["plain from"] = abi.unpack_sockaddr(fcntl.ioctl(
                plain, abi.IOP_RECVADDR, bytes(abi.SOCKADDR.size)))
            os.write(fd, _record(b"rec", dest))
            raw = os.read(fd, 200)
            length, flags, alen, _ifx, field = abi.MSG.unpack_from(raw)
            out["record"] = (raw[HDR:HDR + length], flags, alen, abi.unpack_sockaddr(field))
            # IOP_RECVADDR follows message-mode reads too
            out["recvaddr"] = abi.unpack_sockaddr(fcntl.ioctl(
                fd, abi.IOP_RECVADDR, bytes(abi.SOCKADDR.size)))
            # truncation flag on the raw record
            os.write(fd, _record(b"0123456789", dest))
            raw = os.read(fd, HDR + 4)
            length, flags, *_ = abi.MSG.unpack_from(raw)
            out["trunc"] = (raw[HDR:], length, flags)
            out["off"] = _msgmode(fd, 0)
            os.write(fd, b"x")  # mode off: a plain write to... no destination
        except OSError as exc:
            out["off write"] = errno.errorcode[exc.errno or 0]
        finally:
            for f in (tcp, fd, plain):
                if f >= 0:
                    os.close(f)
        return out

    try:
        out = await in_stack(net, client)
        assert out["tcp"] == errno.errorcode[errno.EOPNOTSUPP]
        assert out["negative"] == "EINVAL"
        assert out["huge"] == 0 and out["clamped"] == abi.IOP_MSG_MAXCOUNT
        assert out["many"] == HDR * abi.IOP_MSG_MAXCOUNT
        assert out["plain write"] == 5 and out["plain read"] == b"plain"
        assert out["plain from"] == dest
        assert out["record"] == (b"rec", 0, 16, dest)
        assert out["recvaddr"] == dest
        assert out["trunc"] == (b"0123", 4, abi.IOP_MSG_TRUNC)
        assert out["off"] == 4
        assert out["off write"] == "EDESTADDRREQ"
        # the stack still serves: a fresh socket round trip
        def again() -> Any:
            with libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(b"still", dest)
                return s.recvfrom(100)
        assert await in_stack(net, again) == (b"still", dest)
    finally:
        await stop(peer)


async def test_raw_fd_waits_as_a_plain_read(net) -> None:  # type: ignore[no-untyped-def]
    """SO_RCVTIMEO and O_NONBLOCK apply to a message-mode read's first datagram."""
    import socket as std
    import struct

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        fd = os.open(f"{net.sockdir}/2/2/17", os.O_RDWR)
        try:
            _msgmode(fd, 8)
            tv = struct.pack("<qq", 0, 200_000)
            fcntl.ioctl(fd, abi.IOP_SETSOCKOPT, abi.SOCKOPT.pack(
                std.SOL_SOCKET, std.SO_RCVTIMEO, len(tv), 0, tv))
            t0 = time.monotonic()
            out["timeout"] = _errname(lambda: os.read(fd, 4096))
            out["waited"] = time.monotonic() - t0
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            t0 = time.monotonic()
            out["nonblock"] = _errname(lambda: os.read(fd, 4096))
            out["nonblock_waited"] = time.monotonic() - t0
        finally:
            os.close(fd)
        return out

    out = await in_stack(net, client)
    assert out["timeout"] == "EAGAIN" and 0.15 <= out["waited"] < 3, out
    assert out["nonblock"] == "EAGAIN" and out["nonblock_waited"] < 0.15, out


async def test_fileno_socket_asks_the_mode(net) -> None:  # type: ignore[no-untyped-def]
    peer = await kpeer(net, 7979)
    dest = (net.KERNEL_IP, 7979)

    def client() -> list[Any]:
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.settimeout(5)
            s.sendto(b"one", dest)  # mode on (1)
            got = [s.recvfrom(100)]
            d = s.dup()  # same open file, mode unknown to the copy: it asks
            d.settimeout(5)
            d.sendto(b"two", dest)
            got.append(d.recv(100))  # stripped, not a header
            got.append(_msgmode(s.fileno(), 1))  # still 1: the copy put it back/kept it
            d.close()
            return got
        finally:
            s.close()

    try:
        assert await in_stack(net, client) == [(b"one", dest), b"two", 1]
    finally:
        await stop(peer)


#: a C program that speaks message mode from the header alone: a batched send (3
#: records, one write), then a batched read of the echoes and of a burst
C_PROG = r"""
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "io_pkt_socket.h"

static char buf[1 << 16];

static size_t put(char *at, size_t off, const char *data, struct iop_sockaddr *to) {
    struct iop_msg m;
    memset(&m, 0, sizeof m);
    off = IOP_MSG_PAD(off);
    m.len = strlen(data);
    m.addrlen = to->len;
    memcpy(&m.addr, &to->addr, sizeof m.addr);
    memcpy(at + off, &m, sizeof m);
    memcpy(at + off + sizeof m, data, m.len);
    return off + sizeof m + m.len;
}

static int drain(int fd, int want) {
    int seen = 0;
    while (seen < want) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) { perror("read"); return -1; }
        int recs = 0;
        for (size_t off = 0; off + sizeof(struct iop_msg) <= (size_t)n;) {
            struct iop_msg m;
            memcpy(&m, buf + off, sizeof m);
            struct sockaddr_in *a = &m.addr.sin;
            printf("rec %.*s from %s:%d flags %u\n", (int)m.len, buf + off + sizeof m,
                   inet_ntoa(a->sin_addr), ntohs(a->sin_port), m.flags);
            off = IOP_MSG_PAD(off + sizeof m + m.len);
            recs++;
        }
        printf("read %d records\n", recs);
        seen += recs;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    char path[512];
    snprintf(path, sizeof path, "%s/dev/socket/2/2/17", getenv("SOCK"));
    int fd = open(path, O_RDWR);
    if (fd < 0) { perror("open"); return 1; }
    struct iop_sockaddr me = IOP_SOCKADDR_IN(INADDR_ANY, htons(7981), 0);
    if (ioctl(fd, IOP_BIND, &me) < 0) { perror("bind"); return 1; }
    int32_t count = 16;
    if (ioctl(fd, IOP_MSGMODE, &count) < 0) { perror("IOP_MSGMODE"); return 1; }
    printf("old mode %d\n", count);
    struct iop_sockaddr to = IOP_SOCKADDR_IN(inet_addr(argv[1]), htons(atoi(argv[2])), 0);
    size_t len = put(buf, 0, "c-one", &to);
    len = put(buf, len, "c-two", &to);
    len = put(buf, len, "c-three", &to);
    ssize_t w = write(fd, buf, len);
    printf("wrote %zd of %zu\n", w, len);
    usleep(300000);
    if (drain(fd, 3) < 0) return 1;
    len = put(buf, 0, "burst 4 8", &to);
    if (write(fd, buf, len) != (ssize_t)len) { perror("write"); return 1; }
    usleep(300000);
    if (drain(fd, 4) < 0) return 1;
    close(fd);
    return 0;
}
"""


async def test_c_program_batches_with_the_header(net, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "msgmode.c"
    src.write_text(C_PROG)
    exe = str(tmp_path / "msgmode")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-I", f"{REPO}/rmgr/include",
                    "-o", exe, str(src)], check=True, capture_output=True)
    peer = await kpeer(net, 7980)
    try:
        with trio.fail_after(20):
            r = await trio.run_process([exe, net.KERNEL_IP, "7980"], env=net.env(),
                                       capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.decode().splitlines()
        k = f"{net.KERNEL_IP}:7980"
        assert lines[:2] == ["old mode 0", "wrote 167 of 167"], lines
        assert lines[2:6] == [f"rec c-one from {k} flags 0", f"rec c-two from {k} flags 0",
                              f"rec c-three from {k} flags 0", "read 3 records"], lines
        assert lines[6:] == [f"rec {i}:xxxxxx from {k} flags 0" for i in range(4)] + \
            ["read 4 records"], lines
    finally:
        await stop(peer)


async def test_ipv6_recvfrom_sendto_recvmmsg_and_pktinfo(net6: Net6) -> None:  # noqa: F811
    p = await kernel_server(net6, 7982)
    dest = (KERNEL, 7982, 0, 0)

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        s = libsocket.socket(libsocket.AF_INET6, libsocket.SOCK_DGRAM)
        try:
            s.settimeout(5)
            s.bind(("::", 7983))
            s.setsockopt(libsocket.IPPROTO_IPV6, 49, 1)  # IPV6_RECVPKTINFO
            s.sendto(b"hi6", (KERNEL, 7982))
            out["recvfrom"] = s.recvfrom(100)
            out["sent"] = s.sendmmsg([(b"a", (KERNEL, 7982)), (b"b", (KERNEL, 7982))])
            got: list[Any] = []
            while len(got) < 2:
                got += s.recvmmsg(8)
            out["mm"] = got
            s.sendto(b"pk", (KERNEL, 7982))
            data, anc, _fl, addr = s.recvmsg(100, 100)
            out["recvmsg"] = (data, addr, [(lvl, typ, len(v)) for lvl, typ, v in anc],
                              int.from_bytes(anc[0][2][16:20], sys.byteorder) if anc else 0)
        finally:
            s.close()
        return out

    try:
        out = await in_stack6(net6, client)
        assert out["recvfrom"] == (b"HI6", dest)
        assert out["sent"] == 2
        assert sorted(out["mm"]) == [(b"A", dest), (b"B", dest)]
        data, addr, anc, ifindex = out["recvmsg"]
        assert (data, addr) == (b"PK", dest)
        assert anc == [(41, 50, 20)] and ifindex == net6.ifindex
    finally:
        await stop6(p)


async def test_a_lone_first_record_that_times_out_waits_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A message-mode write whose only record cannot go (SO_SNDTIMEO ran out, or
    EAGAIN): the write's one wait ends it, with no second wait for the same record."""
    from types import SimpleNamespace

    from stack.sockets import door

    calls: list[object] = []

    async def send(conn: object, data: memoryview, dest: object, nonblock: bool) -> int:
        calls.append(data)
        raise BlockingIOError(errno.EAGAIN, "send timed out (SO_SNDTIMEO)")

    monkeypatch.setattr(door, "send", send)
    fake = SimpleNamespace(conn=SimpleNamespace(ep=None))
    with pytest.raises(BlockingIOError):
        await door.SocketHandle._send_run(fake, None, [memoryview(b"x")], False,  # type: ignore[arg-type]
                                          first=True)
    assert len(calls) == 1
