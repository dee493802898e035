"""``io-pkt nicinfo [IF...]``: per-interface driver facts and counters (QNX nicinfo), from
``config/nicinfo/<IF>``."""

from __future__ import annotations

import sys

from stack.tools.cfgparse import keyvalues
from stack.tools.common import (
    ToolError,
    fail,
    pop_prefix,
    read_file,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "nicinfo"
USAGE = "usage: nicinfo [IF...]"

LABELS = [
    ("ipackets", "Packets Received OK"), ("ibytes", "Bytes Received OK"),
    ("ierrors", "Receive Errors"), ("iqdrops", "Receive Drops"),
    ("opackets", "Packets Transmitted OK"), ("obytes", "Bytes Transmitted OK"),
    ("oerrors", "Transmit Errors"), ("oqdrops", "Transmit Drops"),
]


def dots(label: str, value: object) -> str:
    return f"  {label} {'.' * max(2, 44 - len(label))} {value}"


def render(name: str, text: str) -> str:
    info = keyvalues(text)
    counters = {}
    facts = []
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "counter":
            cname, _, value = rest.partition(" ")
            counters[cname] = value
        elif key not in ("interface", "driver", "module", "kind", "mac", "mtu", "link",
                         "promiscuous", "capabilities", "offloads"):
            facts.append((key, rest))
    out = [f"{name}:",
           f"  {info.get('kind', 'ether').capitalize()} Controller ({info.get('driver', '-')}, "
           f"module {info.get('module', '-')})",
           dots("Physical Node ID", info.get("mac", "-").replace(":", "").upper()),
           dots("Link", info.get("link", "-")),
           dots("MTU", info.get("mtu", "-")),
           dots("Promiscuous Mode", info.get("promiscuous", "-")),
           dots("Hardware Capabilities", info.get("capabilities", "-")),
           dots("Offloads Enabled", info.get("offloads", "-"))]
    out += [dots(k.replace("_", " ").capitalize(), v) for k, v in facts]
    out.append("")
    for key, label in LABELS:
        out.append(dots(label, counters.pop(key, "0")))
    for key, value in sorted(counters.items()):
        out.append(dots(key, value))
    return "\n".join(out) + "\n\n"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        for a in args:
            if a.startswith("-"):
                raise unknown_option(a, USAGE)
        names = list(args)
        if not names:
            names = sorted(p.name for p in (socket_dir(prefix) / "config/nicinfo").iterdir())
        for name in names:
            path = socket_dir(prefix) / "config/nicinfo" / name
            if not path.exists():
                raise ToolError(f"no such interface: {name}")
            sys.stdout.write(render(name, read_file(prefix, f"config/nicinfo/{name}")))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
