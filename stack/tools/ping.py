"""``io-pkt ping``: NetBSD ping(8) over a raw ICMP socket of the stack.

    ping [-c COUNT] [-s SIZE] [-i WAIT] [-T TTL | -t TTL] [-W TIMEOUT] [-w DEADLINE]
         [-f] [-q] [-n] [-D] HOST
    ping -6 [ping6's options] ADDR     (also an IPv6 ADDR without -6: stack/tools/ping6.py)

As BSD ping does, it opens ``socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)`` (through
rmgr.libsocket, on the stack chosen by $SOCK / --prefix), builds the echo requests itself
(identifier = pid & 0xffff, sequence numbers from 0, a timestamp at the start of the
payload for the round trip), sets IP_TTL (-T) and IP_TOS (-Q) with setsockopt, sends with
sendto and waits for its own replies with poll. Raw sockets are root's: anyone else is
served through the stack's ``config/ping`` door (a write per request, a line per result),
as a setuid ping would be.

-T is NetBSD's TTL flag; Linux's -t is accepted as well (NetBSD's -t, TOS, is spelled
-Q here). -f floods: a request as soon as the previous answer (or 10 ms without one),
bounded to 1000 requests unless -c says otherwise; it needs root, as on BSD.
Exit status: 0 if any reply came back, 2 if none, 1 on errors (one line on stderr).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import select
import socket as _socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.inet.wire import ParseError
from stack.inet.wire import icmp as wicmp
from stack.tools.common import (
    ToolError,
    bad_usage,
    fail,
    pop_prefix,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "ping"
USAGE = ("usage: ping [-c count] [-s size] [-i wait] [-T ttl] [-W timeout] [-w deadline] "
         "[-Q tos] [-D] [-f] [-q] host")
FLOOD_DEFAULT_COUNT = 1000
FLOOD_WAIT = 0.01


class Options:
    count: int | None = None
    size = 56
    interval = 1.0
    ttl: int | None = None
    tos = 0
    timeout: float | None = None
    deadline: float | None = None
    flood = False
    quiet = False
    df = False
    host = ""


def _num(text: str, what: str, cast: type = int, lo: float = 0, hi: float = 1e9) -> float:
    try:
        v = cast(text)
    except ValueError:
        raise ToolError(f"bad {what}: {text}") from None
    if not lo <= v <= hi:
        raise ToolError(f"{what} {text} out of range")
    return v  # type: ignore[no-any-return]


def parse(args: list[str]) -> Options:
    o = Options()
    i = 0
    with_arg = {"-c", "-s", "-i", "-T", "-t", "-W", "-w", "-Q"}
    while i < len(args):
        a = args[i]
        if a in with_arg:
            if i + 1 >= len(args):
                raise ToolError(f"option {a} needs an argument")
            v = args[i + 1]
            if a == "-c":
                o.count = int(_num(v, "count", int, 1, 1 << 31))
            elif a == "-s":
                o.size = int(_num(v, "packet size", int, 0, 65507))
            elif a == "-i":
                o.interval = float(_num(v, "interval", float, 0, 3600))
            elif a in ("-T", "-t"):
                o.ttl = int(_num(v, "ttl", int, 1, 255))
            elif a == "-W":
                o.timeout = float(_num(v, "timeout", float, 0.001, 3600))
            elif a == "-w":
                o.deadline = float(_num(v, "deadline", float, 0.001, 1e6))
            elif a == "-Q":
                o.tos = int(_num(v, "tos", int, 0, 255))
            i += 2
            continue
        if a == "-f":
            o.flood = True
        elif a == "-q":
            o.quiet = True
        elif a == "-D":
            o.df = True
        elif a in ("-n", "-v"):
            pass
        elif a.startswith("-"):
            raise unknown_option(a, USAGE)
        elif o.host:
            raise bad_usage(f"unexpected argument: {a}", USAGE)
        else:
            o.host = a
        i += 1
    if not o.host:
        raise bad_usage("no host given", USAGE)
    try:
        o.host = str(ipaddress.IPv4Address(o.host))
    except ValueError:
        raise ToolError(f"cannot resolve {o.host}: numeric IPv4 addresses only") from None
    if o.flood:
        if os.geteuid() != 0:
            raise ToolError("-f flood ping needs root")
        if o.count is None:
            o.count = FLOOD_DEFAULT_COUNT
        o.interval = 0.0
    elif o.interval < 0.2 and os.geteuid() != 0:
        raise ToolError("an interval under 0.2 s needs root")
    return o


class Tally:
    """What both ways of pinging print: the per-answer lines (or flood dots), then the
    BSD statistics block."""

    def __init__(self, o: Options) -> None:
        self.o = o
        self.sent = 0
        self.received = 0
        self.rtts: list[float] = []
        self.out = sys.stdout

    def start(self) -> None:
        print(f"PING {self.o.host} ({self.o.host}): {self.o.size} data bytes", flush=True)

    def transmitted(self) -> None:
        self.sent += 1
        if self.o.flood:
            self.out.write(".")
            self.out.flush()

    # the wording (NetBSD ping's; ping6's Tally6 has KAME's)
    program = "ping"
    send_call = "sendto"
    stddev = "stddev"

    def reply_line(self, nbytes: int, src: str, seq: int, ttl: int | None, ms: float) -> str:
        # no TTL when the datagram came without its IP header (nothing to read it from)
        ttl_part = f" ttl={ttl}" if ttl is not None else ""
        return f"{nbytes} bytes from {src}: icmp_seq={seq}{ttl_part} time={ms:.3f} ms"

    def timeout_line(self, seq: int) -> str:
        return f"Request timeout for icmp_seq {seq}"

    def shown(self) -> str:
        """The destination as the statistics name it."""
        return self.o.host

    def reply(self, nbytes: int, src: str, seq: int, ttl: int | None, ms: float) -> None:
        self.received += 1
        self.rtts.append(ms)
        if self.o.flood:
            self.out.write("\b \b")
            self.out.flush()
        elif not self.o.quiet:
            print(self.reply_line(nbytes, src, seq, ttl, ms), flush=True)

    def timeout(self, seq: int) -> None:
        if not self.o.quiet and not self.o.flood:
            print(self.timeout_line(seq), flush=True)

    def icmp_error(self, nbytes: int, src: str, text: str) -> None:
        if not self.o.quiet and not self.o.flood:
            print(f"{nbytes} bytes from {src}: {text}", flush=True)

    def send_error(self, msg: str) -> None:
        if not self.o.quiet:
            print(f"{self.program}: {self.send_call}: {msg}", file=sys.stderr, flush=True)

    def summary(self) -> int:
        if self.o.flood:
            print()
        sent, received, rtts = self.sent, self.received, self.rtts
        loss = 0.0 if not sent else 100.0 * (sent - received) / sent
        print(f"\n--- {self.shown()} {self.program} statistics ---")
        print(f"{sent} packets transmitted, {received} packets received, {loss:.1f}% packet loss")
        if rtts:
            avg = sum(rtts) / len(rtts)
            sd = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
            print(f"round-trip min/avg/max/{self.stddev} = {min(rtts):.3f}/{avg:.3f}/"
                  f"{max(rtts):.3f}/{sd:.3f} ms")
        return 0 if received else 2


def _reply_wait(o: Options) -> float:
    """How long one request waits for its answer: 10 ms when flooding, else -W, else
    max(1 s, interval)."""
    if o.flood:
        return FLOOD_WAIT
    return o.timeout if o.timeout is not None else max(1.0, o.interval)


def _pace(o: Options, t0: float) -> None:
    pause = o.interval - (time.monotonic() - t0)
    if pause > 0:
        time.sleep(pause)


# -- the raw ICMP socket (root) ---------------------------------------------------------
#: Linux's numbers (the stack takes socket options as Linux spells them)
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
#: the payload starts with the send time, as BSD ping's struct tv32 (network order)
TV32 = struct.Struct("!II")
RECV_MAX = 65536
#: errors that end the run instead of counting one lost request: the stack went away
GONE = (errno.ENOTCONN, errno.EBADF, errno.ENXIO, errno.ENODEV)


def open_icmp_socket(prefix: str) -> Any | None:
    """``socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)`` on the stack at ``prefix``; None when
    the caller may not have one (not root: EPERM/EACCES) or the stack has no raw sockets."""
    from rmgr import libsocket

    libsocket.setsockprefix(prefix)
    try:
        return libsocket.socket(_socket.AF_INET, _socket.SOCK_RAW, _socket.IPPROTO_ICMP)
    except PermissionError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ENOENT):
            return None
        raise ToolError(f"socket: {exc.strerror or exc}") from None


def echo_request(ident: int, seq: int, size: int, now_ns: int) -> bytes:
    """An ICMP echo request with ``size`` data bytes: the send time (8 bytes, when they
    fit), then the byte pattern 8, 9, 10, ... (mod 256), as BSD ping fills it."""
    if size >= TV32.size:
        usec = now_ns // 1000
        data = TV32.pack((usec // 1_000_000) & 0xFFFFFFFF, usec % 1_000_000) + \
            bytes(i & 0xFF for i in range(TV32.size, size))
    else:
        data = bytes(i & 0xFF for i in range(size))
    hdr = wicmp.build_header(wicmp.ECHO_REQUEST, 0, ident << 16 | seq, (data,))
    return hdr + data


def split_ip(datagram: bytes) -> tuple[int | None, bytes]:
    """(TTL, ICMP message) of a datagram read from the raw socket. It starts with the IP
    header, as on BSD and Linux; a datagram without one (no IPv4 header carrying ICMP at
    its start) is taken as the bare ICMP message, TTL unknown."""
    if len(datagram) >= 20 and datagram[0] >> 4 == 4:
        ihl = (datagram[0] & 0x0F) * 4
        if ihl >= 20 and len(datagram) >= ihl + wicmp.HLEN and datagram[9] == 1:
            return datagram[8], datagram[ihl:]
    return None, datagram


def _rtt_ms(msg: bytes, sent_ns: int, now_ns: int) -> float:
    """From the timestamp the reply carries back (BSD), else from the local send time."""
    if len(msg) >= wicmp.HLEN + TV32.size:
        sec: int
        usec: int
        sec, usec = TV32.unpack_from(msg, wicmp.HLEN)
        now_us = now_ns // 1000
        d_sec = ((now_us // 1_000_000) - sec) & 0xFFFFFFFF
        us = d_sec * 1_000_000 + (now_us % 1_000_000) - usec
        if 0 <= us < 3_600_000_000:
            return us / 1000.0
    return (now_ns - sent_ns) / 1e6


def classify(datagram: bytes, src: str, ident: int, seq: int, host: str) -> tuple[Any, ...] | None:
    """Is this datagram the answer to our request ``(ident, seq)`` to ``host``?
    ``("reply", ttl, icmp_message)``, ``("icmp", nbytes, text)`` for an ICMP error that
    quotes that request, or None (someone else's, an old one, a bad checksum)."""
    ttl, msg = split_ip(datagram)
    try:
        h = wicmp.parse(msg, verify=True)
    except ParseError:
        return None
    if h.type == wicmp.ECHO_REPLY:
        if h.ident == ident and h.seq == seq and src == host:
            return ("reply", ttl, msg)
        return None
    if h.type not in wicmp.ERROR_TYPES:
        return None
    quote = msg[wicmp.HLEN:]
    if len(quote) < 20 or quote[0] >> 4 != 4:
        return None
    qihl = (quote[0] & 0x0F) * 4
    if len(quote) < qihl + 8 or quote[9] != 1 or quote[16:20] != ipaddress.IPv4Address(host).packed:
        return None
    qtype, _qcode, _qsum, qident, qseq = struct.unpack_from("!BBHHH", quote, qihl)
    if qtype != wicmp.ECHO_REQUEST or qident != ident or qseq != seq:
        return None
    return ("icmp", len(msg), wicmp.describe(h.type, h.code))


def run_raw(sock: Any, o: Options) -> int:
    """Ping over the raw ICMP socket ``sock`` (an rmgr.libsocket socket)."""
    ident = os.getpid() & 0xFFFF
    opts = []
    if o.ttl:
        opts.append(("IP_TTL", _socket.IP_TTL, o.ttl))
    if o.tos:
        opts.append(("IP_TOS", _socket.IP_TOS, o.tos))
    if o.df:
        opts.append(("IP_MTU_DISCOVER", IP_MTU_DISCOVER, IP_PMTUDISC_DO))
    for name, opt, value in opts:
        try:
            sock.setsockopt(_socket.IPPROTO_IP, opt, value)
        except OSError as exc:
            raise ToolError(f"setsockopt {name}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    tally = Tally(o)
    wait = _reply_wait(o)
    dest = (o.host, 0)

    def one(seq: int, t0: float) -> None:
        sent_ns = time.monotonic_ns()
        try:
            sock.sendto(echo_request(ident, seq, o.size, sent_ns), dest)
            err: OSError | None = None
        except OSError as exc:
            if exc.errno in GONE:
                raise ToolError(f"sendto: {exc.strerror or exc}") from None
            err = exc
        tally.transmitted()
        if err is not None:
            tally.send_error(err.strerror or os.strerror(err.errno or errno.EIO))
        else:
            _await_answer(sock, poller, tally, ident, seq, sent_ns, t0 + wait)

    return _request_loop(o, tally, one)


def _request_loop(o: Options, tally: Tally, one: Callable[[int, float], None]) -> int:
    """What both paths share: ``one(seq, t0)`` per request until -c is reached or -w runs
    out, paced by -i/-f, stopped early by ^C; then the statistics."""
    tally.start()
    start = time.monotonic()
    seq = 0
    try:
        while o.count is None or tally.sent < o.count:
            if o.deadline is not None and time.monotonic() - start >= o.deadline:
                break
            t0 = time.monotonic()
            one(seq, t0)
            seq = (seq + 1) & 0xFFFF
            if o.count is not None and tally.sent >= o.count:
                break
            _pace(o, t0)
    except KeyboardInterrupt:
        pass
    return tally.summary()


def _await_answer(sock: Any, poller: select.poll, tally: Tally, ident: int, seq: int,
                  sent_ns: int, until: float) -> None:
    """Read the socket until the answer to ``seq`` (a reply or an ICMP error quoting it)
    or ``until``; print it, or the timeout."""
    host = tally.o.host
    while True:
        left = until - time.monotonic()
        if left <= 0:
            tally.timeout(seq)
            return
        if not poller.poll(max(1, math.ceil(left * 1000))):
            continue
        while True:
            try:
                datagram, addr = sock.recvfrom(RECV_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the stack went away (ENOTCONN), ...
                raise ToolError(f"recvfrom: {exc.strerror or exc}") from None
            now_ns = time.monotonic_ns()
            src = addr[0] if addr else ""
            answer = classify(datagram, src, ident, seq, host)
            if answer is None:
                continue
            if answer[0] == "reply":
                _, ttl, msg = answer
                tally.reply(len(msg), src, seq, ttl, _rtt_ms(msg, sent_ns, now_ns))
            else:
                tally.icmp_error(answer[1], src, answer[2])
            return


# -- the config/ping door (anyone) ------------------------------------------------------
def _read_line(fd: int) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def _fields(line: str) -> dict[str, str]:
    w = line.split()
    return {w[i]: w[i + 1] for i in range(1, len(w) - 1, 2)}


def run_door(path: Path, o: Options) -> int:
    """Ping through ``config/ping``: one request written, its result line read back."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise ToolError(f"{path}: not provided by this stack") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None
    tally = Tally(o)
    wait = _reply_wait(o)

    def one(seq: int, t0: float) -> None:
        req = f"{o.host} size {o.size} timeout {wait} seq {seq}"
        if o.ttl:
            req += f" ttl {o.ttl}"
        if o.tos:
            req += f" tos {o.tos}"
        if o.df:
            req += " df 1"
        try:
            os.write(fd, req.encode())
        except OSError as exc:
            raise ToolError(f"sendto: {os.strerror(exc.errno or errno.EIO)}") from None
        tally.transmitted()
        line = _read_line(fd)
        kind = line.split(" ", 1)[0]
        f = _fields(line)
        if kind == "reply":
            tally.reply(int(f.get("bytes", "0")), f.get("from", ""), seq,
                        int(f.get("ttl", "0")), int(f.get("time_us", "0")) / 1000.0)
        elif kind == "timeout":
            tally.timeout(seq)
        elif kind == "icmp":
            text = line.split(None, 9)[-1] if len(line.split()) > 9 else line
            tally.icmp_error(28 + 8, f.get("from", ""), text)
        elif kind == "error":
            parts = line.split(None, 4)
            tally.send_error(parts[4] if len(parts) > 4 else parts[-1])
        else:
            raise ToolError(f"unexpected answer from the stack: {line!r}")

    try:
        return _request_loop(o, tally, one)
    finally:
        os.close(fd)


def run(prefix: str, o: Options) -> int:
    sdir = socket_dir(prefix)
    sock = open_icmp_socket(prefix)
    if sock is None:
        return run_door(sdir / "config/ping", o)
    with sock:
        return run_raw(sock, o)


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    # ping -6, or an IPv6 address as the host (iputils): ping6's engine and output
    if "-6" in args or any(":" in a and not a.startswith("-") for a in args):
        from stack.tools import ping6

        return ping6.main([a for a in argv if a != "-6"])
    args = [a for a in args if a != "-4"]
    try:
        return run(prefix, parse(args))
    except ToolError as exc:
        return fail(TOOL, exc)
