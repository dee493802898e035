"""``io-pkt ndp``: NetBSD/KAME ndp(8) over ``config/ndp``, ``config/ndp_prefixes``,
``config/ndp_routers`` and ``config/interfaces``.

    ndp [-n] -a                      every neighbour cache entry
    ndp [-n] ADDR                    one entry
    ndp -c                           flush the dynamic entries
    ndp -d ADDR                      delete one
    ndp -s ADDR MAC [temp] [proxy]   a permanent entry (proxy: answer for it)
    ndp -p                           on-link prefixes from router advertisements
    ndp -r                           default routers from router advertisements
    ndp -i IF [[-]accept_rtadv] [[-]auto_linklocal]   per-interface ND state / switches

A link-local address carries its zone (``fe80::1%tap0``), as ndp prints it.
"""

from __future__ import annotations

import ipaddress
import sys

from stack.tools.cfgparse import Stanza, stanzas, table
from stack.tools.common import (
    ToolError,
    bad_usage,
    command,
    fail,
    pop_prefix,
    read_file,
    unknown_option,
    wants_help,
)

TOOL = "ndp"
USAGE = ("usage: ndp [-n] -a | ndp [-n] ADDR | ndp -c | ndp -d ADDR | "
         "ndp -s ADDR MAC [temp] [proxy] | ndp -p | ndp -r | "
         "ndp -i IF [[-]accept_rtadv] [[-]auto_linklocal]")

#: NetBSD ndp's column widths (W_ADDR, W_LL, W_IF)
W_ADDR, W_LL, W_IF = 36, 17, 6
#: the state letters ndp -a prints (ND6_LLINFO_*)
STATE_LETTER = {"incomplete": "I", "reachable": "R", "stale": "S", "delay": "D",
                "probe": "P", "permanent": "R", "failed": "W", "nostate": "N"}
ND_FLAGS = ("accept_rtadv", "auto_linklocal")


def sec2str(text: str) -> str:
    """NetBSD ndp's durations: ``1d2h3m4s`` without the zero leading units."""
    if not text.isdigit():
        return text
    secs = int(text)
    days, secs = divmod(secs, 86400)
    hours, secs = divmod(secs, 3600)
    mins, secs = divmod(secs, 60)
    out = ""
    if days:
        out += f"{days}d"
    if days or hours:
        out += f"{hours}h"
    if days or hours or mins:
        out += f"{mins}m"
    return out + f"{secs}s"


def header() -> str:
    return (f"{'Neighbor':<{W_ADDR}} {'Linklayer Address':<{W_LL}} {'Netif':>{W_IF}} "
            f"{'Expire':<9} S Flags")


def format_entry(r: dict[str, str]) -> str:
    ll = r["lladdr"] or "(incomplete)"
    expire = "permanent" if r["state"] == "permanent" else (
        sec2str(r["expires"]) if r["expires"] else "expired")
    letter = STATE_LETTER.get(r["state"], "?")
    words = r.get("flags", "").split(",")
    flags = ("R" if "router" in words else "") + ("p" if "proxy" in words else "")
    line = (f"{r['address']:<{W_ADDR}} {ll:<{W_LL}} {r['interface']:>{W_IF}} "
            f"{expire:<9} {letter}")
    return f"{line} {flags}" if flags else line


def _entries(prefix: str) -> list[dict[str, str]]:
    return table(read_file(prefix, "config/ndp"))


def _find(prefix: str, addr: str) -> list[dict[str, str]]:
    return [r for r in _entries(prefix)
            if r["address"] == addr or r["address"].partition("%")[0] == addr]


def show_prefixes(prefix: str) -> str:
    """NetBSD ``ndp -p``: ``PREFIX if=IF`` then ``flags=LA ... expire=...``."""
    out = []
    for r in table(read_file(prefix, "config/ndp_prefixes")):
        exp = r["expire"]
        out.append(f"{r['prefix']} if={r['interface']}")
        out.append(f"flags={r['flags']} vltime={'infinity' if exp == 'infinity' else exp}, "
                   f"expire={'Never' if exp == 'infinity' else sec2str(exp)}")
    return "".join(line + "\n" for line in out) if out else "No prefixes\n"


