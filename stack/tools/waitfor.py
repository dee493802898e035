"""``io-pkt waitfor [PATH] [SECONDS]`` (either order): wait until a stack serves PATH (default
``$SOCK/dev/socket``), as QNX's ``waitfor /dev/socket``. Exit 0 when ready, 1 on timeout."""

from __future__ import annotations

import os
import sys
import time

from stack.preflight import mounted_fuse_at
from stack.tools.common import fail, pop_prefix, unknown_option, wants_help

TOOL = "waitfor"
USAGE = "usage: waitfor [PATH] [SECONDS]"


def ready(path: str) -> bool:
    """Mounted and answering: a read goes to the stack itself (a stat could be answered
    from the kernel's dentry cache of a dead stack's mount)."""
    if not mounted_fuse_at(path):
        return False
    try:
        with open(os.path.join(path, "config", "status"), "rb") as f:
            return f.read(4) == b"pid "
    except OSError:
        return False


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    path, timeout = f"{prefix}/dev/socket", 30.0
    if wants_help(args):
        print(USAGE)
        return 0
    for arg in args:  # a number is the timeout, anything else the path
        try:
            timeout = float(arg)
        except ValueError:
            if arg.startswith("-"):
                return fail(TOOL, unknown_option(arg, USAGE))
            path = arg
    deadline = time.monotonic() + timeout
    while not ready(path):
        if time.monotonic() > deadline:
            print(f"{TOOL}: {path} not ready after {timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.02)
    return 0
