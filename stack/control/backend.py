"""The one place where the control files reach into the stack's layers.

Every function does its job through a layer's typed API, found through the stack's
registries (``stack.services.get(IPV4)``, ``TRANSPORTS``) or its own parts (layer 2's
bridge and VLAN interfaces), or raises ``OSError(errno, message)`` saying what is
missing. Addresses cross this boundary as stack/addr.py values (``Addr``, ``Prefix``):
the control files parse and format text (stack/control/util.py), the layers never see
it. Keep layer-specific knowledge here.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.addr import (
    AF_INET,
    AF_INET6,
    Addr,
    Prefix,
    family,
    format_addr,
    from_ip,
    is_unspecified,
    parse_addr,
    v4,
)
from stack.control.util import format_addr6
from stack.inet.icmp import IcmpError
from stack.l2.bridge import BridgeInterface
from stack.l2.bridge import create_bridge as l2_create_bridge
from stack.l2.iface import Interface
from stack.l2.vlan import VlanInterface
from stack.l2.vlan import create_vlan as l2_create_vlan
from stack.options import Options
from stack.services import IPV4, IPV6, TRANSPORTS

if TYPE_CHECKING:
    # cycle: the Stack owns the control part and the part holds the Stack; types only
    from collections.abc import Callable

    from stack.core import Stack
    from stack.inet.ifaddr import IfAddr
    from stack.inet.manage import IPv4Management
    from stack.inet6.ifaddr import IfAddr6
    from stack.inet6.manage import IPv6Management
    from stack.inet6.rtadv import AdvertConfig


def _missing(what: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, f"{what} is not available in this stack")


def inet(stack: Stack) -> IPv4Management:
    """The IPv4 layer's management API (stack/inet/manage.py)."""
    layer = stack.services.get(IPV4)
    if layer is None:
        raise _missing("the IPv4 layer")
    return layer.manage


# -- addresses -----------------------------------------------------------------------
def addresses(stack: Stack, iface: Interface) -> list[IfAddr]:
    """The addresses of ``iface`` (``.prefix``: the address and its length,
    ``.broadcast``: an Addr or None)."""
    layer = stack.services.get(IPV4)
    return layer.manage.addresses(iface.name) if layer is not None else []


def add_address(stack: Stack, iface: Interface, addr: Prefix | Addr,
                broadcast: Addr | None) -> None:
    """A bare address gets its family's default length (IPv4: classful, as BSD)."""
    inet(stack).add_address(iface.name, addr, broadcast=broadcast)


def delete_address(stack: Stack, iface: Interface, addr: Addr) -> None:
    mgr = inet(stack)
    if not any(a.addr == addr for a in mgr.addresses(iface.name)):
        raise OSError(errno.EADDRNOTAVAIL,
                      f"{format_addr(addr)} is not an address of {iface.name}")
    mgr.remove_address(iface.name, addr)


# -- routes --------------------------------------------------------------------------
def watch_routes(stack: Stack, fn: Callable[[], None]) -> bool:
    """Call ``fn`` after every change of the routing table (False: no IP layer yet)."""
    layer = stack.services.get(IPV4)
    if layer is None:
        return False
    layer.routes.listeners.append(fn)
    return True


def list_routes(stack: Stack) -> list[dict[str, str]]:
    """Both families' routes (one table), with a ``family`` key (``inet``/``inet6``); a
    link-local IPv6 gateway is written with its zone (``fe80::1%tap0``)."""
    layer = stack.services.get(IPV4)
    if layer is None:
        return []
    out = []
    for r in list(layer.routes):
        d = r.describe()
        fam = r.prefix.family
        d["family"] = "inet6" if fam == AF_INET6 else "inet"
        if fam == AF_INET6 and r.gateway is not None:
            d["gateway"] = format_addr6(r.gateway, r.ifname)
        out.append(d)
    return out


def route_add(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None,
              metric: int, mtu: int, *, reject: bool = False, blackhole: bool = False) -> None:
    inet(stack).route_add(dest, gw, ifname=ifname, metric=metric, mtu=mtu, reject=reject,
                          blackhole=blackhole)


