"""The IPv4 layer's management API: interface addresses, routes, ARP table operations,
text renderings and ping — what the control plane (stack/control/backend.py) calls. The
data path (stack/inet/ipv4.py: input, output, forwarding, fragmentation) never calls
here; this side changes the state it reads (``IPv4Layer.local``, ``bcast``, ``routes``,
each interface's ``IfInet``) and the data path's caches follow through the route
table's listeners.

Typed: addresses are stack/addr.py ``Addr`` values and ``Prefix`` es. Text is parsed at
the file boundary (stack/control); ``as_prefix`` / ``as_addr`` below are the IPv4
text forms the layer's convenience methods accept from tests and scripts
(``stack.inet.add_address("tap0", "10.0.0.2/24")``).
"""

from __future__ import annotations

import errno
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from stack.addr import (
    ANY4,
    Addr,
    Prefix,
    format_addr,
    is_unspecified,
    is_v4,
    to_ip,
    v4,
    v4_bits,
)
from stack.inet.ifaddr import IfAddr, IfInet
from stack.inet.route import Route
from stack.inet.wire.ipv4 import ip_to_int, mask_to_prefix
from stack.l2.iface import IFF_LOOPBACK, Interface

if TYPE_CHECKING:
    # cycle: the layer owns its management API and the API holds the layer; types only
    from stack.inet.icmp import EchoReply
    from stack.inet.ipv4 import IPv4Layer


# -- IPv4 text forms (tests, scripts; the control files parse their own) ---------------
def parse_prefix(text: str, *, default_plen: int | None = None) -> Prefix:
    """``default`` | ``A.B.C.D/LEN`` | ``A.B.C.D/M.A.S.K`` | ``A.B.C.D`` (a host, or
    ``default_plen``)."""
    text = text.strip()
    if text in ("default", "0/0"):
        return Prefix(ANY4, 0)
    addr, sep, plen_s = text.partition("/")
    a = ip_to_int(addr)
    if sep:
        if "." in plen_s:
            plen = mask_to_prefix(ip_to_int(plen_s))
        else:
            if not plen_s.isdigit() or int(plen_s) > 32:
                raise ValueError(f"bad prefix length in {text!r}")
            plen = int(plen_s)
    elif default_plen is not None:
        plen = default_plen
    else:
        plen = 32
    return Prefix(v4(a), plen)


def classful_plen(a: Addr) -> int:
    """The classful prefix length of an IPv4 address (BSD ifconfig without a mask)."""
    top = v4_bits(a) >> 24
    return 8 if top < 128 else 16 if top < 192 else 24


def as_prefix(p: Prefix | Addr | str) -> Prefix | Addr:
    """A ``Prefix``; text without ``/LEN`` stays an address (its length is the
    layer's default: classful for an interface address)."""
    if isinstance(p, str):
        return parse_prefix(p) if "/" in p or p.strip() in ("default", "0/0") \
            else v4(ip_to_int(p))
    return p


def as_dest(p: Prefix | str) -> Prefix:
    """A route destination: text without ``/LEN`` is a host."""
    return parse_prefix(p) if isinstance(p, str) else p


def as_addr(a: Addr | IPv4Address | str) -> Addr:
    if isinstance(a, str):
        return v4(ip_to_int(a))
    if isinstance(a, IPv4Address):
        return v4(int(a))
    return a


def _need_v4(a: Addr, what: object) -> None:
    if not is_v4(a):
        raise OSError(errno.EAFNOSUPPORT, f"{what}: not an IPv4 address")


