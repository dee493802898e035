"""``io-pkt netstat``: NetBSD netstat(1) over the control files.

    netstat [-a] [-n]          sockets (``config/sockets``); -a includes listeners
    netstat -r [-n]            routing table (``config/routes``)
    netstat -i                 interfaces (``config/interfaces``)
    netstat -s [-p PROTO]      statistics (``config/stats/<proto>``)
"""

from __future__ import annotations

import ipaddress
import sys

from stack.tools import route as route_tool
from stack.tools.cfgparse import stanzas, table
from stack.tools.common import (
    ToolError,
    bad_usage,
    fail,
    pop_prefix,
    read_file,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "netstat"
USAGE = "usage: netstat [-an] | netstat -r [-n] | netstat -i | netstat -s [-p PROTO]"
PROTO_ORDER = ["ip", "icmp", "arp", "udp", "tcp", "ether", "stack"]


def bsd_endpoint(text: str) -> str:
    """``10.0.0.2:80`` → ``10.0.0.2.80``; ``*:*`` → ``*.*`` (BSD netstat's form)."""
    if not text:
        return "*.*"
    host, sep, port = text.rpartition(":")
    if not sep:
        return text
    return f"{host or '*'}.{port or '*'}"


def sockets(prefix: str, show_all: bool) -> str:
    rows = table(read_file(prefix, "config/sockets"))
    title = "Active Internet connections" + (" (including servers)" if show_all else "")
    out = [title, f"{'Proto':<5} {'Recv-Q':>6} {'Send-Q':>6}  {'Local Address':<22} "
                  f"{'Foreign Address':<22} State"]
    for r in rows:
        if not show_all and r["state"] == "LISTEN":
            continue
        out.append(f"{r['proto']:<5} {r['recvq'] or '0':>6} {r['sendq'] or '0':>6}  "
                   f"{bsd_endpoint(r['local']):<22} {bsd_endpoint(r['foreign']):<22} "
                   f"{r['state']}".rstrip())
    return "\n".join(out) + "\n"


def interfaces(prefix: str) -> str:
    fmt = "{:<8} {:>5} {:<16} {:<18} {:>10} {:>5} {:>10} {:>5} {:>5}"
    out = [fmt.format("Name", "Mtu", "Network", "Address", "Ipkts", "Ierrs", "Opkts",
                      "Oerrs", "Colls")]
    for s in stanzas(read_file(prefix, "config/interfaces")):
        c = s.counters()
        nums = (c.get("ipackets", 0), c.get("ierrors", 0), c.get("opackets", 0),
                c.get("oerrors", 0), 0)
        out.append(fmt.format(s.name, s.get("mtu"), "<Link>",
                              s.get("mac") if s.get("kind") != "loopback" else "", *nums))
        for a in s.all("inet"):
            iface = ipaddress.ip_interface(a.split()[0])
            out.append(fmt.format(s.name, s.get("mtu"), str(iface.network), str(iface.ip),
                                  *nums))
    return "\n".join(out) + "\n"


def statistics(prefix: str, proto: str | None) -> str:
    base = socket_dir(prefix) / "config/stats"
    groups = sorted((p.name for p in base.iterdir()),
                    key=lambda g: (PROTO_ORDER.index(g) if g in PROTO_ORDER else 99, g))
    if proto is not None:
        if proto not in groups:
            raise ToolError(f"unknown protocol: {proto} (known: {', '.join(groups)})")
        groups = [proto]
    out = []
    for g in groups:
        out.append(f"{g}:")
        for line in read_file(prefix, f"config/stats/{g}").splitlines():
            name, _, value = line.partition(" ")
            if name:
                out.append(f"\t{value} {name.replace('_', ' ')}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    flags: set[str] = set()
    proto = None
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-p":
                if i + 1 >= len(args):
                    raise ToolError("-p needs a protocol name")
                proto = args[i + 1]
                i += 2
                continue
            if not a.startswith("-") or len(a) < 2:
                raise bad_usage(f"unexpected argument: {a}", USAGE)
            for ch in a[1:]:
                if ch not in "arisnvW":
                    raise unknown_option(f"-{ch}", USAGE)
                flags.add(ch)
            i += 1
        if "r" in flags:
            sys.stdout.write(route_tool.render_routes(prefix))
        elif "i" in flags:
            sys.stdout.write(interfaces(prefix))
        elif "s" in flags or proto is not None:
            sys.stdout.write(statistics(prefix, proto))
        else:
            sys.stdout.write(sockets(prefix, "a" in flags))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