def route_delete(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None) -> None:
    inet(stack).route_delete(dest, gw, ifname=ifname)


def route_change(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None,
                 metric: int | None, mtu: int | None) -> None:
    inet(stack).route_change(dest, gw, ifname=ifname, metric=metric, mtu=mtu)


def route_get(stack: Stack, addr: Addr) -> dict[str, str]:
    """Keys: destination route gateway interface source flags mtu metric."""
    return inet(stack).route_get(addr)


def route_flush(stack: Stack, fam: int | None = None) -> int:
    """BSD ``route flush``: every static route goes (of one family when ``fam`` says
    which); connected and local routes, and those router advertisements made, stay."""
    layer = stack.services.get(IPV4)
    if layer is None:
        raise _missing("the routing table")
    if fam == AF_INET6:
        return len(inet6(stack).route_flush())
    if fam == AF_INET:
        return len(layer.manage.route_flush(AF_INET))
    return len(layer.manage.route_flush())


# -- ARP -----------------------------------------------------------------------------
def list_arp(stack: Stack) -> list[dict[str, str]]:
    layer = stack.services.get(IPV4)
    return layer.manage.arp_list() if layer is not None else []


def arp_set(stack: Stack, ip: Addr, mac: bytes, ifname: str | None, pub: bool) -> None:
    inet(stack).arp_set(ip, mac, ifname=ifname, published=pub)


def arp_delete(stack: Stack, ip: Addr, ifname: str | None) -> None:
    inet(stack).arp_delete(ip, ifname)


def arp_flush(stack: Stack, ifname: str | None) -> int:
    return inet(stack).arp_flush(ifname)


# -- ping ----------------------------------------------------------------------------
async def ping(stack: Stack, dst: Addr, *, size: int, ttl: int | None, tos: int, df: bool,
               timeout: float, seq: int, ident: int) -> str:
    mgr = inet(stack)
    try:
        r = await mgr.ping_detail(dst, size, ttl, timeout, tos=tos, df=df, seq=seq,
                                  ident=ident)
    except TimeoutError:
        return f"timeout seq {seq}"
    except IcmpError as exc:
        return (f"icmp seq {seq} from {exc.source} type {exc.icmp_type} code {exc.code} "
                f"{exc.text}")
    return (f"reply seq {r.seq} from {r.source} bytes {r.size + 8} ttl {r.ttl} "
            f"time_us {round(r.rtt * 1e6)}")


# -- interfaces: create / destroy, VLANs, bridges ------------------------------------
def create_bridge(stack: Stack, name: str) -> Interface:
    return l2_create_bridge(stack, name)


def create_vlan(stack: Stack, name: str) -> Interface:
    return l2_create_vlan(stack, name)


def vlan_info(stack: Stack, iface: Interface) -> tuple[int, str] | None:
    """(tag, parent name) of a configured vlan interface."""
    if not isinstance(iface, VlanInterface) or not iface.tag:
        return None
    return iface.tag, iface.parent.name if iface.parent is not None else ""


def vlan_config(stack: Stack, iface: Interface, tag: int | None, parent: Interface | None) -> None:
    if not isinstance(iface, VlanInterface):
        raise OSError(errno.EINVAL, f"{iface.name} is not a vlan interface")
    if tag is None or parent is None:
        iface.unconfigure()
    else:
        iface.configure(parent, tag)


async def create_driver_interface(stack: Stack, base: str, name: str, opts: str) -> None:
    from stack.loader import LoadError

    try:
        o = Options.parse(opts)
    except ValueError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    o["name"] = name
    try:
        inst = await stack.modules.load(base, "driver", o)
    except LoadError as exc:
        raise OSError(errno.ENXIO if "not found" in str(exc) else errno.EINVAL,
                      f"create {name}: {exc}") from None
    if name not in stack.interfaces:
        stack.modules.unload(inst)
        raise OSError(errno.EINVAL, f"create {name}: driver devnp-{base} made "
                                    f"{' '.join(i.name for i in inst.interfaces) or 'nothing'}")


def destroy_interface(stack: Stack, name: str) -> None:
    """A bridge's members leave as it detaches; a driver's module unloads with its last
    interface (stack.detach_interface)."""
    stack.detach_interface(name)


