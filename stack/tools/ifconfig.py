"""``io-pkt ifconfig``: NetBSD/QNX ifconfig over ``config/interfaces``.

    ifconfig [-L] [-a | -l]                  list all (or their names)
    ifconfig [-L] IF [inet6]                 one interface (only its IPv6 addresses)
    ifconfig IF [inet] ADDR[/LEN] [netmask M] [broadcast B] [alias | -alias | delete]
    ifconfig IF inet6 ADDR[/LEN] [prefixlen N] [pltime S] [vltime S] [alias | -alias | delete]
    ifconfig IF inet6 [-]accept_rtadv | [-]auto_linklocal
    ifconfig IF up | down | mtu N | vlan TAG vlanif PARENT | -vlanif
    ifconfig IF create [vlan TAG vlanif PARENT] [OPTIONS]   (vlanN, bridgeN, DRIVERn)
    ifconfig IF destroy
    ifconfig IF ssid NAME [chan N] [wpakey PASS | wpakeyfile F] [mediaopt hostap] | scan |
             list sta     (802.11: stack/tools/ifconfig80211.py)

Without ``alias`` a new IPv4 address replaces the interface's first one (as BSD's
ifconfig); ``delete``/``-alias`` without an address removes the first. An IPv6 address
is always added (KAME: a bare address is a /64), tentative until DAD passes; ``-L``
shows the IPv6 lifetimes (pltime/vltime).
"""

from __future__ import annotations

import ipaddress
import sys

from stack.tools import ifconfig80211
from stack.tools.cfgparse import Stanza, stanzas
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

TOOL = "ifconfig"
USAGE = ("usage: ifconfig [-L] [-a | -l] | IF [create|destroy] | IF [inet] ADDR[/LEN] "
         "[netmask M] [broadcast B] [alias|-alias|delete] [up|down] [mtu N] | "
         "IF inet6 ADDR[/LEN] [prefixlen N] [alias|-alias|delete] | "
         "IF inet6 [-]accept_rtadv|[-]auto_linklocal")

FLAG_ORDER = ["UP", "BROADCAST", "LOOPBACK", "POINTOPOINT", "RUNNING", "PROMISC",
              "ALLMULTI", "MULTICAST"]


def load(prefix: str) -> list[Stanza]:
    return stanzas(read_file(prefix, "config/interfaces"))


def find(prefix: str, name: str) -> Stanza:
    for s in load(prefix):
        if s.name == name:
            return s
    raise ToolError(f"no such interface: {name}")


#: FreeBSD's nd6 option bits (``nd6 options=23<PERFORMNUD,ACCEPT_RTADV,AUTO_LINKLOCAL>``)
ND6_BITS = (("PERFORMNUD", 0x1), ("ACCEPT_RTADV", 0x2), ("AUTO_LINKLOCAL", 0x20))


def inet6_line(value: str, lifetimes: bool = False) -> str:
    """A stanza's ``inet6 ADDR/LEN [scopeid 0xN] [FLAG...] pltime P vltime V`` as KAME's
    ifconfig prints it: ``inet6 ADDR prefixlen N [flags] [scopeid 0xN]``."""
    words = value.split()
    addr, _, plen = words[0].rpartition("/")
    kv: dict[str, str] = {}
    flags: list[str] = []
    rest = words[1:]
    while rest:
        w = rest.pop(0)
        if w in ("scopeid", "pltime", "vltime") and rest:
            kv[w] = rest.pop(0)
        else:
            flags.append(w)
    line = f"\tinet6 {addr} prefixlen {plen}"
    for f in ("anycast", "tentative", "duplicated", "detached", "deprecated", "autoconf",
              "temporary"):
        if f in flags:
            line += f" {f}"
    if "scopeid" in kv:
        line += f" scopeid {kv['scopeid']}"
    if lifetimes and "pltime" in kv:
        line += f" pltime {kv['pltime']} vltime {kv.get('vltime', 'infty')}"
    return line


