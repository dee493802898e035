"""io-pkt pfctl: control lsm-pf through ``$SOCK/dev/pf`` (OpenBSD pfctl's options).

    io-pkt pfctl -e | -d                  enable / disable
    io-pkt pfctl [-n] -f FILE             load a rule set (-n: only check it; FILE - is stdin)
    io-pkt pfctl -s rules|states|info|Tables [-v]
    io-pkt pfctl -F rules|states|tables|info|all
    io-pkt pfctl -t NAME -T show|add|delete|flush [ADDR ...]

Short forms combine as in pfctl (``-nf FILE``, ``-sr``, ``-ss``, ``-si``, ``-Fa``).
``-n`` parses locally and needs no running stack.
"""

from __future__ import annotations

import getopt
import os
import sys

from stack.tools.common import ToolError, control_command, pop_prefix, wants_help

SHOW = {"r": "rules", "rules": "rules", "s": "states", "states": "states", "i": "info",
        "info": "info", "T": "tables", "Tables": "tables", "tables": "tables"}
FLUSH = {"r": "rules", "rules": "rules", "s": "states", "states": "states", "T": "tables",
         "Tables": "tables", "tables": "tables", "i": "info", "info": "info", "a": "all",
         "all": "all"}
USAGE = ("usage: io-pkt pfctl [-dehnv] [-F modifier] [-f file] [-s modifier] "
         "[-t table -T command [address ...]]")


def pf_dir(prefix: str) -> str:
    path = f"{prefix}/dev/pf"
    if not os.path.isdir(path) or not os.path.exists(f"{path}/ctl"):
        if not os.path.isdir(f"{prefix}/dev/socket/config"):
            raise ToolError(f"no io-pkt stack at {prefix}/dev/socket (is it running? set SOCK "
                            "or --prefix)")
        raise ToolError(f"{path}: pf is not loaded (io-pkt mount -T io-pkt lsm-pf)")
    return path


def ctl(prefix: str, text: str) -> str:
    """One command to ``dev/pf/ctl``; the reply, or ToolError with the stack's message."""
    return control_command(pf_dir(prefix) + "/ctl", text,
                           eperm_hint="Permission denied (pf commands need root)")


def read(prefix: str, name: str) -> str:
    path = f"{pf_dir(prefix)}/{name}"
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None


def _read_rules_file(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "stdin"
    try:
        with open(path) as f:
            return f.read(), path
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None


def main(argv: list[str]) -> int:
    prefix, argv = pop_prefix(argv)
    if wants_help(argv):
        print(USAGE)
        return 0
    try:
        opts, rest = getopt.getopt(argv, "edhnvf:s:F:t:T:")
    except getopt.GetoptError as exc:
        # one line: "unknown option -Z (usage: ...)", "option -f requires argument (usage: ...)"
        dashes = "-" if len(exc.opt) == 1 else "--"
        what = f"unknown option {dashes}{exc.opt}" if exc.opt and "not recognized" in exc.msg \
            else exc.msg
        print(f"pfctl: {what} ({USAGE})", file=sys.stderr)
        return 1
    o: dict[str, str] = {}
    verbose = False
    check_only = False
    for k, v in opts:
        if k == "-v":
            verbose = True
        elif k == "-n":
            check_only = True
        elif k == "-h":
            print(USAGE)
            return 0
        else:
            o[k] = v
    if not o:
        print(f"pfctl: {USAGE}", file=sys.stderr)
        return 1
    try:
        return _run(prefix, o, rest, verbose, check_only)
    except ToolError as exc:
        print(f"pfctl: {exc}", file=sys.stderr)
        return 1


def _run(prefix: str, o: dict[str, str], rest: list[str], verbose: bool,
         check_only: bool) -> int:
    if "-F" in o:
        what = FLUSH.get(o["-F"])
        if what is None:
            raise ToolError(f"Unknown flush modifier '{o['-F']}'")
        print(ctl(prefix, f"flush {what}"), end="", file=sys.stderr)
    if "-f" in o:
        text, name = _read_rules_file(o["-f"])
        if check_only:
            from stack.pf.engine import Pf
            from stack.pf.parse import ParseError

            try:
                rs = Pf.check(text, name)
            except ParseError as exc:
                print(exc.format(), file=sys.stderr)
                print("pfctl: Syntax error in config file: pf rules not loaded", file=sys.stderr)
                return 1
            if verbose:
                print(rs.render(), end="")
        else:
            try:
                ctl(prefix, f"load {name}\n{text}")
            except ToolError as exc:
                print(str(exc), file=sys.stderr)
                print("pfctl: Syntax error in config file: pf rules not loaded", file=sys.stderr)
                return 1
    if "-e" in o:
        try:
            print(ctl(prefix, "enable"), end="", file=sys.stderr)
        except ToolError as exc:
            if "already" not in str(exc):
                raise
            print(f"pfctl: {exc}", file=sys.stderr)
    if "-d" in o:
        try:
            print(ctl(prefix, "disable"), end="", file=sys.stderr)
        except ToolError as exc:
            if "not enabled" not in str(exc):
                raise
            print(f"pfctl: {exc}", file=sys.stderr)
    if "-t" in o or "-T" in o:
        if "-t" not in o or "-T" not in o:
            raise ToolError("-t and -T go together: -t TABLE -T show|add|delete|flush")
        reply = ctl(prefix, " ".join(["table", o["-t"], o["-T"], *rest]))
        print(reply, end="", file=sys.stdout if o["-T"] == "show" else sys.stderr)
    if "-s" in o:
        what = SHOW.get(o["-s"])
        if what is None:
            raise ToolError(f"Unknown show modifier '{o['-s']}'")
        if what in ("rules", "states"):
            print(read(prefix, what + (".verbose" if verbose else "")), end="")
        else:
            print(read(prefix, what), end="")
    return 0
