"""``config/ndp`` (the IPv6 neighbour cache: table / commands), ``config/ndp_prefixes``
and ``config/ndp_routers`` (what router advertisements made: ``ndp -p``, ``ndp -r``).

ndp commands::

    set ADDR MAC [if IF] [proxy]     (a permanent entry; ADDR may carry its zone %IF)
    delete ADDR [if IF]
    flush [if IF]                    (every dynamic entry; permanent ones stay)

Per-interface ND switches (``ndp -i IF accept_rtadv``) are ``config/interfaces`` verbs.
"""

from __future__ import annotations

import errno

from rmgr.nodes import Caller, Directory, TextFile
from stack.control import backend
from stack.control.routes import render_table
from stack.control.util import ControlFiles, einval, parse_addr6, require_root
from stack.l2.iface import parse_mac

NDP_COLUMNS = ("address", "lladdr", "interface", "state", "expires", "flags")
PREFIX_COLUMNS = ("prefix", "interface", "expire", "flags")
ROUTER_COLUMNS = ("router", "interface", "expire")


class NdpFiles(ControlFiles):
    def publish(self, cfg: Directory) -> None:
        cfg.add("ndp", self.node())
        cfg.add("ndp_prefixes", TextFile(
            lambda: render_table(PREFIX_COLUMNS, backend.list_prefixes(self.stack))))
        cfg.add("ndp_routers", TextFile(
            lambda: render_table(ROUTER_COLUMNS, backend.list_routers(self.stack))))

    def render(self) -> str:
        return render_table(NDP_COLUMNS, backend.list_ndp(self.stack))

    def command(self, text: str, caller: Caller) -> str:
        require_root(caller, "changing the neighbour cache")
        words = text.split()
        if not words:
            raise einval("empty command; expected set, delete or flush")
        verb, args = words[0], words[1:]
        ifname = None
        if "if" in args:
            i = args.index("if")
            if i + 1 >= len(args):
                raise einval("if needs an interface name")
            ifname = args[i + 1]
            del args[i:i + 2]
            self._need_iface(ifname)
        backend.inet6(self.stack)  # EAFNOSUPPORT first when there is no IPv6
        self.control.hold()
        try:
            if verb == "set":
                proxy = False
                for w in ("proxy", "pub"):
                    if w in args:
                        args.remove(w)
                        proxy = True
                args = [a for a in args if a not in ("temp", "permanent", "static")]
                if len(args) != 2:
                    raise einval("usage: set ADDR MAC [if IF] [proxy]")
                addr, ifname = self._addr(args[0], ifname)
                try:
                    mac = parse_mac(args[1])
                except ValueError:
                    raise einval(f"bad MAC address: {args[1]}") from None
                backend.ndp_set(self.stack, addr, mac, ifname, proxy)
                return "ok\n"
            if verb == "delete":
                if len(args) != 1:
                    raise einval("usage: delete ADDR [if IF]")
                addr, ifname = self._addr(args[0], ifname)
                backend.ndp_delete(self.stack, addr, ifname)
                return "ok\n"
            if verb == "flush":
                if args:
                    raise einval("usage: flush [if IF]")
                return f"flushed {backend.ndp_flush(self.stack, ifname)}\n"
            raise einval(f"unknown ndp command: {verb} (set, delete, flush)")
        finally:
            self.control.changed()

    def _need_iface(self, ifname: str) -> None:
        if ifname not in self.stack.interfaces:
            raise OSError(errno.ENXIO, f"no such interface: {ifname}")

    def _addr(self, text: str, ifname: str | None) -> tuple[int, str | None]:
        addr, zone = parse_addr6(text)
        if zone is not None:
            self._need_iface(zone)
            if ifname is not None and zone != ifname:
                raise einval(f"scope %{zone} and if {ifname} disagree")
            ifname = zone
        if addr >> 118 == 0xFE80 >> 6 and ifname is None:
            raise einval(f"{text} is link-local: give its interface ({text}%IF)")
        if addr >> 120 == 0xFF or addr in (0, 1):
            raise einval(f"{text}: not a unicast neighbour address")
        return addr, ifname
