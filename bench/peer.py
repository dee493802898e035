"""The other end of a benchmark workload: a small blocking socket program, run inside a
kernel network namespace (``ip netns exec NS python -m bench.peer ...``) or, with
``--lib``, over the stack's socket files through ``rmgr.libsocket`` (SOCK= selects it),
or, with ``--file PATH``, over bench/floor/fuse_relay.c's socket file (bench.filesock:
every connect opens PATH, which the relay connects for it).

Each mode prints one JSON object on stdout when done (``{"ready": true}`` first for the
modes the caller must wait for). Modes::

    sink PORT [6]                 accept one, read to EOF: {"bytes", "seconds"} (6: an
                                  IPv6 listener on ::)
    source HOST PORT SECONDS      connect, send for SECONDS, shut down, wait for the
                                  peer's close: {"bytes", "seconds"}
    source-stdin HOST PORT        as source, sending until stdin reaches EOF
    sink-connect HOST PORT        as sink, but connecting
    source-server PORT SECONDS    as source, but accepting one
    echo-server PORT              accept one, echo until EOF
    echo-client HOST PORT N       N 1-byte round trips: {"rtt_us": [...]}
    accept-server PORT            accept and close until killed
    connect-loop HOST PORT SECONDS  connect + close repeatedly: {"count", "seconds"}
    connect-window HOST PORT SECONDS K  connect repeatedly, at most K connections the
                                  server has not closed yet: {"count", "seconds"}
    udp-sink PORT SECONDS         count datagrams: {"count", "seconds"}
    udp-blast HOST PORT SECONDS SIZE  send datagrams as fast as possible: {"count",
                                  "seconds"}
    udp-hole PORT                 bind PORT and never read (datagrams are dropped there
                                  without an ICMP error back); ready, hold until stdin EOF
    udp-count PORT SECONDS        blocking receive; count datagrams for SECONDS from the
                                  first (the sender must outlast it): {"count", "seconds"}.
                                  A socket with recvmmsg (rmgr.libsocket) takes up to
                                  BATCH queued datagrams per call; the stdlib's, recv
    udp-count-plain PORT SECONDS  the same with recv only (one datagram per call)
    udp-server PORT               a DNS-like server: answer each datagram with its own
                                  bytes, until an empty one: {"count"}. With recvmmsg and
                                  sendmmsg (rmgr.libsocket): the requests queued (up to
                                  BATCH) per call, their answers in one call; else
                                  recvfrom/sendto
    udp-server-plain PORT         the same with recvfrom/sendto only
    udp-rr HOST PORT SECONDS SIZE W  requests of SIZE bytes, W in flight, for SECONDS;
                                  then an empty datagram (the server stops):
                                  {"count", "seconds", "lost", "rtt_p50", "rtt_p99"}
    hold HOST PORT N              open N connections, print ready, hold until stdin EOF
"""

from __future__ import annotations

import collections
import errno
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

CHUNK = 256 * 1024


def out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _listener(sk: Any, port: int, backlog: int = 1024, family: int = 4) -> Any:
    s = sk.socket(sk.AF_INET6 if family == 6 else sk.AF_INET, sk.SOCK_STREAM)
    s.setsockopt(sk.SOL_SOCKET, sk.SO_REUSEADDR, 1)
    s.bind(("::" if family == 6 else "0.0.0.0", port))
    s.listen(backlog)
    return s


def _drain(c: Any) -> None:
    """Read to EOF in CHUNK reads; print the bytes and the seconds from the first read's
    return to the last."""
    buf = bytearray(CHUNK)
    n = c.recv_into(buf)
    t0 = time.perf_counter()
    total = n
    while n:
        n = c.recv_into(buf)
        total += n
    dt = time.perf_counter() - t0
    c.close()
    out({"bytes": total, "seconds": dt})


def sink(sk: Any, port: int, family: int = 4) -> None:
    ls = _listener(sk, port, family=family)
    out({"ready": True})
    c, _ = ls.accept()
    _drain(c)
    ls.close()


def sink_connect(sk: Any, host: str, port: int) -> None:
    _drain(_connect(sk, host, port))


def _connect(sk: Any, host: str, port: int) -> Any:
    """Connect with a timeout, then use the socket in blocking mode (the ordinary case:
    with a timeout, rmgr.libsocket turns each call into non-blocking I/O plus poll)."""
    c = sk.create_connection((host, port), timeout=30)
    c.settimeout(None)
    return c


def _send_while(sk: Any, c: Any, more: Callable[[], bool]) -> None:
    """Send CHUNKs while ``more()``, shut down, wait for the receiver's close; print the
    bytes and the seconds."""
    data = b"\xa5" * CHUNK
    total = 0
    t0 = time.perf_counter()
    while more():
        c.sendall(data)
        total += CHUNK
    c.shutdown(sk.SHUT_WR)
    while c.recv(4096):  # the receiver closes after reading everything
        pass
    dt = time.perf_counter() - t0
    c.close()
    out({"bytes": total, "seconds": dt})


