"""``io-pkt rtadvd``: the router-advertisement daemon's switch, over ``config/rtadvd``.

    rtadvd [-m MTU] [-p PREFIX/LEN]... [-d RDNSS]... [-l LIFETIME] [-i MAXINTERVAL]
           [-h HOPLIMIT] [-M] [-O] IF...        advertise on each IF
    rtadvd -s IF...                             stop (a final RA with router lifetime 0)
    rtadvd                                      what is advertised where

The stack sends the advertisements itself (stack/inet6/rtadv.py) while it is a router,
``sysctl -w net.inet6.ip6.forwarding=1``; enabled before that, an interface waits and
starts advertising when forwarding is turned on. Without ``-p`` the prefixes are the /64s
of the interface's global addresses. ``-M``/``-O`` set the managed / other-config flags.
Running it again for an interface replaces that interface's settings.
"""

from __future__ import annotations

import sys

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

TOOL = "rtadvd"
USAGE = ("usage: rtadvd [-m mtu] [-p prefix/len]... [-d rdnss]... [-l lifetime] "
         "[-i maxinterval] [-h hoplimit] [-M] [-O] IF... | rtadvd -s IF... | rtadvd")

_WITH_ARG = {"-m": "mtu", "-p": "prefix", "-d": "rdnss", "-l": "lifetime",
             "-i": "interval", "-h": "hoplimit"}


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        if not args:
            sys.stdout.write(read_file(prefix, "config/rtadvd"))
            return 0
        stop = False
        opts: list[str] = []
        ifaces: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in _WITH_ARG:
                if i + 1 >= len(args):
                    raise ToolError(f"option {a} needs an argument")
                opts += [_WITH_ARG[a], args[i + 1]]
                i += 2
                continue
            if a == "-s":
                stop = True
            elif a in ("-M", "-O"):
                opts.append("managed" if a == "-M" else "other")
            elif a.startswith("-"):
                raise unknown_option(a, USAGE)
            else:
                ifaces.append(a)
            i += 1
        if not ifaces:
            raise bad_usage("no interface given", USAGE)
        if stop and opts:
            raise bad_usage("-s takes only interfaces", USAGE)
        for name in ifaces:
            if stop:
                reply = command(prefix, "config/rtadvd", f"disable {name}")
            else:
                reply = command(prefix, "config/rtadvd", " ".join(["enable", name, *opts]))
            sys.stdout.write(reply)
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
