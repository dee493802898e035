"""Run the same socket calls with the stdlib module ("real", in the namespace) or with
rmgr.libsocket ("lib", SOCK set) and print what happened, one JSON line per check.

usage: behaviours.py real|lib SERVER_IP"""

import errno
import json
import os
import select
import struct
import sys
import time

which, server = sys.argv[1], sys.argv[2]
if which == "lib":
    from rmgr import libsocket as socket
else:
    import socket

results = []


def check(name, fn):  # type: ignore[no-untyped-def]
    try:
        out = fn()
        results.append((name, "ok", out))
    except Exception as exc:  # noqa: BLE001
        results.append((name, type(exc).__name__, getattr(exc, "errno", None), str(exc)
                        if isinstance(exc, TimeoutError) else None))


def refused():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.connect((server, 1))


def refused_ex():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        return errno.errorcode.get(s.connect_ex((server, 1)))


def nonblock_connect():  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((server, 7100))
    except BlockingIOError as exc:
        r = ["EINPROGRESS" if exc.errno == errno.EINPROGRESS else exc.errno]
    else:
        r = ["connected at once"]
    _, w, _ = select.select([], [s], [], 5)
    r.append(bool(w))
    r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    r.append(s.getblocking())
    r.append(s.gettimeout())
    s.close()
    return r


def nonblock_refused():  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((server, 1))
    except BlockingIOError:
        pass
    except ConnectionRefusedError:
        return "refused at once"
    p = select.poll()
    p.register(s, select.POLLOUT)
    ev = p.poll(5000)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.close()
    return [bool(ev and ev[0][1] & (select.POLLOUT | select.POLLERR)), errno.errorcode.get(err)]


def eagain():  # type: ignore[no-untyped-def]
    with socket.create_connection((server, 7100)) as s:
        s.setblocking(False)
        s.recv(10)


def timeout_recv():  # type: ignore[no-untyped-def]
    with socket.create_connection((server, 7100), timeout=3) as s:
        s.settimeout(0.3)
        t = time.monotonic()
        try:
            s.recv(10)
        except TimeoutError as exc:
            took = time.monotonic() - t
            return [type(exc).__name__, str(exc), 0.25 < took < 2, isinstance(exc, socket.timeout)]


def echo_roundtrip():  # type: ignore[no-untyped-def]
    with socket.create_connection((server, 7100)) as s:
        s.sendall(b"x" * 100000)
        got = b""
        while len(got) < 100000:
            got += s.recv(65536)
        buf = bytearray(10)
        s.sendall(b"abc")
        n = s.recv_into(buf)
        return [len(got), n, bytes(buf[:n]).decode()]


def peek_and_waitall():  # type: ignore[no-untyped-def]
    data = bytes(range(256)) * 400
    with socket.create_connection((server, 7100)) as s:
        s.sendall(data)
        peeked = s.recv(10, socket.MSG_PEEK)
        peeked_again = s.recv(10, socket.MSG_PEEK)
        first = s.recv(10)
        rest = s.recv(len(data) - 10, socket.MSG_WAITALL)  # one call, all of it
        s.shutdown(socket.SHUT_WR)
        eof = s.recv(10, socket.MSG_WAITALL)  # at EOF, WAITALL returns what there is
        return [peeked == peeked_again == first == data[:10], len(rest), rest == data[10:],
                eof.decode()]


def udp_peek():  # type: ignore[no-untyped-def]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"one", (server, 7102))
        d1, a1 = s.recvfrom(100, socket.MSG_PEEK)
        s.sendto(b"two", (server, 7102))
        d2, a2 = s.recvfrom(2, socket.MSG_PEEK)  # cut, still queued whole
        d3 = s.recv(100)
        d4 = s.recv(100)
        return [d1.decode(), list(a1), d2.decode(), list(a2), d3.decode(), d4.decode()]


