"""``io-pkt route``: NetBSD route(8) over ``config/routes`` and ``config/route_monitor``.

    route [-n] show [-inet|-inet6] | flush [-inet|-inet6] | monitor [-c COUNT]
    route [-n] add|change [-inet6] [-net|-host] DEST [GATEWAY] [-netmask M | -prefixlen N]
                 [-metric N] [-mtu N] [-interface IF | -ifp IF] [-reject] [-blackhole]
    route [-n] delete [-inet6] [-net|-host] DEST [GATEWAY]
    route [-n] get [-inet6] DEST

IPv6 as KAME's route: ``route add -inet6 default 2001:db8::1``, ``route add -inet6
2001:db8:9::/48 fe80::1%tap0`` (a link-local gateway names its interface), ``route show
-inet6``. An IPv6 address says the family by itself; ``-inet6`` makes ``default`` IPv6's.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from stack.tools.cfgparse import keyvalues, table
from stack.tools.common import (
    ToolError,
    bad_usage,
    command,
    fail,
    pop_prefix,
    read_file,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "route"
USAGE = "usage: route [-n] {add|delete|change|get|show|flush|monitor} ..."

FLAG_WORDS = {"U": "UP", "G": "GATEWAY", "H": "HOST", "S": "STATIC", "C": "CONNECTED",
              "L": "LOCAL", "R": "REJECT", "B": "BLACKHOLE"}


def render_routes(prefix: str, family: str | None = None) -> str:
    """NetBSD's ``netstat -rn``: an ``Internet:`` and an ``Internet6:`` section (only
    one when ``family`` is ``inet`` or ``inet6``)."""
    rows = table(read_file(prefix, "config/routes"))
    out = ["Routing tables"]
    sections = [("inet", "Internet:", "{:<20} {:<18} {:<6} {:>6} {:>8} {:>6}  {}"),
                ("inet6", "Internet6:", "{:<32} {:<26} {:<6} {:>6} {:>8} {:>6}  {}")]
    for fam, title, fmt in sections:
        if family is not None and fam != family:
            continue
        out += ["", title, fmt.format("Destination", "Gateway", "Flags", "Metric", "Use",
                                      "Mtu", "Interface")]
        for r in rows:
            if r.get("family", "inet") != fam:
                continue
            out.append(fmt.format(r["destination"], r["gateway"], r["flags"], r["metric"],
                                  r["use"], r["mtu"] or "-", r["interface"]))
    return "\n".join(out) + "\n"


def _family(words: list[str], usage: str) -> str | None:
    """``-inet`` / ``-inet6`` (or nothing) in ``show``/``flush``'s words."""
    fam = None
    for w in words:
        if w in ("-inet", "-inet6"):
            fam = w[1:]
        elif w.startswith("-"):
            raise unknown_option(w, usage)
        else:
            raise bad_usage(f"unexpected argument: {w}", usage)
    return fam


def _short_net(dest: str) -> str:
    """``-net 10.1`` → 10.1.0.0/16 (BSD's short network numbers)."""
    if "/" in dest or dest == "default" or ":" in dest:
        return dest
    parts = dest.split(".")
    if len(parts) >= 4:
        return dest
    return ".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}"


def _words_to_command(verb: str, args: list[str]) -> tuple[str, str, str]:
    """→ (control command, destination text for messages, gateway text)."""
    out = [verb]
    dest = gw = ""
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a in ("-net", "-host", "-inet", "-n", "-static", "-cloning"):
            pass
        elif a == "-inet6":
            out.insert(1, a)
        elif a in ("-netmask", "netmask", "-metric", "metric", "-hopcount", "-mtu", "mtu",
                   "-interface", "-ifp", "-iface", "-gateway", "gateway", "-prefixlen",
                   "prefixlen"):
            if nxt is None:
                raise ToolError(f"{a} needs an argument")
            key = {"-netmask": "netmask", "-metric": "metric", "-hopcount": "metric",
                   "-mtu": "mtu", "-interface": "if", "-ifp": "if", "-iface": "if",
                   "-gateway": "gateway", "-prefixlen": "prefixlen"}.get(a, a)
            out += [key, nxt]
            if key == "gateway":
                gw = nxt
            i += 1
        elif a in ("-reject", "-blackhole"):
            out.append(a)
        elif a.startswith("-"):
            raise unknown_option(a, USAGE)
        elif not dest:
            dest = _short_net(a) if "-net" in args and "-netmask" not in args \
                and "netmask" not in args else a
            out.append(dest)
        elif not gw:
            gw = a
            out.append(a)
        else:
            raise ToolError(f"unexpected argument: {a}")
        i += 1
    if not dest:
        raise ToolError(f"{verb}: destination required")
    return " ".join(out), dest, gw


