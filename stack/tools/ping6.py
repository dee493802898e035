"""``io-pkt ping6`` (and ``io-pkt ping -6``): KAME ping6(8) through the stack's
``config/ping`` door, which sends ICMPv6 echo requests for an IPv6 destination.

    ping6 [-c COUNT] [-i WAIT] [-s SIZE] [-h HLIM] [-I IF] [-S SRC] [-W TIMEOUT]
          [-w DEADLINE] [-Q TCLASS] [-D] [-f] [-q] [-n] ADDR | fe80::1%IF

Output as KAME's ping6::

    PING6(104=40+8+56 bytes) 2001:db8::2 --> 2001:db8::1
    64 bytes from 2001:db8::1, icmp_seq=0 hlim=64 time=0.187 ms
    --- 2001:db8::1 ping6 statistics ---
    3 packets transmitted, 3 packets received, 0.0% packet loss
    round-trip min/avg/max/std-dev = 0.083/0.102/0.187/0.043 ms

A lost reply prints ``Request timeout for icmp_seq=N`` (an extension: KAME is silent),
an ICMPv6 error quoting a request ``N bytes from ROUTER: Destination Port Unreachable``.
A link-local destination needs its interface: ``%IF`` or ``-I IF``. ``-t`` is accepted
for ``-h`` (iputils' ping -6). Exit status as ping's: 0 if any reply came back, 2 if
none, 1 on errors (one line on stderr).
"""

from __future__ import annotations

import errno
import ipaddress
import os