def keepalive_times():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        opts = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        # the defaults (the count is not compared: 8 probes as in BSD, Linux sends 9)
        r = [[s.getsockopt(socket.IPPROTO_TCP, o) for o in opts[:2]]]
        for o, v in zip(opts, (60, 5, 3), strict=True):
            s.setsockopt(socket.IPPROTO_TCP, o, v)
        r.append([s.getsockopt(socket.IPPROTO_TCP, o) for o in opts])
        for o, bad in zip(opts, (0, 40000, 200), strict=True):
            try:
                s.setsockopt(socket.IPPROTO_TCP, o, bad)
                r.append("accepted")
            except OSError as exc:
                r.append(errno.errorcode[exc.errno])
        return r


def makefile_lines():  # type: ignore[no-untyped-def]
    with socket.create_connection((server, 7103)) as s, s.makefile("rb") as f:
        return f.readline().decode()


def peer_close_eof():  # type: ignore[no-untyped-def]
    with socket.create_connection((server, 7100)) as s:
        s.shutdown(socket.SHUT_WR)
        return s.recv(10)


def reset_send():  # type: ignore[no-untyped-def]
    s = socket.create_connection((server, 7101))
    s.sendall(b"go")
    time.sleep(0.5)
    errs = []
    for _ in range(3):
        try:
            s.send(b"more")
            errs.append("sent")
        except OSError as exc:
            errs.append(type(exc).__name__)
        time.sleep(0.1)
    s.close()
    return "error" if any(e in ("ConnectionResetError", "BrokenPipeError") for e in errs) \
        else errs


def reset_recv():  # type: ignore[no-untyped-def]
    s = socket.create_connection((server, 7101))
    s.sendall(b"go")
    try:
        return s.recv(10)
    finally:
        s.close()


def options():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        r = []
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        r.append(s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
        r.append(s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL))
        r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE))
        r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
        r.append(list(struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))))
        s.settimeout(2.5)
        r.append([s.gettimeout(), s.getblocking()])
        s.setblocking(True)
        r.append([s.gettimeout(), s.getblocking()])
        r.append([int(s.family), int(s.type), s.proto])
        return r


def notconn():  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.getpeername()


def udp():  # type: ignore[no-untyped-def]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"ping", (server, 7102))
        d, a = s.recvfrom(100)
        s.sendto(b"x" * 3000, (server, 7102))
        buf = bytearray(5000)
        n, a2 = s.recvfrom_into(buf)
        s.sendto(b"abcdef", (server, 7102))
        d3 = s.recv(3)  # one read = one datagram, cut
        s.connect((server, 7102))
        s.send(b"conn")
        d4 = s.recv(100)
        return [d.decode(), list(a), n, list(a2), d3.decode(), d4.decode(),
                list(s.getpeername())]


def listen_ready():  # type: ignore[no-untyped-def]
    with socket.socket() as srv:
        srv.bind(("0.0.0.0", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r0, _, _ = select.select([srv], [], [], 0)
        c = socket.socket()
        c.settimeout(3)
        c.connect(("127.0.0.1" if which == "real" else own_ip(), port))
        r1, _, _ = select.select([srv], [], [], 3)
        a, addr = srv.accept()
        srv.setblocking(False)
        try:
            srv.accept()
            again = "accepted"
        except BlockingIOError:
            again = "EAGAIN"
        a.sendall(b"hi")
        got = c.recv(10)
        c.close()
        eof = a.recv(10)
        a.close()
        return [bool(r0), bool(r1), type(addr).__name__, got.decode(), eof, again]


def addrinuse():  # type: ignore[no-untyped-def]
    with socket.socket() as a, socket.socket() as b:
        a.bind(("0.0.0.0", 0))
        a.listen()
        b.bind(("0.0.0.0", a.getsockname()[1]))


def own_ip() -> str:
    return os.environ.get("OWN_IP", "127.0.0.1")


for name, fn in list(globals().items()):
    if callable(fn) and getattr(fn, "__module__", None) == "__main__" and name not in (
            "check", "own_ip"):
        check(name, fn)
for r in results:
    print(json.dumps(r, default=repr))
