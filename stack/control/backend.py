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

from stack.addr import Addr, Prefix, format_addr, is_unspecified, v4
from stack.inet.icmp import IcmpError
from stack.l2.bridge import BridgeInterface
from stack.l2.bridge import create_bridge as l2_create_bridge
from stack.l2.iface import Interface
from stack.l2.vlan import VlanInterface
from stack.l2.vlan import create_vlan as l2_create_vlan
from stack.options import Options
from stack.services import IPV4, TRANSPORTS

if TYPE_CHECKING:
    # cycle: the Stack owns the control part and the part holds the Stack; types only
    from collections.abc import Callable

    from stack.core import Stack
    from stack.inet.ifaddr import IfAddr
    from stack.inet.manage import IPv4Management


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
    layer = stack.services.get(IPV4)
    return layer.manage.route_list() if layer is not None else []


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


def route_flush(stack: Stack) -> int:
    """BSD ``route flush``: every static route goes; connected and local routes stay."""
    if stack.services.get(IPV4) is None:
        raise _missing("the routing table")
    return len(inet(stack).route_flush())


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
        # issue 15 §1) is shown as the same address
        host = format_addr(addr if addr >> 32 else v4(addr))
    return f"{host}:{port if port else '*'}"


def list_sockets(stack: Stack) -> list[dict[str, str]]:
    """Every TCP connection/listener, UDP and raw socket of the transports."""
    rows: list[dict[str, str]] = []
    t = stack.services.get(TRANSPORTS)
    if t is None:
        return rows
    for c in t.tcp.connections():
        rows.append({"proto": "tcp", "recvq": str(len(c.rcvbuf)), "sendq": str(len(c.sndbuf)),
                     "local": _endpoint(c.laddr, c.lport),
                     "foreign": _endpoint(c.raddr, c.rport), "state": c.state.name})
    for socks in list(t.udp.ports.values()):
        for u in socks:
            rows.append({"proto": "udp", "recvq": str(sum(len(d[0]) for d in u.queue)),
                         "sendq": "0", "local": _endpoint(u.laddr, u.lport),
                         "foreign": _endpoint(u.raddr, u.rport), "state": ""})
    for r in list(t.raw.sockets):
        rows.append({"proto": f"raw{r.proto_number}", "recvq": str(r.queued),
                     "sendq": "0", "local": _endpoint(r.laddr, 0),
                     "foreign": _endpoint(r.raddr, 0), "state": ""})
    return rows


def render_sockets(stack: Stack) -> str:
    """proto recvq sendq local foreign state, one socket per line (``-``: empty)."""
    from stack.control.routes import render_table

    cols = ("proto", "recvq", "sendq", "local", "foreign", "state")
    return render_table(cols, list_sockets(stack))
