"""``io-pkt ifconfig``: NetBSD/QNX ifconfig over ``config/interfaces``.

    ifconfig [-a | -l]                       list all (or their names)
    ifconfig IF                              one interface
    ifconfig IF [inet] ADDR[/LEN] [netmask M] [broadcast B] [alias | -alias | delete]
    ifconfig IF up | down | mtu N | vlan TAG vlanif PARENT | -vlanif
    ifconfig IF create [vlan TAG vlanif PARENT] [OPTIONS]   (vlanN, bridgeN, DRIVERn)
    ifconfig IF destroy

Without ``alias`` a new address replaces the interface's first one (as BSD's ifconfig);
``delete``/``-alias`` without an address removes the first.
"""

from __future__ import annotations

import ipaddress
import sys

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
USAGE = ("usage: ifconfig [-a | -l] | IF [create|destroy] | IF [inet] ADDR[/LEN] "
         "[netmask M] [broadcast B] [alias|-alias|delete] [up|down] [mtu N]")

FLAG_ORDER = ["UP", "BROADCAST", "LOOPBACK", "POINTOPOINT", "RUNNING", "PROMISC",
              "ALLMULTI", "MULTICAST"]


def load(prefix: str) -> list[Stanza]:
    return stanzas(read_file(prefix, "config/interfaces"))


def find(prefix: str, name: str) -> Stanza:
    for s in load(prefix):
        if s.name == name:
            return s
    raise ToolError(f"no such interface: {name}")


def format_stanza(s: Stanza) -> str:
    fl = s.get("flags", "0x0 -").split()
    bits = int(fl[0], 16)
    names = fl[1] if len(fl) > 1 and fl[1] != "-" else ""
    out = [f"{s.name}: flags={bits:x}<{names}> mtu {s.get('mtu')}"]
    caps = s.get("capabilities")
    if caps:
        out.append(f"\tcapabilities={caps}")
        out.append(f"\tenabled={s.get('offloads', '-')}")
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
    for a in s.all("inet"):
        words = a.split()
        iface = ipaddress.ip_interface(words[0])
        line = f"\tinet {iface.ip} netmask {int(iface.netmask):#010x}"
        if "broadcast" in words:
            line += f" broadcast {words[words.index('broadcast') + 1]}"
        out.append(line)
    return "\n".join(out) + "\n"


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
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None

        if a == "inet":
            pass
        elif a in ("inet6", "link"):
            raise ToolError(f"address family {a} is not supported")
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
        elif addr is None and (a[0].isdigit() or a == "default"):
            addr = a
        else:
            raise ToolError(f"unknown argument: {a}")
        i += 1
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


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    try:
        if not args or args == ["-a"]:
            sys.stdout.write("".join(format_stanza(s) for s in load(prefix)))
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
        if not rest:
            sys.stdout.write(format_stanza(current))
            return 0
        for cmd in parse_config(name, rest, current):
            command(prefix, "config/interfaces", cmd)
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
