"""``io-pkt sysctl``: NetBSD sysctl(8) over ``config/sysctl``.

    sysctl -a                 every variable
    sysctl NAME...            one variable, or every variable under a prefix
    sysctl -n NAME            the value only
    sysctl -w NAME=VALUE...   set (also plain ``sysctl NAME=VALUE``)
"""

from __future__ import annotations

from stack.tools.common import (
    ToolError,
    command,
    fail,
    pop_prefix,
    read_file,
    unknown_option,
    wants_help,
)

TOOL = "sysctl"
USAGE = "usage: sysctl [-n] -a | sysctl [-n] NAME... | sysctl [-n] -w NAME=VALUE..."


def load(prefix: str) -> dict[str, str]:
    out = {}
    for line in read_file(prefix, "config/sysctl").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value.strip()
    return out


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    value_only = write = show_all = False
    names: list[str] = []
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        for a in args:
            if a.startswith("-") and len(a) > 1 and "=" not in a:
                for ch in a[1:]:
                    if ch == "n":
                        value_only = True
                    elif ch == "w":
                        write = True
                    elif ch == "a" or ch == "A":
                        show_all = True
                    elif ch in "qe":
                        pass
                    else:
                        raise unknown_option(f"-{ch}", USAGE)
            else:
                names.append(a)
        if not names and not show_all:
            raise ToolError(USAGE)

        def show(name: str, value: str) -> None:
            print(value if value_only else f"{name} = {value}")

        if show_all and not names:
            for name, value in sorted(load(prefix).items()):
                show(name, value)
            return 0
        for item in names:
            name, sep, value = item.partition("=")
            if sep:
                old = load(prefix).get(name)
                if old is None:
                    raise ToolError(f"unknown sysctl: {name}")
                reply = command(prefix, "config/sysctl", f"{name}={value}")
                new = reply.strip().partition("=")[2] or value
                print(new if value_only else f"{name}: {old} -> {new}")
                continue
            if write:
                raise ToolError(f"-w needs NAME=VALUE, got {item!r}")
            knobs = load(prefix)
            if name in knobs:
                show(name, knobs[name])
                continue
            under = sorted(k for k in knobs if k.startswith(name.rstrip(".") + "."))
            if not under:
                raise ToolError(f"unknown sysctl: {name}")
            for k in under:
                show(k, knobs[k])
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