def nd6_line(value: str) -> str:
    """The stanza's ``nd6 ... flags accept_rtadv,auto_linklocal`` → FreeBSD's nd6 line."""
    words = value.split()
    flags = words[words.index("flags") + 1].split(",") if "flags" in words else []
    on = {"ACCEPT_RTADV": "accept_rtadv" in flags, "AUTO_LINKLOCAL": "auto_linklocal" in flags,
          "PERFORMNUD": True}
    bits = sum(b for n, b in ND6_BITS if on[n])
    names = ",".join(n for n, _ in ND6_BITS if on[n])
    return f"\tnd6 options={bits:x}<{names}>"


def format_stanza(s: Stanza, *, lifetimes: bool = False, only6: bool = False,
                  extra: list[str] | None = None) -> str:
    fl = s.get("flags", "0x0 -").split()
    bits = int(fl[0], 16)
    names = fl[1] if len(fl) > 1 and fl[1] != "-" else ""
    out = [f"{s.name}: flags={bits:x}<{names}> mtu {s.get('mtu')}"]
    caps = s.get("capabilities")
    if caps:
        out.append(f"\tcapabilities={caps}")
        out.append(f"\tenabled={s.get('offloads', '-')}")
    out += extra or []
    if s.get("kind") != "loopback":
        out.append(f"\taddress: {s.get('mac')}")
    vlan = s.get("vlan")
    if vlan:
        tag, _, rest = vlan.partition(" vlanif ")
        out.append(f"\tvlan: {tag} parent: {rest}")
    if s.get("bridge"):
        out.append(f"\tbridge: {s.get('bridge')}")
    if s.get("kind") not in ("loopback",):
        out.append(f"\tstatus: {'active' if 'RUNNING' in names.split(',') else 'no carrier'}")
    if only6:
        out = out[:1]
    for a in [] if only6 else s.all("inet"):
        words = a.split()
        iface = ipaddress.ip_interface(words[0])
        line = f"\tinet {iface.ip} netmask {int(iface.netmask):#010x}"
        if "broadcast" in words:
            line += f" broadcast {words[words.index('broadcast') + 1]}"
        out.append(line)
    out += [inet6_line(a, lifetimes) for a in s.all("inet6")]
    if s.get("nd6") and s.get("kind") != "loopback":
        out.append(nd6_line(s.get("nd6")))
    return "\n".join(out) + "\n"


ND_FLAGS = ("accept_rtadv", "-accept_rtadv", "auto_linklocal", "-auto_linklocal")


def _need(kw: str, nxt: str | None) -> str:
    if nxt is None:
        raise ToolError(f"{kw} needs an argument")
    return nxt


