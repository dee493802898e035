"""The ``io-pkt`` console script: run a stack, or run a tool against a running one."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

import trio

from stack.cmdline import HelpRequested, UsageError, parse_args, usage
from stack.core import Stack, serve_until_signalled

log = logging.getLogger("io-pkt")


def setup_logging(verbose: int, instance: int) -> None:
    root = logging.getLogger("io-pkt")
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    fmt = logging.Formatter(f"io-pkt[{instance}] %(levelname)s %(name)s: %(message)s")
    # Errors always reach stderr; -v adds the info messages, -vv debug.
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.addHandler(console)
    if os.path.exists("/dev/log"):
        try:
            syslog = logging.handlers.SysLogHandler(address="/dev/log")
            syslog.setFormatter(fmt)
            root.addHandler(syslog)
        except OSError:
            pass


def _prescan_instance(argv: list[str]) -> int:
    for i, a in enumerate(argv):
        if a.startswith("-i"):
            value = a[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            return int(value) if value.isdigit() else 0
    return 0


def run_stack(argv: list[str]) -> int:
    # logging first (a pre-scan for -v/-i), so option warnings from parsing are seen once
    verbose = sum(len(a) - 1 for a in argv if a.startswith("-v") and set(a[1:]) == {"v"})
    setup_logging(verbose, _prescan_instance(argv))
    try:
        cfg = parse_args(argv)
    except HelpRequested:
        sys.stdout.write(usage())
        return 0
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not cfg.prefix and os.geteuid() != 0:
        print("io-pkt: the default prefix serves /dev/socket, which needs root; "
              "run as root or pass -p tcpip prefix=/some/dir", file=sys.stderr)
        return 1
    if not cfg.drivers and not cfg.protocols:
        log.info("no driver given: only lo0 is up")
    from stack.preflight import check_mountpoint

    problem = check_mountpoint(cfg.socket_path)
    if problem:
        print(f"io-pkt: {problem}", file=sys.stderr)
        return 1
    stack = Stack(cfg)
    try:
        trio.run(serve_until_signalled, stack)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-"):
        from stack.tools import run_tool

        return run_tool(argv[0], argv[1:])
    return run_stack(argv)


if __name__ == "__main__":
    sys.exit(main())
