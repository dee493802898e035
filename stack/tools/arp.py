"""``io-pkt arp``: NetBSD arp(8) over ``config/arp``.

    arp [-n] -a                 every entry
    arp [-n] HOST               one entry
    arp -d HOST | arp -d -a     delete one / all
    arp -s HOST MAC [temp] [pub] [ifscope IF]
"""

from __future__ import annotations

import ipaddress

from stack.tools.cfgparse import table
from stack.tools.common import (
    ToolError,
    command,
    fail,
    pop_prefix,
    read_file,
    unknown_option,
    wants_help,
)

TOOL = "arp"
USAGE = "usage: arp [-n] -a | arp [-n] HOST | arp -d HOST | arp -d -a | arp -s HOST MAC [temp] [pub]"


def _host(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ToolError(f"{text}: bad address") from None


def format_entry(r: dict[str, str]) -> str:
    mac = r["mac"] or "(incomplete)"
    line = f"? ({r['address']}) at {mac} on {r['interface']}"
    if r["state"] == "permanent":
        line += " permanent"
    elif r["expires"]:
        line += f" expires {r['expires']}s"
    if r["state"] not in ("permanent", "reachable"):
        line += f" {r['state']}"
    if "published" in r.get("flags", ""):
        line += " published"
    return line + " [ethernet]"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    args = [a for a in args if a != "-n"]
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        for a in args:
            if a.startswith("-") and a not in ("-a", "-d", "-s"):
                raise unknown_option(a, USAGE)
        if not args:
            raise ToolError(USAGE)
        if args == ["-a"]:
            for r in table(read_file(prefix, "config/arp")):
                print(format_entry(r))
            return 0
        if args[0] == "-d":
            if args[1:] == ["-a"]:
                command(prefix, "config/arp", "flush")
                return 0
            if len(args) != 2:
                raise ToolError("usage: arp -d HOST | arp -d -a")
            host = _host(args[1])
            command(prefix, "config/arp", f"delete {host}")
            print(f"{host} ({host}) deleted")
            return 0
        if args[0] == "-s":
            if len(args) < 3:
                raise ToolError("usage: arp -s HOST MAC [temp] [pub]")
            host = _host(args[1])
            extra = []
            rest = args[3:]
            while rest:
                w = rest.pop(0)
                if w in ("temp", "permanent"):
                    continue
                if w == "pub":
                    extra.append("pub")
                elif w in ("ifscope", "if") and rest:
                    extra += ["if", rest.pop(0)]
                else:
                    raise ToolError(f"unknown argument: {w}")
            command(prefix, "config/arp", " ".join(["set", host, args[2], *extra]))
            return 0
        if len(args) == 1 and not args[0].startswith("-"):
            host = _host(args[0])
            rows = [r for r in table(read_file(prefix, "config/arp")) if r["address"] == host]
            if not rows:
                raise ToolError(f"{host} ({host}) -- no entry")
            for r in rows:
                print(format_entry(r))
            return 0
        raise ToolError(USAGE)
    except ToolError as exc:
        return fail(TOOL, exc)