def show_routers(prefix: str) -> str:
    """NetBSD ``ndp -r``: ``ROUTER if=IF, flags=, pref=medium, expire=...``."""
    out = [f"{r['router']} if={r['interface']}, flags=, pref=medium, "
           f"expire={sec2str(r['expire'])}"
           for r in table(read_file(prefix, "config/ndp_routers"))]
    return "".join(line + "\n" for line in out) if out else "No routers\n"


def _iface(prefix: str, name: str) -> Stanza:
    for s in stanzas(read_file(prefix, "config/interfaces")):
        if s.name == name:
            return s
    raise ToolError(f"no such interface: {name}")


def show_iface(s: Stanza) -> str:
    """NetBSD ``ndp -i IF``: the link parameters, then the flags."""
    words = s.get("nd6").split()
    if not words:
        raise ToolError(f"{s.name}: no IPv6 on this stack")
    kv = {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)}
    mtu = int(s.get("mtu") or 0)
    linkmtu = int(kv.get("linkmtu", "0")) or mtu
    base = int(kv.get("basereachable", "30000"))
    retrans = int(kv.get("retrans", "1000"))
    flags = kv.get("flags", "-").split(",")
    names = ["PERFORMNUD"] + [f.upper() for f in ND_FLAGS if f in flags]
    return (f"linkmtu={linkmtu}, maxmtu={mtu}, curhlim={kv.get('curhlim', '64')}, "
            f"basereachable={base // 1000}s{base % 1000}ms, reachable={base // 1000}s, "
            f"retrans={retrans // 1000}s{retrans % 1000}ms\n"
            f"Flags: {' '.join(names)}\n")


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    args = [a for a in args if a not in ("-n", "--")]
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        if not args:
            raise ToolError(USAGE)
        opt, rest = args[0], args[1:]
        if opt == "-a":
            if rest:
                raise bad_usage(f"unexpected argument: {rest[0]}", USAGE)
            entries = _entries(prefix)
            print(header())
            for r in entries:
                print(format_entry(r))
        elif opt == "-c":
            if rest:
                raise bad_usage(f"unexpected argument: {rest[0]}", USAGE)
            before = [r for r in _entries(prefix) if r["state"] != "permanent"]
            command(prefix, "config/ndp", "flush")
            for r in before:
                print(f"{r['address']} ({r['address']}) deleted")
        elif opt == "-d":
            if len(rest) != 1:
                raise ToolError("usage: ndp -d ADDR")
            command(prefix, "config/ndp", f"delete {rest[0]}")
            print(f"{rest[0]} ({rest[0]}) deleted")
        elif opt == "-s":
            if len(rest) < 2:
                raise ToolError("usage: ndp -s ADDR MAC [temp] [proxy]")
            extra = []
            for w in rest[2:]:
                if w == "proxy":
                    extra.append("proxy")
                elif w != "temp":
                    raise ToolError(f"unknown argument: {w}")
            command(prefix, "config/ndp", " ".join(["set", rest[0], rest[1], *extra]))
        elif opt == "-p":
            sys.stdout.write(show_prefixes(prefix))
        elif opt == "-r":
            sys.stdout.write(show_routers(prefix))
        elif opt == "-i":
            if not rest:
                raise ToolError("usage: ndp -i IF [[-]accept_rtadv] [[-]auto_linklocal]")
            name, flags = rest[0], rest[1:]
            _iface(prefix, name)
            for f in flags:
                if f.lstrip("-") not in ND_FLAGS:
                    raise ToolError(f"unsupported ND flag {f} "
                                    "(accept_rtadv, auto_linklocal)")
            if flags:
                command(prefix, "config/interfaces", " ".join([name, *flags]))
            sys.stdout.write(show_iface(_iface(prefix, name)))
        elif opt.startswith("-"):
            raise unknown_option(opt, USAGE)
        else:
            if rest:
                raise bad_usage(f"unexpected argument: {rest[0]}", USAGE)
            try:
                ipaddress.IPv6Address(opt.partition("%")[0])
            except ValueError:
                raise ToolError(f"{opt}: bad address (numeric IPv6 addresses only)") from None
            rows = _find(prefix, opt)
            if not rows:
                raise ToolError(f"{opt} ({opt}) -- no entry")
            print(header())
            for r in rows:
                print(format_entry(r))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