def _send_for(sk: Any, c: Any, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    _send_while(sk, c, lambda: time.perf_counter() < deadline)


def source(sk: Any, host: str, port: int, seconds: float) -> None:
    _send_for(sk, _connect(sk, host, port), seconds)


def source_server(sk: Any, port: int, seconds: float) -> None:
    ls = _listener(sk, port)
    out({"ready": True})
    c, _ = ls.accept()
    _send_for(sk, c, seconds)
    ls.close()


def source_stdin(sk: Any, host: str, port: int) -> None:
    import threading

    done = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    _send_while(sk, _connect(sk, host, port), lambda: not done.is_set())


def echo_server(sk: Any, port: int) -> None:
    ls = _listener(sk, port)
    out({"ready": True})
    c, _ = ls.accept()
    c.setsockopt(sk.IPPROTO_TCP, sk.TCP_NODELAY, 1)
    while True:
        b = c.recv(4096)
        if not b:
            break
        c.sendall(b)
    c.close()
    ls.close()


def echo_client(sk: Any, host: str, port: int, n: int) -> None:
    c = _connect(sk, host, port)
    c.setsockopt(sk.IPPROTO_TCP, sk.TCP_NODELAY, 1)
    now = time.perf_counter
    for _ in range(20):  # warm up
        c.sendall(b"x")
        c.recv(1)
    rtt = []
    for _ in range(n):
        t0 = now()
        c.sendall(b"x")
        c.recv(1)
        rtt.append((now() - t0) * 1e6)
    c.close()
    out({"rtt_us": rtt})


def accept_server(sk: Any, port: int) -> None:
    ls = _listener(sk, port)
    out({"ready": True})
    while True:
        c, _ = ls.accept()
        c.close()


def connect_loop(sk: Any, host: str, port: int, seconds: float) -> None:
    count = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        c = sk.create_connection((host, port), timeout=10)
        c.close()
        count += 1
    out({"count": count, "seconds": time.perf_counter() - t0})


def connect_window(sk: Any, host: str, port: int, seconds: float, window: int) -> None:
    """Connect repeatedly, holding at most ``window`` connections the server has not closed
    yet: past that, wait for the server's EOF on the oldest (it was accepted and closed:
    listeners accept in order), then close it. So the listener's queue never overflows
    (no dropped SYNs and 1 s retransmits), however slow the acceptor. Stops quietly on a
    refused or reset connection once some succeeded (the server went away)."""
    conns: collections.deque[Any] = collections.deque()
    count = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        while time.perf_counter() < deadline:
            conns.append(sk.create_connection((host, port), timeout=10))
            if len(conns) >= window:
                c = conns.popleft()
                c.recv(1)  # EOF
                c.close()
                count += 1
    except (ConnectionRefusedError, ConnectionResetError):
        if not count:
            raise
    out({"count": count, "seconds": time.perf_counter() - t0})


def udp_sink(sk: Any, port: int, seconds: float) -> None:
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.setsockopt(sk.SOL_SOCKET, sk.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    out({"ready": True})
    s.recv(2048)
    count = 1
    t0 = time.perf_counter()
    s.settimeout(0.5)
    deadline = t0 + seconds
    try:
        while time.perf_counter() < deadline:
            s.recv(2048)
            count += 1
    except (TimeoutError, OSError):
        pass
    out({"count": count, "seconds": time.perf_counter() - t0})


def udp_blast(sk: Any, host: str, port: int, seconds: float, size: int) -> None:
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.connect((host, port))
    data = b"u" * size
    count = 0
    send = s.send
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(64):
            try:
                send(data)
                count += 1
            except OSError as exc:  # a full queue, or an ICMP error from the far side
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                    raise
    out({"count": count, "seconds": time.perf_counter() - t0})


#: datagrams a udp-count / udp-server with recvmmsg takes per call at most
BATCH = 64


def udp_count(sk: Any, port: int, seconds: float, plain: bool = False) -> None:
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    try:
        s.setsockopt(sk.SOL_SOCKET, sk.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    s.bind(("0.0.0.0", port))
    out({"ready": True})
    now = time.perf_counter
    count = 0
    mm = None if plain else getattr(s, "recvmmsg", None)
    if mm is not None:
        mm(BATCH, 2048)
        t0 = now()
        deadline = t0 + seconds
        while True:
            for _ in range(8):
                count += len(mm(BATCH, 2048))
            if now() >= deadline:
                break
        out({"count": count, "seconds": now() - t0})
        return
    recv = s.recv
    recv(2048)
    t0 = now()
    deadline = t0 + seconds
    while True:
        for _ in range(64):
            recv(2048)
        count += 64
        if now() >= deadline:
            break
    out({"count": count, "seconds": now() - t0})


def udp_server(sk: Any, port: int, plain: bool = False) -> None:
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    out({"ready": True})
    count = 0
    mm = None if plain else getattr(s, "recvmmsg", None)
    if mm is not None:
        sendmmsg = s.sendmmsg
        while True:
            got = mm(BATCH, 2048)
            answers = [m for m in got if m[0]]
            while answers:  # a short batch: the rest again
                answers = answers[sendmmsg(answers):]
            count += sum(1 for m in got if m[0])
            if not got or any(not m[0] for m in got):
                break
        s.close()
        out({"count": count})
        return
    recvfrom, sendto = s.recvfrom, s.sendto
    while True:
        data, addr = recvfrom(2048)
        if not data:
            break
        sendto(data, addr)
        count += 1
    s.close()
    out({"count": count})


def udp_rr(sk: Any, host: str, port: int, seconds: float, size: int, window: int) -> None:
    """Requests kept ``window`` in flight; a request unanswered for 0.2 s is counted lost
    and replaced. Each request carries its send time (for the round trip)."""
    import struct

    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(0.2)
    pad = b"q" * max(0, size - 8)
    now, pack, unpack = time.perf_counter, struct.Struct("<d").pack, struct.Struct("<d").unpack
    count = lost = inflight = 0
    rtt: list[float] = []
    t0 = now()
    deadline = t0 + seconds
    while True:
        while inflight < window:
            s.send(pack(now()) + pad)
            inflight += 1
        try:
            data = s.recv(2048)
        except TimeoutError:
            lost += inflight
            inflight = 0
            if now() >= deadline:
                break
            continue
        t = now()
        inflight = max(0, inflight - 1)
        count += 1
        rtt.append((t - unpack(data[:8])[0]) * 1e6)
        if t >= deadline:
            break
    dt = now() - t0
    s.send(b"")  # the server stops
    rtt.sort()
    p50, p99 = (rtt[int(len(rtt) * q)] if rtt else 0.0 for q in (0.5, 0.99))
    out({"count": count, "seconds": dt, "lost": lost, "rtt_p50": p50, "rtt_p99": p99})


def udp_hole(sk: Any, port: int) -> None:
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    out({"ready": True})
    sys.stdin.read()
    s.close()


def hold(sk: Any, host: str, port: int, n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    conns = [sk.create_connection((host, port), timeout=10) for _ in range(n)]
    out({"ready": True, "count": len(conns)})
    sys.stdin.read()
    for c in conns:
        c.close()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sk: Any
    if args and args[0] == "--lib":
        args.pop(0)
        sk = importlib.import_module("rmgr.libsocket")
    elif args and args[0] == "--file":
        args.pop(0)
        from bench.filesock import FileSockets

        sk = FileSockets(args.pop(0))
    else:
        sk = importlib.import_module("socket")
    mode, rest = args[0], args[1:]
    if mode == "sink":
        sink(sk, int(rest[0]), int(rest[1]) if len(rest) > 1 else 4)
    elif mode == "sink-connect":
        sink_connect(sk, rest[0], int(rest[1]))
    elif mode == "source":
        source(sk, rest[0], int(rest[1]), float(rest[2]))
    elif mode == "source-server":
        source_server(sk, int(rest[0]), float(rest[1]))
    elif mode == "source-stdin":
        source_stdin(sk, rest[0], int(rest[1]))
    elif mode == "echo-server":
        echo_server(sk, int(rest[0]))
    elif mode == "echo-client":
        echo_client(sk, rest[0], int(rest[1]), int(rest[2]))
    elif mode == "accept-server":
        accept_server(sk, int(rest[0]))
    elif mode == "connect-loop":
        connect_loop(sk, rest[0], int(rest[1]), float(rest[2]))
    elif mode == "connect-window":
        connect_window(sk, rest[0], int(rest[1]), float(rest[2]), int(rest[3]))
    elif mode == "udp-sink":
        udp_sink(sk, int(rest[0]), float(rest[1]))
    elif mode == "udp-blast":
        udp_blast(sk, rest[0], int(rest[1]), float(rest[2]), int(rest[3]))
    elif mode in ("udp-count", "udp-count-plain"):
        udp_count(sk, int(rest[0]), float(rest[1]), plain=mode.endswith("-plain"))
    elif mode in ("udp-server", "udp-server-plain"):
        udp_server(sk, int(rest[0]), plain=mode.endswith("-plain"))
    elif mode == "udp-rr":
        udp_rr(sk, rest[0], int(rest[1]), float(rest[2]), int(rest[3]), int(rest[4]))
    elif mode == "udp-hole":
        udp_hole(sk, int(rest[0]))
    elif mode == "hold":
        hold(sk, rest[0], int(rest[1]), int(rest[2]))
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        os._exit(130)
