"""The IPv6 layer's management API (what the control files and tools call): addresses
(KAME ``ifconfig IF inet6 ADDR prefixlen N [alias|delete]``), routes on the shared table
(``route add -inet6``), the neighbour cache (``ndp``), per-interface ND flags, the
prefix and default-router lists that RAs made, renderings, and ping6. Typed values in:
``Prefix``/``Addr`` (stack/addr.py); errors are ``OSError`` with an errno and a message
a tool prints as is.
"""

from __future__ import annotations

import errno
import math
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr, Prefix, format_addr, is_unspecified, is_v4
from stack.inet.route import Route
from stack.inet6.icmp6 import EchoReply6
from stack.inet6.ifaddr import IfAddr6, is_link_local, is_multicast6
from stack.l2.iface import Interface
from stack.neighbour import format_lladdr

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer


def _need_v6(a: Addr, what: object) -> None:
    if is_v4(a):
        raise OSError(errno.EAFNOSUPPORT, f"{what}: not an IPv6 address")


class IPv6Management:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.stack = ip6.stack

    def _iface(self, ifname: str) -> Interface:
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {ifname}")
        return iface

    # -- addresses ---------------------------------------------------------------------
    def add_address(self, ifname: str, prefix: Prefix, *, dad: bool = True,
                    valid: float | None = None, preferred: float | None = None) -> IfAddr6:
        """``ifconfig IF inet6 ADDR prefixlen N``: tentative until DAD passes (watch
        ``addresses`` or wait with ``wait_usable``). A bare address is a /64 (KAME)."""
        iface = self._iface(ifname)
        a = prefix.addr
        _need_v6(a, format_addr(a))
        if is_unspecified(a) or is_multicast6(a) or a == 1 and ifname != "lo0":
            raise OSError(errno.EINVAL, f"{format_addr(a)}: not a unicast address")
        for ia in self.ip6.iface_addrs(iface):
            if ia.addr == a:
                raise OSError(errno.EEXIST, f"{format_addr(a)} is already on {ifname}")
        return self.ip6.addrconf.add(iface, prefix, dad=dad,
                                     valid=math.inf if valid is None else valid,
                                     preferred=math.inf if preferred is None else preferred)

    def remove_address(self, ifname: str, addr: Addr) -> IfAddr6:
        iface = self._iface(ifname)
        for ia in self.ip6.iface_addrs(iface):
            if ia.addr == addr:
                self.ip6.addrconf.remove(ia)
                return ia
        raise OSError(errno.EADDRNOTAVAIL, f"{format_addr(addr)} is not on {ifname}")

    def addresses(self, ifname: str | None = None) -> list[IfAddr6]:
        ip6 = self.ip6
        if ifname is not None:
            return list(ip6.iface_addrs(self._iface(ifname)))
        return [ia for i in self.stack.interfaces.values() for ia in ip6.iface_addrs(i)]

    async def wait_usable(self, ifname: str, addr: Addr, timeout: float = 5.0) -> IfAddr6:
        """Wait until DAD has passed for ``addr`` (OSError EADDRNOTAVAIL if it failed)."""
        with trio.move_on_after(timeout):
            while True:
                for ia in self.addresses(ifname):
                    if ia.addr == addr:
                        if ia.usable:
                            return ia
                        if ia.state == "duplicated":
                            raise OSError(errno.EADDRNOTAVAIL,
                                          f"{format_addr(addr)}: duplicate address")
                await trio.sleep(0.02)
        raise OSError(errno.ETIMEDOUT, f"{format_addr(addr)} still tentative on {ifname}")

    # -- routes ------------------------------------------------------------------------
    def route_add(self, dest: Prefix, gateway: Addr | None = None, *,
                  ifname: str | None = None, metric: int = 0, mtu: int = 0,
                  reject: bool = False, blackhole: bool = False) -> Route:
        """``route add -inet6 DEST GW`` (a link-local gateway needs ``ifname``: its
        scope), ``-interface IF`` for on-link, ``-reject``/``-blackhole``."""
        _need_v6(dest.addr, dest)
        gw = None if gateway is None or is_unspecified(gateway) else gateway
        if gw is not None:
            _need_v6(gw, format_addr(gw))
        if ifname is None:
            if gw is not None:
                if is_link_local(gw):
                    raise OSError(errno.EINVAL,
                                  f"gateway {format_addr(gw)} is link-local: give its "
                                  "interface (fe80::1%IF)")
                r = self.ip6.routes.lookup(gw)
                if r is None or r.gateway is not None:
                    raise OSError(errno.ENETUNREACH,
                                  f"gateway {format_addr(gw)} is not on a connected network")
                ifname = r.ifname
            elif reject or blackhole:
                ifname = "lo0"
            else:
                raise OSError(errno.EINVAL, "a route needs a gateway or an interface")
        else:
            self._iface(ifname)
        return self.ip6.routes.add(Route(dest, gw, ifname, metric=metric, mtu=mtu,
                                         kind="static", reject=reject, blackhole=blackhole))

    def route_delete(self, dest: Prefix, gateway: Addr | None = None, *,
                     ifname: str | None = None) -> Route:
        _need_v6(dest.addr, dest)
        return self.ip6.routes.delete(dest, gateway, ifname)

    def route_change(self, dest: Prefix, gateway: Addr | None = None, *,
                     ifname: str | None = None, metric: int | None = None,
                     mtu: int | None = None) -> Route:
        """``route change -inet6 DEST [GW]``: modify the first route to ``dest``; a new
        global gateway moves it to the interface that reaches it unless ``ifname`` says."""
        _need_v6(dest.addr, dest)
        if gateway is not None:
            _need_v6(gateway, format_addr(gateway))
            if ifname is None:
                if is_link_local(gateway):
                    raise OSError(errno.EINVAL,
                                  f"gateway {format_addr(gateway)} is link-local: give its "
                                  "interface (fe80::1%IF)")
                r = self.ip6.routes.lookup(gateway)
                if r is None or r.gateway is not None:
                    raise OSError(errno.ENETUNREACH, f"gateway {format_addr(gateway)} "
                                  "is not on a connected network")
                ifname = r.ifname
        elif ifname is not None:
            self._iface(ifname)
        return self.ip6.routes.change(dest, gateway=gateway, ifname=ifname, metric=metric,
                                      mtu=mtu)

    def route_flush(self) -> list[Route]:
        """``route flush -inet6``: every static IPv6 route (RA-made and connected stay)."""
        return self.ip6.routes.remove_where(
            lambda r: r.kind == "static" and r.prefix.family == 24)

    def route_get(self, dst: Addr, ifname: str | None = None) -> dict[str, str]:
        ip6 = self.ip6
        _need_v6(dst, format_addr(dst))
        text = format_addr(dst)
        if dst in ip6.local or dst == 1:
            return {"destination": text, "route": f"{text}/128", "gateway": "link",
                    "interface": "lo0", "source": text, "flags": "UHL",
                    "mtu": str(self.stack.lo0.mtu), "metric": "0"}
        iface = ip6._out_iface(dst, None, ifname)
        if iface is None:
            raise OSError(errno.ESRCH, f"no route to {text}")
        r = None if is_link_local(dst) or is_multicast6(dst) else ip6.routes.lookup(dst)
        s = ip6.source_for(dst, iface.name)
        return {"destination": text,
                "route": r.destination if r is not None else "fe80::/64",
                "gateway": format_addr(r.gateway) if r is not None and r.gateway is not None
                else "link",
                "interface": iface.name, "source": format_addr(s) if s is not None else "-",
                "flags": r.flags if r is not None else "UC",
                "mtu": str(ip6._path_mtu(dst, iface, r)),
                "metric": str(r.metric) if r is not None else "0"}

    def route_list(self) -> list[dict[str, str]]:
        return [r.describe() for r in self.ip6.routes if r.prefix.family == 24]

    # -- ndp ---------------------------------------------------------------------------
    def ndp_list(self) -> list[dict[str, str]]:
        """``ndp -a``: keys address lladdr interface state expires flags (``router``
        for a default router's entry)."""
        routers = {(i, a) for i, a in self.ip6.nd.routers}
        out = self.ip6.nd.table.list()
        for e in out:
            from stack.addr import parse_addr
            if (e["interface"], parse_addr(e["address"])) in routers:
                e["flags"] = (e["flags"] + " R").strip()
        return out

    def ndp_set(self, addr: Addr, mac: bytes, *, ifname: str | None = None,
                proxy: bool = False) -> None:
        """``ndp -s ADDR MAC [proxy]``: a static entry (the interface: the connected
        route's, or the scope of a link-local address)."""
        _need_v6(addr, format_addr(addr))
        if ifname is None:
            r = None if is_link_local(addr) else self.ip6.routes.lookup(addr)
            if r is None or r.gateway is not None:
                raise OSError(errno.ENETUNREACH,
                              f"{format_addr(addr)} is not on a connected network")
            ifname = r.ifname
        self._iface(ifname)
        self.ip6.nd.table.set_static(ifname, addr, mac, published=proxy)

    def ndp_delete(self, addr: Addr, ifname: str | None = None) -> None:
        if not self.ip6.nd.table.delete(addr, ifname):
            raise OSError(errno.ENOENT, f"{format_addr(addr)}: no ND entry")

    def ndp_flush(self, ifname: str | None = None) -> int:
        return self.ip6.nd.table.flush(ifname, keep_static=True)

    def prefix_list(self) -> list[dict[str, str]]:
        """``ndp -p``: the on-link prefixes routers advertised, with expiry."""
        now = trio.current_time()
        out = []
        for (ifname, p), (_, timer) in self.ip6.nd.prefixes.items():
            exp = "infinity" if timer is None else str(max(0, round(timer.deadline - now)))
            out.append({"prefix": str(p), "interface": ifname, "expire": exp,
                        "flags": "LA"})
        return out

    def router_list(self) -> list[dict[str, str]]:
        """``ndp -r``: default routers from RAs."""
        now = trio.current_time()
        return [{"router": format_addr(a), "interface": ifname,
                 "expire": str(max(0, round(t.deadline - now)))}
                for (ifname, a), (_, t) in self.ip6.nd.routers.items()]

    def iface_flags(self, ifname: str) -> dict[str, bool | int]:
        st = self.ip6.iface_state(self._iface(ifname))
        return {"accept_rtadv": st.accept_rtadv, "auto_linklocal": st.auto_linklocal,
                "linkmtu": st.mtu, "curhlim": st.hop_limit or int(self.ip6.k_hlim.value),
                "basereachable": int(self.ip6.nd.params.reachable.value) * 1000,
                "retrans": st.retrans_ms or int(self.ip6.nd.params.rexmit_ms.value)}

    def set_iface_flag(self, ifname: str, flag: str, on: bool) -> None:
        st = self.ip6.iface_state(self._iface(ifname))
        if flag == "accept_rtadv":
            st.accept_rtadv = on
        elif flag == "auto_linklocal":
            st.auto_linklocal = on
        else:
            raise OSError(errno.EINVAL, f"unknown ND flag {flag!r} (accept_rtadv, "
                          "auto_linklocal)")

    # -- text --------------------------------------------------------------------------
    def render_addresses(self) -> str:
        """``IFNAME ADDR/LEN [flags]`` per line."""
        out = []
        for name, iface in self.stack.interfaces.items():
            for ia in self.ip6.iface_addrs(iface):
                scope = f"%{name}" if is_link_local(ia.addr) else ""
                fl = " ".join(ia.flags())
                out.append(f"{name} {format_addr(ia.addr)}{scope}/{ia.plen}"
                           f"{' ' + fl if fl else ''}\n")
        return "".join(out)

    def render_ndp(self) -> str:
        rows = self.ndp_list()
        return "".join(f"{e['address']} {e['lladdr']} {e['interface']} {e['state']} "
                       f"{e['expires']} {e['flags'] or '-'}\n" for e in rows)

    def render_stats(self) -> str:
        ip6 = self.ip6
        out = []
        for group in (ip6.counters, ip6.icmp.counters, ip6.nd.counters, ip6.reass.counters,
                      ip6.mld.counters):
            out += [f"{group.group} {k} {v}\n" for k, v in group.snapshot().items()]
        return "".join(out)

    # -- ping6 -------------------------------------------------------------------------
    async def ping_detail(self, dst: Addr, size: int = 56, hlim: int | None = None,
                          timeout: float = 1.0, *, ifname: str | None = None,
                          tclass: int = 0, seq: int | None = None,
                          ident: int | None = None, src: Addr | None = None,
                          dontfrag: bool = False) -> EchoReply6:
        _need_v6(dst, format_addr(dst))
        if ifname is not None:
            self._iface(ifname)
        return await self.ip6.icmp.ping_detail(dst, size, hlim, timeout, ifname=ifname,
                                               tclass=tclass, seq=seq, ident=ident, src=src,
                                               dontfrag=dontfrag)

    async def ping(self, dst: Addr, size: int = 56, hlim: int | None = None,
                   timeout: float = 1.0, ifname: str | None = None) -> float:
        return (await self.ping_detail(dst, size, hlim, timeout, ifname=ifname)).rtt


__all__ = ["IPv6Management", "format_lladdr"]
