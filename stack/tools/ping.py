"""``io-pkt ping``: NetBSD ping(8) through ``config/ping`` (write a request, read its result).

    ping [-c COUNT] [-s SIZE] [-i WAIT] [-T TTL | -t TTL] [-W TIMEOUT] [-w DEADLINE]
         [-f] [-q] [-n] [-D] HOST

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
import sys
import time

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


def run(prefix: str, o: Options) -> int:
    path = socket_dir(prefix) / "config/ping"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise ToolError(f"{path}: not provided by this stack") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None
    out = sys.stdout
    print(f"PING {o.host} ({o.host}): {o.size} data bytes", flush=True)
    sent = received = 0
    rtts: list[float] = []
    start = time.monotonic()
    wait = FLOOD_WAIT if o.flood else (o.timeout if o.timeout is not None else
                                       max(1.0, o.interval))
    seq = 0
    try:
        while o.count is None or sent < o.count:
            if o.deadline is not None and time.monotonic() - start >= o.deadline:
                break
            t0 = time.monotonic()
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
            sent += 1
            if o.flood:
                out.write(".")
                out.flush()
            line = _read_line(fd)
            kind = line.split(" ", 1)[0]
            f = _fields(line)
            if kind == "reply":
                received += 1
                ms = int(f.get("time_us", "0")) / 1000.0
                rtts.append(ms)
                if o.flood:
                    out.write("\b \b")
                    out.flush()
                elif not o.quiet:
                    print(f"{f.get('bytes')} bytes from {f.get('from')}: icmp_seq={seq} "
                          f"ttl={f.get('ttl')} time={ms:.3f} ms", flush=True)
            elif kind == "timeout":
                if not o.quiet and not o.flood:
                    print(f"Request timeout for icmp_seq {seq}", flush=True)
            elif kind == "icmp":
                text = line.split(None, 9)[-1] if len(line.split()) > 9 else line
                if not o.quiet and not o.flood:
                    print(f"{28 + 8} bytes from {f.get('from')}: {text}", flush=True)
            elif kind == "error":
                parts = line.split(None, 4)
                msg = parts[4] if len(parts) > 4 else parts[-1]
                if not o.quiet:
                    print(f"ping: sendto: {msg}", file=sys.stderr, flush=True)
            else:
                raise ToolError(f"unexpected answer from the stack: {line!r}")
            seq = (seq + 1) & 0xFFFF
            if o.count is not None and sent >= o.count:
                break
            pause = o.interval - (time.monotonic() - t0)
            if pause > 0:
                time.sleep(pause)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    if o.flood:
        print()
    loss = 0.0 if not sent else 100.0 * (sent - received) / sent
    print(f"\n--- {o.host} ping statistics ---")
    print(f"{sent} packets transmitted, {received} packets received, {loss:.1f}% packet loss")
    if rtts:
        avg = sum(rtts) / len(rtts)
        sd = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
        print(f"round-trip min/avg/max/stddev = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/"
              f"{sd:.3f} ms")
    return 0 if received else 2


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        return run(prefix, parse(args))
    except ToolError as exc:
        return fail(TOOL, exc)
