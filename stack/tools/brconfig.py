"""``io-pkt brconfig``: NetBSD brconfig(8) over ``config/bridges``.

    brconfig -a                  every bridge
    brconfig BRIDGE              one bridge
    brconfig BRIDGE addr         its learning table
    brconfig BRIDGE add IF | delete IF | up | down | timeout SECS | maxaddr N
                    static IF MAC | deladdr MAC | flush | flushall
                    learn IF | -learn IF | discover IF | -discover IF   (several in a row)
Create bridges with ``ifconfig bridge0 create``.
"""

from __future__ import annotations

import sys

from stack.tools.cfgparse import Stanza, stanzas
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

TOOL = "brconfig"
USAGE = "usage: brconfig -a | brconfig BRIDGE [addr] | brconfig BRIDGE COMMAND [ARGS]..."
TAKES_ARG = {"add": 1, "delete": 1, "timeout": 1, "maxaddr": 1, "static": 2, "deladdr": 1,
             "learn": 1, "-learn": 1, "discover": 1, "-discover": 1}
NO_ARG = {"up", "down", "flush", "flushall"}


def _bits(names: str) -> int:
    order = ["LEARNING", "DISCOVER", "BLOCKNONIP", "STP"]
    return sum(1 << i for i, n in enumerate(order) if n in names.split(","))


def addr_lines(s: Stanza) -> list[str]:
    out = []
    for a in s.all("address"):
        w = a.split()
        mac, ifname = w[0], w[1]
        expires = w[w.index("expires") + 1] if "expires" in w else "-"
        static = "static" in w[w.index("flags") + 1:] if "flags" in w else False
        out.append(f"\t\t{mac} {ifname} {expires if not static else 0} "
                   f"flags={1 if static else 0}<{'STATIC' if static else ''}>")
    return out


def render(s: Stanza) -> str:
    fl = s.get("flags", "0x0 -").split()
    names = fl[1] if len(fl) > 1 and fl[1] != "-" else ""
    out = [f"{s.name}: flags={int(fl[0], 16):x}<{names}>", "\tInterfaces:"]
    for m in s.all("member"):
        w = m.split()
        mflags = w[2] if len(w) > 2 and w[2] != "-" else ""
        out.append(f"\t\t{w[0]} flags={_bits(mflags):x}<{mflags}>")
    out.append(f"\tAddress cache (max cache: {s.get('maxaddr')}, timeout: {s.get('timeout')}):")
    out += addr_lines(s)
    return "\n".join(out) + "\n"


def find(prefix: str, name: str) -> Stanza:
    for s in stanzas(read_file(prefix, "config/bridges")):
        if s.name == name:
            return s
    raise ToolError(f"no such bridge: {name}")


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        if not args:
            raise ToolError(USAGE)
        if args[0] == "-a" and len(args) > 1:
            raise bad_usage(f"unexpected argument: {args[1]}", USAGE)
        if args == ["-a"]:
            sys.stdout.write("".join(render(s) for s in stanzas(read_file(prefix, "config/bridges"))))
            return 0
        name, rest = args[0], args[1:]
        if name.startswith("-"):
            raise unknown_option(name, USAGE)
        if not rest:
            sys.stdout.write(render(find(prefix, name)))
            return 0
        if rest == ["addr"]:
            print("\n".join(addr_lines(find(prefix, name))).replace("\t\t", ""))
            return 0
        i = 0
        while i < len(rest):  # check the whole line before changing anything
            w = rest[i]
            if w in NO_ARG:
                i += 1
            elif w in TAKES_ARG:
                if i + TAKES_ARG[w] >= len(rest):
                    raise ToolError(f"{w} needs {TAKES_ARG[w]} argument(s)")
                i += 1 + TAKES_ARG[w]
            else:
                raise ToolError(f"unknown command: {w}")
        find(prefix, name)
        command(prefix, "config/bridges", " ".join([name, *rest]))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
