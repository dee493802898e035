"""``io-pkt netstat``: NetBSD netstat(1) over the control files.

    netstat [-a] [-n]          sockets (``config/sockets``); -a includes listeners
    netstat -r [-n]            routing table (``config/routes``)
    netstat -i                 interfaces (``config/interfaces``)
    netstat -s [-p PROTO]      statistics (``config/stats/<proto>``)

``-f inet`` / ``-f inet6`` limits any of them to one address family (``-f inet6 -s``:
the ip6, icmp6, nd6, mld6... groups; ``-rn -f inet6``: the Internet6 routes).
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
USAGE = ("usage: netstat [-an] [-f inet|inet6] | netstat -r [-n] [-f inet|inet6] | "
         "netstat -i [-f inet|inet6] | netstat -s [-f inet|inet6] [-p PROTO]")
PROTO_ORDER = ["ip", "icmp", "igmp", "arp", "udp", "tcp", "ip6", "icmp6", "nd6", "mld6",
               "udp6", "tcp6", "ether", "stack"]
#: the statistics groups of each address family (``netstat -s -f FAMILY``)
INET_GROUPS = {"ip", "icmp", "igmp", "arp", "udp", "tcp", "raw", "reass", "route"}
FAMILIES = ("inet", "inet6")


def group_family(group: str) -> str | None:
    if group in INET_GROUPS:
        return "inet"
    return "inet6" if group.endswith("6") else None


def bsd_endpoint(text: str) -> str:
    """``10.0.0.2:80`` → ``10.0.0.2.80``; ``*:*`` → ``*.*`` (BSD netstat's form)."""
    if not text:
        return "*.*"
    host, sep, port = text.rpartition(":")
    if not sep:
        return text
    return f"{host or '*'}.{port or '*'}"


def sockets(prefix: str, show_all: bool, family: str | None = None) -> str:
    """BSD's ``Active Internet connections`` and, for IPv6 sockets (``tcp6``,
    ``udp6``...), ``Active Internet6 connections``."""
    rows = table(read_file(prefix, "config/sockets"))
    out: list[str] = []
    for fam, title in (("inet", "Active Internet connections"),
                       ("inet6", "Active Internet6 connections")):
        mine = [r for r in rows if (fam == "inet6") == _is6(r["proto"])]
        if (family is not None and fam != family) or (family is None and fam == "inet6"
                                                      and not mine):
            continue
        out += [title + (" (including servers)" if show_all else ""),
                f"{'Proto':<5} {'Recv-Q':>6} {'Send-Q':>6}  {'Local Address':<22} "
                f"{'Foreign Address':<22} State"]
        for r in mine:
            if not show_all and r["state"] == "LISTEN":
                continue
            out.append(f"{r['proto']:<5} {r['recvq'] or '0':>6} {r['sendq'] or '0':>6}  "
                       f"{bsd_endpoint(r['local']):<22} {bsd_endpoint(r['foreign']):<22} "
                       f"{r['state']}".rstrip())
    return "\n".join(out) + "\n"


def _is6(proto: str) -> bool:
    return proto.endswith("6") or proto.startswith("raw6")


def interfaces(prefix: str, family: str | None = None) -> str:
    fmt = "{:<8} {:>5} {:<20} {:<26} {:>10} {:>5} {:>10} {:>5} {:>5}"
    out = [fmt.format("Name", "Mtu", "Network", "Address", "Ipkts", "Ierrs", "Opkts",
                      "Oerrs", "Colls")]
    for s in stanzas(read_file(prefix, "config/interfaces")):
        c = s.counters()
        nums = (c.get("ipackets", 0), c.get("ierrors", 0), c.get("opackets", 0),
                c.get("oerrors", 0), 0)
        if family is None:
            out.append(fmt.format(s.name, s.get("mtu"), "<Link>",
                                  s.get("mac") if s.get("kind") != "loopback" else "", *nums))
        for a in s.all("inet") if family != "inet6" else []:
            iface = ipaddress.ip_interface(a.split()[0])
            out.append(fmt.format(s.name, s.get("mtu"), str(iface.network), str(iface.ip),
                                  *nums))
        for a in s.all("inet6") if family != "inet" else []:
            text, _, plen = a.split()[0].rpartition("/")
            host, pct, zone = text.partition("%")
            net = ipaddress.ip_network(f"{host}/{plen}", strict=False)
            out.append(fmt.format(s.name, s.get("mtu"), f"{net.network_address}{pct}{zone}/"
                                  f"{plen}", text, *nums))
    return "\n".join(out) + "\n"


def statistics(prefix: str, proto: str | None, family: str | None = None) -> str:
    base = socket_dir(prefix) / "config/stats"
    groups = sorted((p.name for p in base.iterdir()),
                    key=lambda g: (PROTO_ORDER.index(g) if g in PROTO_ORDER else 99, g))
    if family is not None:
        groups = [g for g in groups if group_family(g) == family]
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
        family = None
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-p":
                if i + 1 >= len(args):
                    raise ToolError("-p needs a protocol name")
                proto = args[i + 1]
                i += 2
                continue
            if a == "-f":
                if i + 1 >= len(args):
                    raise ToolError("-f needs an address family (inet, inet6)")
                family = args[i + 1]
                if family not in FAMILIES:
                    raise ToolError(f"unknown address family: {family} (inet, inet6)")
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
            sys.stdout.write(route_tool.render_routes(prefix, family))
        elif "i" in flags:
            sys.stdout.write(interfaces(prefix, family))
        elif "s" in flags or proto is not None:
            sys.stdout.write(statistics(prefix, proto, family))
        else:
            sys.stdout.write(sockets(prefix, "a" in flags, family))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