def bridge_of(stack: Stack, iface: Interface) -> str:
    return iface.bridge.name if iface.bridge is not None else ""


def get_bridge(stack: Stack, name: str) -> BridgeInterface:
    iface = stack.interfaces.get(name)
    if iface is None:
        raise OSError(errno.ENXIO, f"no such interface: {name}")
    if not isinstance(iface, BridgeInterface):
        raise OSError(errno.EINVAL, f"{name} is not a bridge")
    return iface


#: member flags shown for every member: layer 2's bridge always learns and floods
#: (per-member learn/discover switches are not implemented, see bridge_member_flag)
MEMBER_FLAGS = "LEARNING,DISCOVER"


def bridges(stack: Stack) -> list[BridgeInterface]:
    return [br for br in stack.interfaces.values() if isinstance(br, BridgeInterface)]


def bridge_add(stack: Stack, br: BridgeInterface, iface: Interface) -> None:
    if iface is br:
        raise OSError(errno.EINVAL, f"{br.name} cannot be a member of itself")
    br.add_member(iface)


def bridge_delete(stack: Stack, br: BridgeInterface, iface: Interface) -> None:
    br.delete_member(iface)


def bridge_set(br: BridgeInterface, key: str, value: int) -> None:
    if key == "timeout":
        br.set_timeout(value)
    elif key == "maxaddr":
        br.set_maxaddr(value)
    else:
        raise _missing(f"bridge {key}")


def bridge_static(br: BridgeInterface, iface: Interface, mac: bytes) -> None:
    br.add_static(mac, iface)


def bridge_deladdr(br: BridgeInterface, mac: bytes) -> None:
    br.deladdr(mac)


def bridge_flush(br: BridgeInterface, *, all_entries: bool) -> None:
    if all_entries:
        br.flushall()
    else:
        br.flush()


def bridge_member_flag(br: BridgeInterface, iface: Interface, flag: str, on: bool) -> None:
    raise _missing("bridge operation set_member_flag")


# -- sockets -------------------------------------------------------------------------
def _endpoint(addr: int, port: int) -> str:
    if not addr or is_unspecified(addr):
        host = "*"
    else:
        # a transport still holding a 32-bit IPv4 value (being moved onto stack.addr,
        # issue 15 §1) is shown as the same address; ::1 is IPv6's loopback
        host = format_addr(addr if addr >> 32 or addr == 1 else v4(addr))
    return f"{host}:{port if port else '*'}"


def _proto(name: str, fam: int) -> str:
    """BSD netstat's names: ``tcp``/``tcp6``, ``udp``/``udp6``, ``raw1``/``raw6_58``."""
    if fam != AF_INET6:
        return name
    return f"raw6_{name[3:]}" if name.startswith("raw") else f"{name}6"


def _family(*addrs: int) -> int:
    """A socket's family from its addresses: ANY4 is v4-mapped, ANY6 is 0 (a bare
    32-bit value is an IPv4 address not yet moved onto stack.addr)."""
    for a in addrs:
        if a >> 32 or a == 1:
            return family(a)
        if a:
            return AF_INET
    return AF_INET6


def list_sockets(stack: Stack) -> list[dict[str, str]]:
    """Every TCP connection/listener, UDP and raw socket of the transports."""
    rows: list[dict[str, str]] = []
    t = stack.services.get(TRANSPORTS)
    if t is None:
        return rows
    for c in t.tcp.connections():
        rows.append({"proto": _proto("tcp", _family(c.laddr, c.raddr)), "recvq": str(len(c.rcvbuf)), "sendq": str(len(c.sndbuf)),
                     "local": _endpoint(c.laddr, c.lport),
                     "foreign": _endpoint(c.raddr, c.rport), "state": c.state.name})
    for socks in list(t.udp.ports.values()):
        for u in socks:
            rows.append({"proto": _proto("udp", _family(u.laddr, u.raddr)), "recvq": str(sum(len(d[0]) for d in u.queue)),
                         "sendq": "0", "local": _endpoint(u.laddr, u.lport),
                         "foreign": _endpoint(u.raddr, u.rport), "state": ""})
    for r in list(t.raw.sockets):
        rows.append({"proto": _proto(f"raw{r.proto_number}", _family(r.laddr, r.raddr)),
                     "recvq": str(r.queued),
                     "sendq": "0", "local": _endpoint(r.laddr, 0),
                     "foreign": _endpoint(r.raddr, 0), "state": ""})
    return rows


