"""``io-pkt mount -T io-pkt MODULE [OPTS]``: load a driver or protocol into a running stack
(QNX: ``mount -T io-pkt /lib/dll/devnp-foo.so``), through ``config/modules``."""

from __future__ import annotations

import os
import sys

from stack.tools.common import ToolError, command, fail, pop_prefix, unknown_option, wants_help

USAGE = "usage: io-pkt mount -T io-pkt [-d|-p] MODULE [OPTIONS]"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        kind = ""
        if len(args) >= 2 and args[0] == "-T":
            if args[1] != "io-pkt":
                raise ToolError(f"unknown mount type {args[1]!r} (only io-pkt)")
            args = args[2:]
        elif args and args[0].startswith("-T"):
            if args[0][2:] != "io-pkt":
                raise ToolError(f"unknown mount type {args[0][2:]!r} (only io-pkt)")
            args = args[1:]
        elif args and args[0].startswith("-"):
            raise unknown_option(args[0], USAGE)
        else:
            raise ToolError(USAGE)
        if args and args[0] in ("-d", "-p"):
            kind = args[0]
            args = args[1:]
        if args and args[0].startswith("-"):
            raise unknown_option(args[0], USAGE)
        if not args or len(args) > 2:
            raise ToolError(USAGE)
        module = args[0]
        if "/" in module and not module.startswith("/"):
            module = os.path.abspath(module)
        cmd = " ".join(x for x in ("load", kind, module, *args[1:]) if x)
        reply = command(prefix, "config/modules", cmd)
        sys.stdout.write(reply if reply.endswith("\n") else reply + "\n")
        return 0
    except ToolError as exc:
        return fail("mount", exc)
