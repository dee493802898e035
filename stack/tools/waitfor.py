"""``io-pkt waitfor [PATH] [SECONDS]``: wait until a stack serves PATH (default
``$SOCK/dev/socket``), as QNX's ``waitfor /dev/socket``. Exit 0 when ready, 1 on timeout."""

from __future__ import annotations

import os
import sys
import time

from stack.preflight import mounted_fuse_at
from stack.tools.common import pop_prefix


def ready(path: str) -> bool:
    return mounted_fuse_at(path) and os.path.isdir(os.path.join(path, "config"))


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    path = args[0] if args else f"{prefix}/dev/socket"
    try:
        timeout = float(args[1]) if len(args) > 1 else 30.0
    except ValueError:
        print(f"waitfor: bad timeout {args[1]!r}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + timeout
    while not ready(path):
        if time.monotonic() > deadline:
            print(f"waitfor: {path} not ready after {timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.02)
    return 0