def render_sockets(stack: Stack) -> str:
    """proto recvq sendq local foreign state, one socket per line (``-``: empty)."""
    from stack.control.routes import render_table

    cols = ("proto", "recvq", "sendq", "local", "foreign", "state")
    return render_table(cols, list_sockets(stack))


# -- IPv6 (stack/inet6/manage.py) ----------------------------------------------------
def inet6(stack: Stack) -> IPv6Management:
    """The IPv6 layer's management API; EAFNOSUPPORT when the stack has none."""
    layer = stack.services.get(IPV6)
    if layer is None:
        raise OSError(errno.EAFNOSUPPORT, "IPv6 is not available in this stack")
    return layer.manage


def addresses6(stack: Stack, iface: Interface) -> list[IfAddr6]:
    layer = stack.services.get(IPV6)
    return layer.manage.addresses(iface.name) if layer is not None else []


def add_address6(stack: Stack, iface: Interface, prefix: Prefix, *,
                 valid: float | None = None, preferred: float | None = None) -> None:
    inet6(stack).add_address(iface.name, prefix, valid=valid, preferred=preferred)


def delete_address6(stack: Stack, iface: Interface, addr: Addr) -> None:
    mgr = inet6(stack)
    if not any(a.addr == addr for a in mgr.addresses(iface.name)):
        raise OSError(errno.EADDRNOTAVAIL,
                      f"{format_addr(addr)} is not an address of {iface.name}")
    mgr.remove_address(iface.name, addr)


def nd_flags(stack: Stack, iface: Interface) -> dict[str, bool | int] | None:
    """Per-interface ND state (``ndp -i``), None without an IPv6 layer."""
    layer = stack.services.get(IPV6)
    return layer.manage.iface_flags(iface.name) if layer is not None else None


def set_nd_flag(stack: Stack, iface: Interface, flag: str, on: bool) -> None:
    inet6(stack).set_iface_flag(iface.name, flag, on)


def route_add6(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None,
               metric: int, mtu: int, *, reject: bool = False,
               blackhole: bool = False) -> None:
    inet6(stack).route_add(dest, gw, ifname=ifname, metric=metric, mtu=mtu, reject=reject,
                           blackhole=blackhole)


def route_delete6(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None) -> None:
    inet6(stack).route_delete(dest, gw, ifname=ifname)


def route_change6(stack: Stack, dest: Prefix, gw: Addr | None, ifname: str | None,
                  metric: int | None, mtu: int | None) -> None:
    inet6(stack).route_change(dest, gw, ifname=ifname, metric=metric, mtu=mtu)


def route_get6(stack: Stack, addr: Addr, ifname: str | None) -> dict[str, str]:
    info = inet6(stack).route_get(addr, ifname)
    iface = info.get("interface")
    for key in ("destination", "gateway", "source"):
        v = info.get(key, "")
        if v and v not in ("link", "-") and "%" not in v:
            info[key] = format_addr6(parse_addr(v), iface)
    return info


def list_ndp(stack: Stack) -> list[dict[str, str]]:
    """The ND cache: address (link-local with its zone) lladdr interface state expires
    flags (comma-separated: ``router``, ``proxy``)."""
    layer = stack.services.get(IPV6)
    if layer is None:
        return []
    out = []
    for e in layer.manage.ndp_list():
        words = e.get("flags", "").split()
        flags = [{"R": "router", "published": "proxy"}.get(w, w) for w in words]
        e["flags"] = ",".join(flags)
        e["address"] = format_addr6(parse_addr(e["address"]), e["interface"])
        out.append(e)
    return out


def ndp_set(stack: Stack, addr: int, mac: bytes, ifname: str | None, proxy: bool) -> None:
    inet6(stack).ndp_set(Addr(addr), mac, ifname=ifname, proxy=proxy)


