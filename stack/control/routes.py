"""``config/routes`` and ``config/arp``: tables to read, commands to write.

routes commands::

    add DEST [GATEWAY] [netmask MASK] [metric N] [mtu N] [-interface IF|if IF] [-reject] [-blackhole]
    delete DEST [GATEWAY] [netmask MASK] [if IF]
    change DEST [GATEWAY] [netmask MASK] [metric N] [mtu N] [if IF]
    get ADDR            (reply: the route used for ADDR, "key value" lines)
    flush               (removes every static route; connected/local routes stay)

DEST is ``default``, ``A.B.C.D/LEN`` or a host address; ``-net``/``-host`` are accepted
and ignored (the prefix length says which). IPv6 (KAME's ``route add -inet6``): the
addresses say the family, ``-inet6`` makes ``default`` IPv6's; ``prefixlen N``; a
link-local gateway carries its zone (``fe80::1%tap0``) or ``if IF``. ``flush -inet`` /
``flush -inet6`` flush one family. The table has a ``family`` column (inet, inet6).

arp commands::

    set HOST MAC [if IF] [pub]
    delete HOST [if IF]
    flush [if IF]
"""

from __future__ import annotations

import errno

from rmgr.nodes import Caller
from stack.addr import AF_INET, AF_INET6, ANY6, Prefix, format_addr
from stack.control import backend
from stack.control.util import (
    ControlFiles,
    einval,
    format_addr6,
    parse_addr,
    parse_addr6,
    parse_dest,
    parse_int,
    parse_prefix6,
    require_root,
    take,
)
from stack.inet6.ifaddr import is_link_local
from stack.l2.iface import parse_mac

ROUTE_COLUMNS = ("destination", "gateway", "flags", "metric", "mtu", "use", "interface",
                 "family")
ARP_COLUMNS = ("address", "mac", "interface", "state", "expires", "flags")


