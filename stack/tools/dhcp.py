"""``io-pkt dhcp``: the stack's DHCP client (stack/dhcp), in dhcpcd's words.

::

    io-pkt dhcp [-w SECONDS] IF   start a client on IF; wait (30 s) until it is bound and
                                  print its lease (exit 1 if not bound by then: the
                                  client keeps trying)
    io-pkt dhcp -x IF             release the lease and stop (DHCPRELEASE)
    io-pkt dhcp -k IF             stop without releasing (remembered: INIT-REBOOT next)
    io-pkt dhcp -n IF             renew now
    io-pkt dhcp [-U IF]           show every client, or one
    io-pkt dhcp -6 [-S] IF        DHCPv6 (RFC 8415) on IF: stateful (an address, IA_NA),
                                  or with -S stateless (DNS by Information-Request);
                                  -6 with -x, -k, -n, -U as above (config/dhcp/v6)
"""

from __future__ import annotations

import time

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

TOOL = "dhcp"
USAGE = ("usage: dhcp [-6 [-S]] [-w SECONDS] IF | dhcp [-6] -x IF | dhcp [-6] -k IF | "
         "dhcp [-6] -n IF | dhcp [-6] [-U IF]")
VERBS = {"-x": "release", "-k": "keep", "-n": "renew"}


def _state(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("state "):
            return line.split()[1]
    return ""


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        base, start = "config/dhcp", "start"
        if "-6" in args:
            args = [a for a in args if a != "-6"]
            base = "config/dhcp/v6"
            if "-S" in args:
                args = [a for a in args if a != "-S"]
                start = "info"
        wait = 30.0
        if args[:1] == ["-w"]:
            if len(args) < 2:
                raise bad_usage("-w needs seconds", USAGE)
            wait = float(args[1])
            args = args[2:]
        if not args:
            print(read_file(prefix, f"{base}/ctl"), end="")
            return 0
        if args[0] in VERBS:
            if len(args) != 2:
                raise bad_usage("expected one interface", USAGE)
            print(command(prefix, f"{base}/ctl", f"{VERBS[args[0]]} {args[1]}"), end="")
            return 0
        if args[0] == "-U":
            if len(args) != 2:
                raise bad_usage("expected one interface", USAGE)
            print(read_file(prefix, f"{base}/{args[1]}"), end="")
            return 0
        if args[0].startswith("-"):
            raise unknown_option(args[0], USAGE)
        if len(args) != 1:
            raise bad_usage(f"unexpected argument: {args[1]}", USAGE)
        ifname = args[0]
        command(prefix, f"{base}/ctl", f"{start} {ifname}")
        deadline = time.monotonic() + wait
        text = ""
        while time.monotonic() < deadline:
            try:
                text = read_file(prefix, f"{base}/{ifname}")
            except ToolError:
                text = ""
            if _state(text) in ("bound", "configured"):
                print(text, end="")
                return 0
            time.sleep(0.1)
        raise ToolError(f"{ifname}: no lease after {wait:g}s (state {_state(text) or '-'}; "
                        f"the client keeps trying)")
    except (ToolError, ValueError) as exc:
        return fail(TOOL, exc)