def parse_config(name: str, args: list[str], current: Stanza) -> list[str]:
    """ifconfig words → control commands (``NAME verb ...``)."""
    cmds: list[str] = []
    pending: list[str] = []  # address words
    addr: str | None = None
    mask = bcast = None
    mode = "set"
    inet4 = inet6 = False
    v6opts: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None

        if a == "inet":
            if inet6:
                raise ToolError("give one address family: inet or inet6")
            inet4 = True
        elif a == "inet6":
            if inet4:
                raise ToolError("give one address family: inet or inet6")
            inet6 = True
        elif a == "link":
            raise ToolError(f"address family {a} is not supported")
        elif a in ("prefixlen", "pltime", "vltime"):
            v6opts += [a, _need(a, nxt)]
            i += 1
        elif a in ND_FLAGS:
            pending.append(a)
        elif a == "netmask":
            mask = _need(a, nxt)
            i += 1
        elif a == "broadcast":
            bcast = _need(a, nxt)
            i += 1
        elif a in ("alias", "add"):
            mode = "alias"
        elif a in ("-alias", "delete", "remove"):
            mode = "delete"
        elif a in ("up", "down", "promisc", "-promisc", "-vlanif"):
            pending.append(a)
        elif a == "mtu":
            pending += ["mtu", _need(a, nxt)]
            i += 1
        elif a == "vlan":
            pending += ["vlan", _need(a, nxt)]
            i += 1
        elif a == "vlanif":
            pending += ["vlanif", _need(a, nxt)]
            i += 1
        elif addr is None and (a[0].isdigit() or a == "default" or ":" in a):
            addr = a
        else:
            raise ToolError(f"unknown argument: {a}")
        i += 1
    if inet6 or (addr is not None and ":" in addr):
        if inet4:
            raise ToolError(f"{addr}: not an IPv4 address")
        if mask or bcast:
            raise ToolError("netmask/broadcast are IPv4's (inet6: prefixlen N)")
        if mode == "delete":
            if addr is None:
                raise ToolError("inet6 delete needs an address")
            cmds.append(f"{name} delete {addr}")
        elif addr is not None:
            cmds.append(" ".join([name, "inet6", addr, *v6opts]))
        elif v6opts:
            raise ToolError(f"{v6opts[0]} needs an address")
        if pending:
            cmds.append(f"{name} {' '.join(pending)}")
        return cmds
    if v6opts:
        raise ToolError(f"{v6opts[0]} is for inet6 addresses")
    if any(p in ND_FLAGS for p in pending):
        raise ToolError("accept_rtadv/auto_linklocal are inet6 settings "
                        "(ifconfig IF inet6 accept_rtadv)")
    if mode == "delete":
        if addr is None:
            first = current.all("inet")
            if not first:
                raise ToolError(f"{name} has no address to delete")
            addr = first[0].split()[0]
        cmds.append(f"{name} delete {addr.partition('/')[0]}")
    elif addr is not None:
        spec = [addr] + (["netmask", mask] if mask else []) + (["broadcast", bcast] if bcast else [])
        cmds.append(f"{name} {'set' if mode == 'set' else 'addr'} {' '.join(spec)}")
    elif mask or bcast:
        raise ToolError("netmask/broadcast need an address")
    if pending:
        cmds.append(f"{name} {' '.join(pending)}")
    return cmds


def _wlan_lines(prefix: str, s: Stanza) -> list[str]:
    return ifconfig80211.lines(prefix, s.name) if s.get("kind") == "wlan" else []


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    lifetimes = bool(args) and args[0] == "-L"
    if lifetimes:
        args = args[1:]
    try:
        if not args or args == ["-a"]:
            sys.stdout.write("".join(format_stanza(s, lifetimes=lifetimes,
                                                   extra=_wlan_lines(prefix, s))
                                     for s in load(prefix)))
            return 0
        if args == ["-l"]:
            print(" ".join(s.name for s in load(prefix)))
            return 0
        if args[0] in ("-a", "-l"):
            raise bad_usage(f"unexpected argument: {args[1]}", USAGE)
        if args[0].startswith("-"):
            raise unknown_option(args[0], USAGE)
        name, rest = args[0], args[1:]
        if rest and rest[0] == "create":
            command(prefix, "config/interfaces", " ".join(["create", name, *rest[1:]]))
            return 0
        if rest == ["destroy"]:
            find(prefix, name)
            command(prefix, "config/interfaces", f"destroy {name}")
            return 0
        current = find(prefix, name)
        if not rest or rest == ["inet6"]:
            sys.stdout.write(format_stanza(current, lifetimes=lifetimes, only6=bool(rest),
                                           extra=None if rest else _wlan_lines(prefix, current)))
            return 0
        if ifconfig80211.query(rest):
            sys.stdout.write(ifconfig80211.run_query(prefix, name, rest))
            return 0
        wireless, rest = ifconfig80211.split(rest)
        if wireless:
            ifconfig80211.configure(prefix, name, wireless)
        for cmd in parse_config(name, rest, current) if rest else []:
            command(prefix, "config/interfaces", cmd)
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