class IPv4Management:
    """The management half of ``IPv4Layer`` (``stack.inet.manage``); the layer keeps
    delegating methods of the same names (``stack.inet.add_address``...)."""

    def __init__(self, inet: IPv4Layer) -> None:
        self.inet = inet
        self.stack = inet.stack

    def _iface(self, ifname: str) -> Interface:
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {ifname}")
        iface.proto.setdefault("inet", IfInet())
        return iface

    # -- interface events (attach / detach / change) ------------------------------------
    def iface_event(self, event: str, iface: Interface) -> None:
        inet = self.inet
        if event == "attach":
            iface.proto.setdefault("inet", IfInet())
        elif event == "detach":
            for ia in list(inet.iface_addrs(iface)):
                self._remove_ifaddr(iface, ia)
            inet.routes.remove_where(lambda r: r.ifname == iface.name)
            inet.arp.flush(iface.name, keep_static=False)
        elif event == "change":
            if not iface.up:
                inet.arp.flush(iface.name)
            inet.routes.changed()

    # -- addresses ---------------------------------------------------------------------
    def add_address(self, ifname: str, addr: Prefix | Addr, *,
                    broadcast: Addr | None = None) -> IfAddr:
        """``add_address("tap0", Prefix(v4(...), 24))``; a bare address gets its classful
        length (BSD ifconfig). Adds the connected route and sends a gratuitous ARP."""
        inet = self.inet
        iface = self._iface(ifname)
        given = str(addr) if isinstance(addr, Prefix) else format_addr(addr)
        a_addr = addr.addr if isinstance(addr, Prefix) else addr
        _need_v4(a_addr, given)
        prefix = addr if isinstance(addr, Prefix) else Prefix(addr, classful_plen(addr))
        a = v4_bits(prefix.addr)
        if a == 0 or a >> 28 >= 14:
            raise OSError(errno.EINVAL, f"{given}: not a unicast address")
        if broadcast is not None and not is_v4(broadcast):
            raise OSError(errno.EINVAL, f"bad broadcast address: {format_addr(broadcast)}")
        if inet.iface_has(iface, a):
            raise OSError(errno.EEXIST, f"{format_addr(prefix.addr)} is already on {ifname}")
        ia = IfAddr(prefix, ifname)
        if prefix.plen <= 30 and not iface.flags & IFF_LOOPBACK:
            ia.broadcast = broadcast if broadcast is not None else prefix.broadcast()
        iface.proto["inet"].addrs.append(ia)
        inet.local.setdefault(a, ia)
        if ia.broadcast is not None:
            inet.bcast.setdefault(v4_bits(ia.broadcast), ia)
        net = ia.network
        if prefix.plen < 32 and not any(r.ifname == ifname and r.kind == "connected"
                                        for r in inet.routes.exact(net)):
            inet.routes.add(Route(net, None, ifname, src=prefix.addr, kind="connected"))
        else:
            inet.routes.changed()
        inet.counters["addr_added"] += 1
        if iface.up and not iface.flags & IFF_LOOPBACK:
            inet.arp.announce(iface, a)
        self._pfil_addr_change(iface, "add", ia)
        return ia

    def remove_address(self, ifname: str, addr: Addr) -> IfAddr:
        iface = self._iface(ifname)
        for ia in self.inet.iface_addrs(iface):
            if ia.addr == addr:
                self._remove_ifaddr(iface, ia)
                self._pfil_addr_change(iface, "delete", ia)
                return ia
        raise OSError(errno.EADDRNOTAVAIL, f"{format_addr(addr)} is not on {ifname}")

    def _remove_ifaddr(self, iface: Interface, ia: IfAddr) -> None:
        inet = self.inet
        st: IfInet = iface.proto["inet"]
        st.addrs.remove(ia)
        a = ia.addr4
        if inet.local.get(a) is ia:
            del inet.local[a]
            for other in self.stack.interfaces.values():  # another iface may hold it too
                for o in inet.iface_addrs(other):
                    if o.addr == ia.addr:
                        inet.local[a] = o
        if ia.broadcast is not None:
            b = v4_bits(ia.broadcast)
            if inet.bcast.get(b) is ia:
                del inet.bcast[b]
                for other in self.stack.interfaces.values():
                    for o in inet.iface_addrs(other):
                        if o.broadcast == ia.broadcast:
                            inet.bcast[b] = o
        net = ia.network
        same = [o for o in st.addrs if o.network == net]
        if not same:
            inet.routes.remove_where(lambda r: r.kind == "connected" and r.ifname == iface.name
                                     and r.prefix == net)
        else:
            for r in inet.routes.exact(net):
                if r.kind == "connected" and r.src == ia.addr:
                    r.src = same[0].addr
            inet.routes.changed()
        inet.counters["addr_removed"] += 1

    def _pfil_addr_change(self, iface: Interface, event: str, ia: IfAddr) -> None:
        inet = self.inet
        inet._invalidate_fastpath()
        pf = inet.pf
        if pf is not None:
            pf.run_event("ifaddr", event, iface, to_ip(ia.addr), ia.plen)

    def addresses(self, ifname: str | None = None) -> list[IfAddr]:
        inet = self.inet
        if ifname is not None:
            return list(inet.iface_addrs(self._iface(ifname)))
        return [ia for i in self.stack.interfaces.values() for ia in inet.iface_addrs(i)]

    # -- routes ------------------------------------------------------------------------
    def _gateway_iface(self, gw: Addr) -> str:
        r = self.inet.routes.lookup(gw)
        if r is None or r.gateway is not None:
            raise OSError(errno.ENETUNREACH,
                          f"gateway {format_addr(gw)} is not on a connected network")
        return r.ifname

    def route_add(self, dest: Prefix, gateway: Addr | None = None, *,
                  ifname: str | None = None, metric: int = 0, mtu: int = 0,
                  reject: bool = False, blackhole: bool = False) -> Route:
        """A static route: through ``gateway`` (its interface is the one whose connected
        network holds it), or on-link on ``ifname``; reject/blackhole routes need
        neither (they go on lo0)."""
        _need_v4(dest.addr, dest)
        gw = None if gateway is None or is_unspecified(gateway) else gateway
        if gw is not None:
            _need_v4(gw, format_addr(gw))
        if ifname is None:
            if gw is not None:
                ifname = self._gateway_iface(gw)
            elif reject or blackhole:
                ifname = "lo0"
            else:
                raise OSError(errno.EINVAL, "a route needs a gateway or an interface")
        else:
            self._iface(ifname)
        r = Route(dest, gw, ifname, metric=metric, mtu=mtu, kind="static", reject=reject,
                  blackhole=blackhole)
        return self.inet.routes.add(r)

    def route_delete(self, dest: Prefix, gateway: Addr | None = None, *,
                     ifname: str | None = None) -> Route:
        """The first route to ``dest`` through ``gateway`` (any when None; the
        unspecified address: an on-link route) on ``ifname`` (any when None)."""
        table = self.inet.routes
        if gateway is not None and is_unspecified(gateway):
            for r in table.exact(dest):
                if r.gateway is None and (ifname is None or r.ifname == ifname):
                    table.remove(r)
                    return r
            raise OSError(errno.ESRCH, f"no route to {dest}")
        return table.delete(dest, gateway, ifname)

    def route_change(self, dest: Prefix, gateway: Addr | None = None, *,
                     ifname: str | None = None, metric: int | None = None,
                     mtu: int | None = None) -> Route:
        """Modify the first route to ``dest``; a new gateway moves it to the interface
        that reaches the gateway unless ``ifname`` says otherwise."""
        table = self.inet.routes
        onlink = gateway is not None and is_unspecified(gateway)
        if gateway is not None and ifname is None:
            ifname = self._gateway_iface(gateway)
        r = table.change(dest, gateway=None if onlink else gateway, ifname=ifname,
                         metric=metric, mtu=mtu)
        if onlink and r.gateway is not None:
            r.gateway = None
            table.changed()
        return r

    def route_flush(self, family: int | None = None) -> list[Route]:
        """BSD ``route flush``: every static route goes (of ``family`` only, when given:
        ``route flush -inet``); connected and local routes stay."""
        return self.inet.routes.remove_where(
            lambda r: r.kind == "static" and (family is None or r.prefix.family == family))

    def route_get(self, dst: Addr) -> dict[str, str]:
        """What ``route get`` prints: the route chosen for ``dst`` and the source used.
        Keys: destination route gateway interface source flags mtu metric."""
        inet = self.inet
        _need_v4(dst, format_addr(dst))
        d = v4_bits(dst)
        text = format_addr(dst)
        if d in inet.local or d >> 24 == 127:
            src = dst if d in inet.local else v4(0x7F000001)
            return {"destination": text, "route": f"{text}/32", "gateway": "link",
                    "interface": "lo0", "source": format_addr(src), "flags": "UHL",
                    "mtu": str(self.stack.lo0.mtu), "metric": "0"}
        r = inet.routes.lookup(dst)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {text}")
        s = inet.source_for(dst)
        return {"destination": text, "route": r.destination,
                "gateway": format_addr(r.gateway) if r.gateway is not None else "link",
                "interface": r.ifname, "source": _addr_text(s), "flags": r.flags,
                "mtu": str(inet._path_mtu(d, r)), "metric": str(r.metric)}

    def route_list(self) -> list[dict[str, str]]:
        return [r.describe() for r in self.inet.routes]

    # -- ARP -------------------------------------------------------------------------
    def arp_list(self) -> list[dict[str, str]]:
        return self.inet.arp.list()

    def arp_delete(self, addr: Addr, ifname: str | None = None) -> None:
        _need_v4(addr, format_addr(addr))
        if not self.inet.arp.delete(v4_bits(addr), ifname):
            raise OSError(errno.ENOENT, f"{format_addr(addr)}: no ARP entry")

    def arp_set(self, addr: Addr, mac: bytes, *, ifname: str | None = None,
                published: bool = False) -> None:
        """A static (permanent) entry; the interface defaults to the connected route's."""
        _need_v4(addr, format_addr(addr))
        if ifname is None:
            r = self.inet.routes.lookup(addr)
            if r is None or r.gateway is not None:
                raise OSError(errno.ENETUNREACH,
                              f"{format_addr(addr)} is not on a connected network")
            ifname = r.ifname
        self._iface(ifname)
        self.inet.arp.set_static(ifname, v4_bits(addr), mac, published=published)

    def arp_flush(self, ifname: str | None = None) -> int:
        """Every entry (static ones too) of ``ifname``, or of every interface."""
        return self.inet.arp.flush(ifname, keep_static=False)

    # -- text --------------------------------------------------------------------------
    def render_routes(self) -> str:
        return self.inet.routes.render()

    def render_arp(self) -> str:
        return self.inet.arp.render()

    def render_addresses(self) -> str:
        """``IFNAME ADDR/LEN broadcast BCAST`` per line (see docs/inet.md)."""
        out = []
        for name, iface in self.stack.interfaces.items():
            for ia in self.inet.iface_addrs(iface):
                b = format_addr(ia.broadcast) if ia.broadcast is not None else "-"
                out.append(f"{name} {ia} broadcast {b}\n")
        return "".join(out)

    def render_stats(self) -> str:
        """``group counter value`` per line: ip, icmp, arp, reass, route, igmp."""
        inet = self.inet
        out = []
        for group in (inet.counters, inet.icmp.counters, inet.arp.counters,
                      inet.reass.counters, inet.routes.counters, inet.igmp.counters):
            out += [f"{group.group} {k} {v}\n" for k, v in group.snapshot().items()]
        return "".join(out)

    # -- ping --------------------------------------------------------------------------
    async def ping_detail(self, dst: Addr, size: int = 56, ttl: int | None = None,
                          timeout: float = 1.0, *, tos: int = 0, df: bool = False,
                          seq: int | None = None, ident: int | None = None) -> EchoReply:
        """One echo request and its reply (stack/inet/icmp.py ``ping_detail``: raises
        ``OSError``, ``IcmpError`` or ``TimeoutError``)."""
        _need_v4(dst, format_addr(dst))
        return await self.inet.icmp.ping_detail(IPv4Address(v4_bits(dst)), size, ttl, timeout,
                                                tos=tos, df=df, seq=seq, ident=ident)

    async def ping(self, dst: Addr, size: int = 56, ttl: int | None = None,
                   timeout: float = 1.0) -> float:
        """One echo round trip; the RTT in seconds."""
        return (await self.ping_detail(dst, size, ttl, timeout)).rtt


def _addr_text(a: object) -> str:
    """A source address as ``route get`` prints it (``-``: none)."""
    if a is None:
        return "-"
    # source_for answers an Addr (stack/network.py); an IPv4Address until the transports'
    # move to stack.addr changes its entry
    return format_addr(a) if isinstance(a, int) else str(a)

