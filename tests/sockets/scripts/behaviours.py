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


POLL_BITS = [(getattr(select, n), n) for n in (
    "POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM",
    "POLLWRNORM", "POLLRDHUP")]
ALL = select.POLLIN | select.POLLOUT | select.POLLRDHUP


def mask(s, events=ALL):  # type: ignore[no-untyped-def]
    """The exact revents of one poll(0) on ``s`` registered for ``events``, as names."""
    p = select.poll()
    p.register(s, events)
    ev = p.poll(0)
    got = ev[0][1] if ev else 0
    return [n for bit, n in POLL_BITS if got & bit] + ([hex(got)] if got & ~sum(
        bit for bit, _ in POLL_BITS) else [])


def wait(s, events, timeout=5.0):  # type: ignore[no-untyped-def]
    """Block in poll until ``events`` (or POLLERR/POLLHUP) on ``s``; its revents as names."""
    p = select.poll()
    p.register(s, events)
    ev = p.poll(int(timeout * 1000))
    return mask(s, events) if ev else ["timeout"]


def outcome(fn):  # type: ignore[no-untyped-def]
    try:
        return ["ok", fn()]
    except OSError as exc:
        return [type(exc).__name__, errno.errorcode.get(exc.errno or 0)]


def nonblock_refused():  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((server, 1))
    except BlockingIOError:
        pass
    except ConnectionRefusedError:
        return "refused at once"
    r = [wait(s, select.POLLOUT), mask(s), mask(s, 0)]
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    r += [errno.errorcode.get(err), mask(s)]  # reading SO_ERROR clears POLLERR
    r.append(outcome(lambda: s.recv(10).decode()))  # the attempt is over: EOF
    s.close()
    return r


def poll_fresh():  # type: ignore[no-untyped-def]
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        return [mask(t), mask(u)]


def poll_reset():  # type: ignore[no-untyped-def]
    # the peer reads our "go" then resets
    s = socket.create_connection((server, 7101), timeout=5)
    s.setblocking(False)
    r = [mask(s)]
    s.sendall(b"go")
    r.append(wait(s, select.POLLIN))
    r.append(mask(s))
    r.append(mask(s, 0))  # POLLERR and POLLHUP come even when not asked for
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    ev = ep.poll(0)
    ep.close()
    r.append(ev[0][1] == select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP if ev else ev)
    r.append(outcome(lambda: s.recv(10).decode()))  # ECONNRESET
    r.append(mask(s))  # the error was reported: POLLERR is gone, the hang-up stays
    r.append(outcome(lambda: s.recv(10).decode()))  # then EOF
    r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    s.close()
    return r


def poll_peer_fin_then_shut():  # type: ignore[no-untyped-def]
    # the peer closes at once: half-closed (POLLRDHUP, no POLLHUP) until we shut too
    s = socket.create_connection((server, 7104), timeout=5)
    r = [wait(s, select.POLLIN)]
    r.append(mask(s))
    s.shutdown(socket.SHUT_WR)
    r.append(mask(s))
    r.append(s.recv(10).decode())
    r.append(mask(s, select.POLLIN))
    s.close()
    return r


def poll_shut_wr_only():  # type: ignore[no-untyped-def]
    # a peer that never reads nor closes (never accepted): our FIN alone is no hang-up
    s = socket.create_connection((server, 7105), timeout=5)
    r = [mask(s)]
    s.shutdown(socket.SHUT_WR)
    r.append(mask(s))
    s.close()
    return r


def poll_shut_then_peer_fin():  # type: ignore[no-untyped-def]
    s = socket.create_connection((server, 7100), timeout=5)  # echo: closes after our FIN
    s.shutdown(socket.SHUT_WR)
    r = [wait(s, select.POLLIN)]
    r.append(mask(s))
    r.append(s.recv(10).decode())
    r.append(mask(s))
    s.close()
    return r


def poll_shut_rdwr():  # type: ignore[no-untyped-def]
    s = socket.create_connection((server, 7100), timeout=5)
    s.shutdown(socket.SHUT_RDWR)
    r = [mask(s), s.recv(10).decode()]
    s.close()
    return r


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


def buffer_options():  # type: ignore[no-untyped-def]
    # SO_RCVBUF/SO_SNDBUF: Linux stores twice what is asked (bookkeeping), the stack too
    # (values well inside Linux's rmem_max/wmem_max and above its minimums)
    r = []
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for s in (t, u):
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                s.setsockopt(socket.SOL_SOCKET, opt, 32768)
                r.append(s.getsockopt(socket.SOL_SOCKET, opt))
                s.setsockopt(socket.SOL_SOCKET, opt, 50000)
                r.append(s.getsockopt(socket.SOL_SOCKET, opt))
    return r


def broadcast_option():  # type: ignore[no-untyped-def]
    r = []
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for s in (t, u):
            r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)
            r.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
    # (sending to a broadcast address is not compared: the namespace has no broadcast
    # route, so Linux says ENETUNREACH before it looks at SO_BROADCAST; test_door.py
    # checks the EACCES on the stack's subnet broadcast)
    return r


def rcvtimeo():  # type: ignore[no-untyped-def]
    # SO_RCVTIMEO on a blocking socket (no settimeout): recv fails with EAGAIN
    tv = struct.pack("ll", 0, 300000)
    r = []
    with socket.create_connection((server, 7100)) as t, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect((server, 7102))
        for s in (t, u):
            r.append(list(struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_RCVTIMEO, 16))))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            r.append(list(struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_RCVTIMEO, 16))))
            r.append(s.getblocking())
            t0 = time.monotonic()
            try:
                s.recv(10)
                r.append("recv returned")
            except OSError as exc:
                r.append([type(exc).__name__, errno.errorcode.get(exc.errno or 0),
                          0.25 < time.monotonic() - t0 < 5])
            s.send(b"back")
            r.append(s.recv(10).decode())  # data that comes in time is read
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
            "check", "own_ip", "mask", "wait", "outcome"):
        check(name, fn)
for r in results:
    print(json.dumps(r, default=repr))
