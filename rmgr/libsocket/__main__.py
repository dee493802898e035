"""Run an unmodified Python program over io-pkt's sockets.

    SOCK=/alt python -m rmgr.libsocket -m http.server 8080
    SOCK=/alt python -m rmgr.libsocket script.py ARGS...
    python -m rmgr.libsocket --sock /alt -m MODULE ARGS...
"""

from __future__ import annotations

import runpy
import sys

from rmgr import libsocket

USAGE = "usage: python -m rmgr.libsocket [--sock PREFIX] (-m MODULE | SCRIPT | -c CODE) [ARGS...]"


def main(argv: list[str]) -> int:
    args = list(argv)
    prefix = None
    if len(args) >= 2 and args[0] == "--sock":
        prefix = args[1]
        args = args[2:]
    elif args and args[0].startswith("--sock="):
        prefix = args[0].split("=", 1)[1]
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    with libsocket.patch(prefix):
        if args[0] == "-m" and len(args) >= 2:
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[0] == "-c" and len(args) >= 2:
            sys.argv = ["-c", *args[2:]]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(args)
            sys.path.insert(0, __import__("os").path.dirname(args[0]) or ".")
            runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