def ndp_delete(stack: Stack, addr: int, ifname: str | None) -> None:
    inet6(stack).ndp_delete(Addr(addr), ifname)


def ndp_flush(stack: Stack, ifname: str | None) -> int:
    return inet6(stack).ndp_flush(ifname)


def list_prefixes(stack: Stack) -> list[dict[str, str]]:
    layer = stack.services.get(IPV6)
    return layer.manage.prefix_list() if layer is not None else []


def list_routers(stack: Stack) -> list[dict[str, str]]:
    layer = stack.services.get(IPV6)
    if layer is None:
        return []
    out = layer.manage.router_list()
    for r in out:
        r["router"] = format_addr6(parse_addr(r["router"]), r["interface"])
    return out


async def ping6(stack: Stack, dst: Addr, *, size: int, hlim: int | None, tclass: int,
                df: bool, timeout: float, seq: int, ident: int, ifname: str | None,
                src: Addr | None) -> str:
    """One ICMPv6 echo; the result line in config/ping's vocabulary."""
    from stack.inet6.icmp6 import Icmp6Error

    mgr = inet6(stack)
    try:
        r = await mgr.ping_detail(dst, size, hlim, timeout, ifname=ifname, tclass=tclass,
                                  seq=seq, ident=ident, src=src, dontfrag=df)
    except TimeoutError:
        return f"timeout seq {seq}"
    except Icmp6Error as exc:
        return (f"icmp seq {seq} from {format_addr6(exc.source, ifname)} type "
                f"{exc.icmp_type} code {exc.code} "
                f"{icmp6_text(exc.icmp_type, exc.code, exc.extra)}")
    src_text = format_addr6(from_ip(r.source), ifname)
    return (f"reply seq {r.seq} from {src_text} bytes {r.size + 8} ttl {r.hop_limit} "
            f"time_us {round(r.rtt * 1e6)}")


#: KAME ping6's words for ICMPv6 errors (pr_icmph)
_ICMP6_UNREACH = {0: "No Route to Destination", 1: "Destination Administratively Unreachable",
                  2: "Destination Unreachable Beyond Scope", 3: "Destination Host Unreachable",
                  4: "Destination Port Unreachable",
                  5: "Source address failed ingress/egress policy",
                  6: "Reject route to destination"}


def icmp6_text(icmp_type: int, code: int, extra: int = 0) -> str:
    if icmp_type == 1:
        return _ICMP6_UNREACH.get(code, f"Destination Unreachable, Bad Code: {code}")
    if icmp_type == 2:
        return f"Packet too big mtu = {extra}"
    if icmp_type == 3:
        return "Time to live exceeded" if code == 0 else "Frag reassembly time exceeded"
    if icmp_type == 4:
        what = {0: "Erroneous Header Field", 1: "Unknown Nextheader",
                2: "Unrecognized Option", 3: "Incomplete Header Chain"}.get(code, f"code {code}")
        return f"Parameter problem: {what}"
    return f"Bad ICMP type: {icmp_type}"


def rtadv_configs(stack: Stack) -> dict[str, AdvertConfig]:
    layer = stack.services.get(IPV6)
    return dict(layer.rtadv.configs) if layer is not None else {}


def rtadv_forwarding(stack: Stack) -> bool:
    layer = stack.services.get(IPV6)
    return layer is not None and bool(layer.k_forwarding.value)


def rtadv_enable(stack: Stack, ifname: str, cfg: AdvertConfig) -> None:
    layer = stack.services.get(IPV6)
    if layer is None:
        raise OSError(errno.EAFNOSUPPORT, "IPv6 is not available in this stack")
    if ifname not in stack.interfaces:
        raise OSError(errno.ENXIO, f"no such interface: {ifname}")
    layer.rtadv.enable(ifname, cfg)


def rtadv_disable(stack: Stack, ifname: str) -> None:
    layer = stack.services.get(IPV6)
    if layer is None:
        raise OSError(errno.EAFNOSUPPORT, "IPv6 is not available in this stack")
    if ifname not in layer.rtadv.configs:
        raise OSError(errno.ENOENT, f"not advertising on {ifname}")
    layer.rtadv.disable(ifname)
