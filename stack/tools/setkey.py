"""``io-pkt setkey``: NetBSD setkey(8) over ``config/setkey`` (stack/ipsec/setkey.py).

    setkey -c            read statements from stdin (one write: the whole input)
    setkey -f FILE       read statements from FILE
    setkey -D [-P]       dump the SAD (-DP: the SPD)
    setkey -F [-P]       flush the SAD (-FP: the SPD)
"""

from __future__ import annotations

import sys

from stack.tools.common import ToolError, command, fail, pop_prefix, unknown_option, wants_help

TOOL = "setkey"
USAGE = "usage: setkey [-c] [-f FILE] [-D[P]] [-F[P]]"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args) or not args:
        print(USAGE)
        return 0 if args else 2
    try:
        texts: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-c":
                texts.append(sys.stdin.read())
            elif a == "-f":
                if i + 1 >= len(args):
                    raise ToolError("-f needs a FILE")
                path = args[i + 1]
                try:
                    with open(path) as f:
                        texts.append(f.read())
                except OSError as exc:
                    raise ToolError(f"{path}: {exc.strerror}") from None
                i += 1
            elif a in ("-D", "-DP", "-PD"):
                texts.append("spddump;" if "P" in a else "dump;")
            elif a in ("-F", "-FP", "-PF"):
                texts.append("spdflush;" if "P" in a else "flush;")
            elif a == "-P" and texts and texts[-1] in ("dump;", "flush;"):
                texts[-1] = "spd" + texts[-1]
            else:
                raise unknown_option(a, USAGE)
            i += 1
        for text in texts:
            reply = command(prefix, "config/setkey", text)
            if reply.strip() != "ok":
                sys.stdout.write(reply)
    except ToolError as exc:
        return fail(TOOL, exc)
    return 0