def show_get(prefix: str, dest: str, inet6: bool = False) -> str:
    six = inet6 or ":" in dest
    info = keyvalues(command(prefix, "config/routes",
                             f"get {'-inet6 ' if inet6 else ''}{dest}"))
    route = info.get("route", "")
    net = ipaddress.ip_network(route if route != "default" else
                               ("::/0" if six else "0.0.0.0/0"), strict=False) \
        if route else None
    flags = ",".join(FLAG_WORDS.get(c, c) for c in info.get("flags", ""))
    lines = [("route to", info.get("destination", dest)),
             ("destination", str(net.network_address) if net and route != "default" else "default"),
             ("mask", str(net.netmask) if net else "-"),
             ("gateway", info.get("gateway", "-")),
             ("interface", info.get("interface", "-")),
             ("if address", info.get("source", "-")),
             ("flags", f"<{flags}>"),
             ("metric", info.get("metric", "0")),
             ("mtu", info.get("mtu", "-"))]
    return "".join(f"{k:>11}: {v}\n" for k, v in lines)


def monitor(prefix: str, count: int | None) -> int:
    path = socket_dir(prefix) / "config/route_monitor"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None
    seen = 0
    buf = b""
    try:
        while count is None or seen < count:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and (count is None or seen < count):
                line, _, buf = buf.partition(b"\n")
                print(line.decode(errors="replace"), flush=True)
                seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    args = [a for a in args if a not in ("-n", "-q", "-v")]
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        if not args:
            raise ToolError(USAGE)
        verb, rest = args[0], args[1:]
        if verb.startswith("-"):
            raise unknown_option(verb, USAGE)
        fam = None
        if verb in ("show", "print", "flush"):
            fam = _family(rest, f"usage: route {verb} [-inet|-inet6]")
        if verb in ("show", "print"):
            sys.stdout.write(render_routes(prefix, fam))
        elif verb == "flush":
            reply = command(prefix, "config/routes", f"flush -{fam}" if fam else "flush")
            n = reply.split()[-1] if reply.strip() else "0"
            print(f"flushed {n} route{'s' if n != '1' else ''}")
        elif verb == "monitor":
            count = None
            if rest[:1] == ["-c"] and len(rest) == 2 and rest[1].isdigit():
                count = int(rest[1])
            elif rest and rest[0].startswith("-") and rest[0] != "-c":
                raise unknown_option(rest[0], "usage: route monitor [-c COUNT]")
            elif rest:
                raise ToolError("usage: route monitor [-c COUNT]")
            return monitor(prefix, count)
        elif verb == "get":
            for a in rest:
                if a.startswith("-") and a not in ("-net", "-host", "-inet", "-inet6"):
                    raise unknown_option(a, "usage: route get [-inet6] DEST")
            dests = [a for a in rest if not a.startswith("-")]
            if len(dests) != 1:
                raise ToolError("usage: route get [-inet6] DEST")
            sys.stdout.write(show_get(prefix, dests[0], "-inet6" in rest))
        elif verb in ("add", "delete", "change"):
            cmd, dest, gw = _words_to_command(verb, rest)
            command(prefix, "config/routes", cmd)
            kind = "host" if "/" not in dest and dest != "default" else "net"
            print(f"{verb} {kind} {dest}" + (f": gateway {gw}" if gw else ""))
        else:
            raise bad_usage(f"unknown command: {verb}", USAGE)
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