def render_table(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    """Whitespace-separated columns under a header row; empty values print as ``-``."""
    table = [list(columns)] + [[str(r.get(c, "")) or "-" for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "".join(" ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in table)


class RouteFiles(ControlFiles):
    def render(self) -> str:
        return render_table(ROUTE_COLUMNS, backend.list_routes(self.stack))

    def command(self, text: str, caller: Caller) -> str:
        words = text.split()
        if not words:
            raise einval("empty command; expected add, delete, change, get or flush")
        fam = AF_INET6 if "-inet6" in words else AF_INET if "-inet" in words else None
        verb = words[0]
        args = [w for w in words[1:] if w not in ("-net", "-host", "-inet", "-inet6")]
        if verb == "get":
            if len(args) != 1:
                raise einval("usage: get [-inet|-inet6] ADDRESS")
            return "".join(f"{k} {v}\n" for k, v in self._get(args[0], fam).items())
        require_root(caller, "changing the routing table")
        self.control.hold()
        try:
            if verb == "flush":
                if args:
                    raise einval("usage: flush [-inet|-inet6]")
                n = backend.route_flush(self.stack, fam)
                return f"flushed {n}\n"
            if verb not in ("add", "delete", "change"):
                raise einval(f"unknown route command: {verb} (add, delete, change, get, flush)")
            if not args:
                raise einval(f"usage: {verb} DEST [GATEWAY] [metric N] [mtu N] [if IF]")
            dest_text = args.pop(0)
            gateway = None
            opts: dict[str, str] = {}
            flags: set[str] = set()
            while args:
                w = args.pop(0)
                if w in ("netmask", "prefixlen", "metric", "mtu", "if", "-interface", "-ifp",
                         "gateway"):
                    opts["if" if w in ("-interface", "-ifp") else w] = take(args, w)
                elif w in ("-reject", "reject", "-blackhole", "blackhole"):
                    flags.add(w.lstrip("-"))
                elif gateway is None and "gateway" not in opts:
                    gateway = w
                else:
                    raise einval(f"unexpected word in route {verb}: {w}")
            gateway = opts.get("gateway", gateway)
            ifname = opts.get("if")
            if ifname is not None and ifname not in self.stack.interfaces:
                raise OSError(errno.ENXIO, f"no such interface: {ifname}")
            metric = parse_int(opts["metric"], "metric", 0, 1 << 30) if "metric" in opts else None
            mtu = parse_int(opts["mtu"], "mtu", 68, 65535) if "mtu" in opts else None
            if fam == AF_INET6 or ":" in dest_text or (gateway is not None and ":" in gateway):
                return self._command6(verb, dest_text, gateway, opts, flags, ifname, metric,
                                      mtu)
            if "prefixlen" in opts:
                raise einval("prefixlen is for -inet6 routes (IPv4: /LEN or netmask)")
            dest = parse_dest(dest_text, opts.get("netmask"))
            gw = parse_addr(gateway) if gateway else None
            if verb == "add":
                if gw is None and ifname is None and not flags:
                    raise einval(f"add {dest_text}: give a gateway or -interface IF")
                backend.route_add(self.stack, dest, gw, ifname, metric or 0, mtu or 0,
                                  reject="reject" in flags, blackhole="blackhole" in flags)
            elif verb == "delete":
                backend.route_delete(self.stack, dest, gw, ifname)
            else:
                backend.route_change(self.stack, dest, gw, ifname, metric, mtu)
            via = f" gateway {format_addr(gw)}" if gw is not None else ""
            return f"{verb} net {_show(dest)}{via}\n"
        finally:
            self.control.changed()

    def _get(self, text: str, fam: int | None) -> dict[str, str]:
        if fam == AF_INET6 or ":" in text:
            if text == "default":
                text = "::"
            addr, zone = parse_addr6(text)
            self._need_iface(zone)
            return backend.route_get6(self.stack, addr, zone)
        return backend.route_get(self.stack, parse_addr(text if text != "default"
                                                        else "0.0.0.0"))

    def _need_iface(self, ifname: str | None) -> None:
        if ifname is not None and ifname not in self.stack.interfaces:
            raise OSError(errno.ENXIO, f"no such interface: {ifname}")

    def _command6(self, verb: str, dest_text: str, gateway: str | None,
                  opts: dict[str, str], flags: set[str], ifname: str | None,
                  metric: int | None, mtu: int | None) -> str:
        """``-inet6`` routes: DEST ``default``, ``2001:db8::/48``, ``2001:db8::1``
        (a host) or with ``prefixlen N``; a link-local gateway names its interface
        (``fe80::1%tap0``, or ``if IF``)."""
        if "netmask" in opts:
            raise einval("netmask is for IPv4 routes (-inet6: /LEN or prefixlen N)")
        if dest_text == "default":
            dest = Prefix(ANY6, 0)
        else:
            p, zone = parse_prefix6(dest_text, opts.get("prefixlen"), default_plen=128)
            if zone is not None:
                self._need_iface(zone)
                if ifname is not None and ifname != zone:
                    raise einval(f"scope %{zone} and if {ifname} disagree")
                ifname = zone
            dest = Prefix(p.network, p.plen)
        gw = None
        if gateway:
            gw, zone = parse_addr6(gateway)
            if zone is not None:
                self._need_iface(zone)
                if ifname is not None and ifname != zone:
                    raise einval(f"gateway scope %{zone} and if {ifname} disagree")
                ifname = zone
            elif is_link_local(gw) and ifname is None:
                raise einval(f"gateway {gateway} is link-local: give its interface "
                             f"({gateway}%IF or -interface IF)")
        if verb == "add":
            if gw is None and ifname is None and not flags:
                raise einval(f"add {dest_text}: give a gateway or -interface IF")
            backend.route_add6(self.stack, dest, gw, ifname, metric or 0, mtu or 0,
                               reject="reject" in flags, blackhole="blackhole" in flags)
        elif verb == "delete":
            backend.route_delete6(self.stack, dest, gw, ifname)
        else:
            backend.route_change6(self.stack, dest, gw, ifname, metric, mtu)
        via = f" gateway {format_addr6(gw, ifname)}" if gw is not None else ""
        return f"{verb} net {_show(dest)}{via}\n"


class ArpFiles(ControlFiles):
    def render(self) -> str:
        return render_table(ARP_COLUMNS, backend.list_arp(self.stack))

    def command(self, text: str, caller: Caller) -> str:
        require_root(caller, "changing the ARP table")
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
            if ifname not in self.stack.interfaces:
                raise OSError(errno.ENXIO, f"no such interface: {ifname}")
        self.control.hold()
        try:
            if verb == "set":
                pub = False
                args = [a for a in args if a not in ("permanent", "static")]
                if "pub" in args:
                    args.remove("pub")
                    pub = True
                args = [a for a in args if a != "temp"]
                if len(args) != 2:
                    raise einval("usage: set HOST MAC [if IF] [pub]")
                ip = parse_addr(args[0])
                try:
                    mac = parse_mac(args[1])
                except ValueError:
                    raise einval(f"bad MAC address: {args[1]}") from None
                backend.arp_set(self.stack, ip, mac, ifname, pub)
                return "ok\n"
            if verb == "delete":
                if len(args) != 1:
                    raise einval("usage: delete HOST [if IF]")
                backend.arp_delete(self.stack, parse_addr(args[0]), ifname)
                return "ok\n"
            if verb == "flush":
                if args:
                    raise einval("usage: flush [if IF]")
                return f"flushed {backend.arp_flush(self.stack, ifname)}\n"
            raise einval(f"unknown arp command: {verb} (set, delete, flush)")
        finally:
            self.control.changed()


def _show(dest: Prefix) -> str:
    return "default" if dest.plen == 0 else str(dest)