from stack.tools import ping as ping4
from stack.tools.cfgparse import keyvalues
from stack.tools.common import (
    ToolError,
    bad_usage,
    command,
    fail,
    pop_prefix,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "ping6"
USAGE = ("usage: ping6 [-c count] [-i wait] [-s size] [-h hlim] [-I interface] [-S source] "
         "[-W timeout] [-w deadline] [-Q tclass] [-D] [-f] [-q] host[%interface]")
#: ICMPv6 payload limit: 65535 minus the ICMPv6 header
MAX_SIZE = 65527


class Options6(ping4.Options):
    ifname: str | None = None
    src: str | None = None
    zone: str | None = None


def parse(args: list[str]) -> Options6:
    o = Options6()
    i = 0
    with_arg = {"-c", "-s", "-i", "-h", "-t", "-W", "-w", "-Q", "-I", "-S"}
    while i < len(args):
        a = args[i]
        if a in with_arg:
            if i + 1 >= len(args):
                raise ToolError(f"option {a} needs an argument")
            v = args[i + 1]
            if a == "-c":
                o.count = int(ping4._num(v, "count", int, 1, 1 << 31))
            elif a == "-s":
                o.size = int(ping4._num(v, "packet size", int, 0, MAX_SIZE))
            elif a == "-i":
                o.interval = float(ping4._num(v, "interval", float, 0, 3600))
            elif a in ("-h", "-t"):
                o.ttl = int(ping4._num(v, "hop limit", int, 0, 255))
            elif a == "-W":
                o.timeout = float(ping4._num(v, "timeout", float, 0.001, 3600))
            elif a == "-w":
                o.deadline = float(ping4._num(v, "deadline", float, 0.001, 1e6))
            elif a == "-Q":
                o.tos = int(ping4._num(v, "traffic class", int, 0, 255))
            elif a == "-I":
                o.ifname = v
            elif a == "-S":
                try:
                    o.src = str(ipaddress.IPv6Address(v.partition("%")[0]))
                except ValueError:
                    raise ToolError(f"bad source address: {v}") from None
            i += 2
            continue
        if a == "-f":
            o.flood = True
        elif a == "-q":
            o.quiet = True
        elif a == "-D":
            o.df = True
        elif a in ("-n", "-v", "-6"):
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
    text, _, zone = o.host.partition("%")
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        raise ToolError(f"cannot resolve {o.host}: numeric IPv6 addresses only") from None
    if ip.ipv4_mapped is not None:
        raise ToolError(f"{o.host}: an IPv4-mapped address (use ping)")
    o.host, o.zone = str(ip), zone or None
    if o.zone and o.ifname and o.zone != o.ifname:
        raise ToolError(f"scope %{o.zone} and -I {o.ifname} disagree")
    o.ifname = o.ifname or o.zone
    if ip.is_link_local and o.ifname is None:
        raise ToolError(f"{o.host} is link-local: give its interface ({o.host}%IF or -I IF)")
    if o.flood:
        if os.geteuid() != 0:
            raise ToolError("-f flood ping needs root")
        if o.count is None:
            o.count = ping4.FLOOD_DEFAULT_COUNT
        o.interval = 0.0
    elif o.interval < 0.2 and os.geteuid() != 0:
        raise ToolError("an interval under 0.2 s needs root")
    return o


class Tally6(ping4.Tally):
    """KAME ping6's wording; the counting and statistics are ping's."""

    program = "ping6"
    send_call = "sendmsg"
    stddev = "std-dev"

    def __init__(self, o: Options6, src: str) -> None:
        super().__init__(o)
        self.o6 = o
        self.src = src

    def shown(self) -> str:
        return f"{self.o.host}%{self.o6.ifname}" if self.o6.zone else self.o.host

    def start(self) -> None:
        size = self.o.size
        print(f"PING6({40 + 8 + size}=40+8+{size} bytes) {self.src} --> {self.shown()}",
              flush=True)

    def reply_line(self, nbytes: int, src: str, seq: int, ttl: int | None, ms: float) -> str:
        hlim = f" hlim={ttl}" if ttl is not None else ""
        return f"{nbytes} bytes from {src}, icmp_seq={seq}{hlim} time={ms:.3f} ms"

    def timeout_line(self, seq: int) -> str:
        return f"Request timeout for icmp_seq={seq}"


def source_for(prefix: str, o: Options6) -> str:
    """The source the stack will use (``route get``), ``::`` when there is no route."""
    if o.src:
        return o.src
    dst = f"{o.host}%{o.ifname}" if o.ifname and ipaddress.IPv6Address(o.host).is_link_local \
        else o.host
    try:
        info = keyvalues(command(prefix, "config/routes", f"get -inet6 {dst}"))
    except ToolError:
        return "::"
    src = info.get("source", "-")
    return "::" if src in ("-", "") else src


def run(prefix: str, o: Options6) -> int:
    path = socket_dir(prefix) / "config/ping"
    if o.ifname is not None and not (socket_dir(prefix) / "config/nicinfo" / o.ifname).exists():
        raise ToolError(f"no such interface: {o.ifname}")
    src = source_for(prefix, o)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise ToolError(f"{path}: not provided by this stack") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None
    tally = Tally6(o, src)
    wait = ping4._reply_wait(o)
    dst = f"{o.host}%{o.ifname}" if o.ifname else o.host

    def one(seq: int, t0: float) -> None:
        req = f"{dst} size {o.size} timeout {wait} seq {seq}"
        if o.ttl:
            req += f" hlim {o.ttl}"
        if o.tos:
            req += f" tclass {o.tos}"
        if o.df:
            req += " df 1"
        if o.src:
            req += f" src {o.src}"
        try:
            os.write(fd, req.encode())
        except OSError as exc:
            raise ToolError(f"sendmsg: {os.strerror(exc.errno or errno.EIO)}") from None
        tally.transmitted()
        line = ping4._read_line(fd)
        kind = line.split(" ", 1)[0]
        f = ping4._fields(line)
        if kind == "reply":
            tally.reply(int(f.get("bytes", "0")), f.get("from", ""), seq,
                        int(f["ttl"]) if "ttl" in f else None,
                        int(f.get("time_us", "0")) / 1000.0)
        elif kind == "timeout":
            tally.timeout(seq)
        elif kind == "icmp":
            text = line.split(None, 9)[-1] if len(line.split()) > 9 else line
            tally.icmp_error(8 + min(1232, 48 + o.size), f.get("from", ""), text)
        elif kind == "error":
            parts = line.split(None, 4)
            tally.send_error(parts[4] if len(parts) > 4 else parts[-1])
        else:
            raise ToolError(f"unexpected answer from the stack: {line!r}")

    try:
        return ping4._request_loop(o, tally, one)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    # -h is KAME's hop limit: the usage only for a lone -h (or --help anywhere)
    if args == ["-h"] or (wants_help(args) and args[0] != "-h"):
        print(USAGE)
        return 0
    try:
        return run(prefix, parse(args))
    except ToolError as exc:
        return fail(TOOL, exc)
