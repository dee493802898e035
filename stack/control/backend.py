"""The one place where the control files reach into the stack's layers.

Every function either does the job through the layer's Python API or raises
``OSError(errno, message)`` saying what is missing, so a file works as soon as its layer
exists and fails with a clear message before. Keep layer-specific knowledge here.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stack.l2.iface import Interface, format_mac
from stack.options import Options

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPIf = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _missing(what: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, f"{what} is not available in this stack")


def inet(stack: Stack) -> Any:
    layer = getattr(stack, "inet", None)
    if layer is None:
        raise _missing("the IPv4 layer")
    return layer


def _ip(a: object) -> str:
    if isinstance(a, int):
        return str(ipaddress.IPv4Address(a))
    return str(a)


# -- addresses -----------------------------------------------------------------------
@dataclass
class AddrInfo:
    ifaddr: IPIf
    broadcast: str = ""


def addresses(stack: Stack, iface: Interface) -> list[AddrInfo]:
    layer = getattr(stack, "inet", None)
    if layer is None:
        return []
    fn = getattr(layer, "addresses", None)
    raw: Any = fn(iface.name) if callable(fn) else iface.proto.get("inet", ())
    out: list[AddrInfo] = []
    for a in raw or ():
        addr = getattr(a, "addr", getattr(a, "address", a))
        plen = getattr(a, "plen", getattr(a, "prefixlen", None))
        if isinstance(addr, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
            ifaddr: IPIf = addr
        else:
            ifaddr = ipaddress.ip_interface(f"{_ip(addr)}/{plen if plen is not None else 32}")
        bc = getattr(a, "broadcast", None)
        if bc is None and ifaddr.version == 4 and ifaddr.network.prefixlen < 31:
            bc = ifaddr.network.broadcast_address
        out.append(AddrInfo(ifaddr, _ip(bc) if bc else ""))
    return out


def add_address(stack: Stack, iface: Interface, ifaddr: IPIf, broadcast: str | None) -> None:
    layer = inet(stack)
    if broadcast is not None:
        try:
            ipaddress.IPv4Address(broadcast)
        except ValueError:
            raise OSError(errno.EINVAL, f"bad broadcast address: {broadcast}") from None
    for a in addresses(stack, iface):
        if a.ifaddr.ip == ifaddr.ip:
            raise OSError(errno.EEXIST, f"{ifaddr.ip} is already on {iface.name}")
    layer.add_address(iface.name, f"{ifaddr.ip}/{ifaddr.network.prefixlen}",
                      broadcast=broadcast)


def delete_address(stack: Stack, iface: Interface, addr_text: str) -> None:
    layer = inet(stack)
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise OSError(errno.EINVAL, f"bad address: {addr_text}") from None
    if not any(a.ifaddr.ip == addr for a in addresses(stack, iface)):
        raise OSError(errno.EADDRNOTAVAIL, f"{addr} is not an address of {iface.name}")
    layer.remove_address(iface.name, str(addr))


# -- routes --------------------------------------------------------------------------
def route_table(stack: Stack) -> Any:
    layer = getattr(stack, "inet", None)
    if layer is None:
        return None
    for attr in ("routes", "route_table", "rtable", "table"):
        t = getattr(layer, attr, None)
        if t is not None and hasattr(t, "lookup"):
            return t
    return None


def list_routes(stack: Stack) -> list[dict[str, str]]:
    table = route_table(stack)
    if table is None:
        return []
    return [r.describe() for r in table]


def _dest(dest: IPNet) -> str:
    return "default" if dest.prefixlen == 0 else str(dest)


def route_add(stack: Stack, dest: IPNet, gw: IPAddr | None, ifname: str | None,
              metric: int, mtu: int, *, reject: bool = False, blackhole: bool = False) -> None:
    inet(stack).route_add(_dest(dest), str(gw) if gw is not None else None, ifname=ifname,
                          metric=metric, mtu=mtu, reject=reject, blackhole=blackhole)


def route_delete(stack: Stack, dest: IPNet, gw: IPAddr | None, ifname: str | None) -> None:
    inet(stack).route_delete(_dest(dest), str(gw) if gw is not None else None, ifname=ifname)


def route_change(stack: Stack, dest: IPNet, gw: IPAddr | None, ifname: str | None,
                 metric: int | None, mtu: int | None) -> None:
    inet(stack).route_change(_dest(dest), str(gw) if gw is not None else None, ifname=ifname,
                             metric=metric, mtu=mtu)


def route_get(stack: Stack, addr: IPAddr) -> dict[str, str]:
    """Keys: destination route gateway interface source flags mtu metric."""
    return dict(inet(stack).route_get(str(addr)))


def route_flush(stack: Stack) -> int:
    """BSD ``route flush``: every static route goes; connected and local routes stay."""
    table = route_table(stack)
    if table is None:
        raise _missing("the routing table")
    return len(table.remove_where(lambda r: r.kind == "static"))


# -- ARP -----------------------------------------------------------------------------
def _arp(stack: Stack) -> Any:
    a = getattr(inet(stack), "arp", None)
    if a is None:
        raise _missing("ARP")
    return a


def list_arp(stack: Stack) -> list[dict[str, str]]:
    layer = getattr(stack, "inet", None)
    a = getattr(layer, "arp", None) if layer is not None else None
    return list(a.list()) if a is not None else []


def arp_set(stack: Stack, ip: IPAddr, mac: bytes, ifname: str | None, pub: bool) -> None:
    inet(stack).arp_set(str(ip), format_mac(mac), ifname=ifname, published=pub)


def arp_delete(stack: Stack, ip: IPAddr, ifname: str | None) -> None:
    inet(stack).arp_delete(str(ip), ifname)


def arp_flush(stack: Stack, ifname: str | None) -> int:
    return int(_arp(stack).flush(ifname, keep_static=False))


# -- ping ----------------------------------------------------------------------------
async def ping(stack: Stack, dst: Any, *, size: int, ttl: int | None, tos: int, df: bool,
               timeout: float, seq: int, ident: int) -> str:
    icmp = getattr(inet(stack), "icmp", None)
    if icmp is None or not hasattr(icmp, "ping_detail"):
        raise _missing("ICMP echo")
    try:
        r = await icmp.ping_detail(dst, size, ttl, timeout, tos=tos, df=df, seq=seq,
                                   ident=ident)
    except TimeoutError:
        return f"timeout seq {seq}"
    except OSError as exc:
        itype = getattr(exc, "icmp_type", None)
        if itype is not None:
            return (f"icmp seq {seq} from {exc.source} type {itype} code {exc.code} "  # type: ignore[attr-defined]
                    f"{exc.text}")  # type: ignore[attr-defined]
        raise
    return (f"reply seq {r.seq} from {r.source} bytes {r.size + 8} ttl {r.ttl} "
            f"time_us {round(r.rtt * 1e6)}")


# -- interfaces: create / destroy, VLANs, bridges ------------------------------------
def _l2_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"stack.l2.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"stack.l2.{name}":
            return None
        raise


def _bridges(stack: Stack) -> Any:
    mgr = getattr(stack.l2, "bridges", None) or getattr(stack, "bridges", None)
    return mgr


def create_bridge(stack: Stack, name: str) -> Interface:
    mgr = _bridges(stack)
    if mgr is not None and hasattr(mgr, "create"):
        return mgr.create(name)  # type: ignore[no-any-return]
    mod = _l2_module("bridge")
    if mod is None or not hasattr(mod, "create_bridge"):
        raise _missing("bridging")
    return mod.create_bridge(stack, name)  # type: ignore[no-any-return]


def create_vlan(stack: Stack, name: str) -> Interface:
    mod = _l2_module("vlan")
    if mod is None or not hasattr(mod, "create_vlan"):
        raise _missing("VLAN support")
    return mod.create_vlan(stack, name)  # type: ignore[no-any-return]


def vlan_info(stack: Stack, iface: Interface) -> tuple[int, str] | None:
    tag = getattr(iface, "vlan_tag", getattr(iface, "tag", None))
    if not tag or iface.kind != "vlan":
        return None
    parent = getattr(iface, "parent", None)
    pname = getattr(parent, "name", parent) if parent is not None else ""
    return int(tag), str(pname or "")


def vlan_config(stack: Stack, iface: Interface, tag: int | None, parent: Interface | None) -> None:
    if iface.kind != "vlan":
        raise OSError(errno.EINVAL, f"{iface.name} is not a vlan interface")
    if tag is None or parent is None:
        iface.unconfigure()  # type: ignore[attr-defined]
    else:
        iface.configure(parent, tag)  # type: ignore[attr-defined]


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
    iface = stack.interfaces[name]
    fn = getattr(iface, "destroy_clone", None)
    mgr = _bridges(stack)
    if iface.kind == "bridge" and mgr is not None and hasattr(mgr, "destroy"):
        mgr.destroy(name)
    elif callable(fn):
        fn()
    else:
        stack.detach_interface(name)


def bridge_of(stack: Stack, iface: Interface) -> str:
    br = getattr(iface, "bridge", None)
    return str(getattr(br, "name", br)) if br else ""


def _bridge_objects(stack: Stack) -> list[Any]:
    return [i for i in stack.interfaces.values() if i.kind == "bridge"]


def get_bridge(stack: Stack, name: str) -> Any:
    iface = stack.interfaces.get(name)
    if iface is None:
        raise OSError(errno.ENXIO, f"no such interface: {name}")
    if iface.kind != "bridge":
        raise OSError(errno.EINVAL, f"{name} is not a bridge")
    return iface


def list_bridges(stack: Stack) -> list[dict[str, Any]]:
    out = []
    for br in _bridge_objects(stack):
        members = []
        for m in getattr(br, "members", {}) if not isinstance(getattr(br, "members", None), dict) \
                else br.members.values():
            mname = getattr(m, "name", None) or getattr(getattr(m, "iface", None), "name", "?")
            flags = getattr(m, "flags_text", None)
            if flags is None:
                f = []
                if getattr(m, "learning", True):
                    f.append("LEARNING")
                if getattr(m, "discover", True):
                    f.append("DISCOVER")
                flags = ",".join(f)
            members.append({"name": mname, "flags": flags})
        entries = []
        rows = br.entries() if hasattr(br, "entries") else []
        for mac, port, left, static in rows:
            entries.append({"mac": mac, "interface": port,
                            "expires": "-" if left is None else str(left),
                            "flags": "static" if static else "dynamic"})
        out.append({"name": br.name, "flags": br.flags,
                    "timeout": getattr(br, "timeout", "-"),
                    "maxaddr": getattr(br, "maxaddr", "-"),
                    "members": members, "addresses": entries})
    return out


def _call(obj: Any, names: tuple[str, ...], *args: Any, **kw: Any) -> Any:
    for n in names:
        fn = getattr(obj, n, None)
        if callable(fn):
            return fn(*args, **kw)
    raise _missing(f"bridge operation {names[0]}")


def bridge_add(stack: Stack, br: Any, iface: Interface) -> None:
    if iface is br:
        raise OSError(errno.EINVAL, f"{br.name} cannot be a member of itself")
    _call(br, ("add_member", "add"), iface)


def bridge_delete(stack: Stack, br: Any, iface: Interface) -> None:
    _call(br, ("remove_member", "delete_member", "delete"), iface)


def bridge_set(br: Any, key: str, value: int) -> None:
    setter = getattr(br, f"set_{key}", None)
    if callable(setter):
        setter(value)
    elif hasattr(br, key):
        setattr(br, key, value)
    else:
        raise _missing(f"bridge {key}")


def bridge_static(br: Any, iface: Interface, mac: bytes) -> None:
    _call(br, ("add_static", "static"), mac, iface)


def bridge_deladdr(br: Any, mac: bytes) -> None:
    _call(br, ("delete_address", "deladdr"), mac)


def bridge_flush(br: Any, *, all_entries: bool) -> None:
    if all_entries:
        _call(br, ("flushall", "flush_all"))
    else:
        _call(br, ("flush",))


def bridge_member_flag(br: Any, iface: Interface, flag: str, on: bool) -> None:
    _call(br, ("set_member_flag",), iface, flag, on)


# -- sockets -------------------------------------------------------------------------
def _endpoint(addr: int, port: int) -> str:
    host = _ip(addr) if addr else "*"
    return f"{host}:{port if port else '*'}"


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except TypeError:
        return 0


def list_sockets(stack: Stack) -> list[dict[str, str]]:
    """Every TCP connection/listener, UDP and raw socket of the transports."""
    rows: list[dict[str, str]] = []
    tcp = getattr(stack, "tcp", None)
    if tcp is not None and hasattr(tcp, "connections"):
        for t in tcp.connections():
            state = getattr(t.state, "name", str(t.state))
            rows.append({"proto": "tcp", "recvq": str(_safe_len(getattr(t, "rcvbuf", b""))),
                         "sendq": str(_safe_len(getattr(t, "sndbuf", b""))),
                         "local": _endpoint(t.laddr, t.lport),
                         "foreign": _endpoint(t.raddr, t.rport), "state": state})
    udp = getattr(stack, "udp", None)
    for socks in list(getattr(udp, "ports", {}).values()):
        for u in socks:
            q = getattr(u, "queue", ())
            rows.append({"proto": "udp", "recvq": str(sum(_safe_len(d[0]) for d in q)),
                         "sendq": "0", "local": _endpoint(u.laddr, u.lport),
                         "foreign": _endpoint(u.raddr, u.rport), "state": ""})
    raw = getattr(stack, "raw", None)
    for r in list(getattr(raw, "sockets", ())):
        proto = getattr(r, "proto_number", "")
        rows.append({"proto": f"raw{proto}", "recvq": str(getattr(r, "queued", 0)),
                     "sendq": "0", "local": _endpoint(getattr(r, "laddr", 0), 0),
                     "foreign": _endpoint(getattr(r, "raddr", 0), 0), "state": ""})
    return rows


def render_sockets(stack: Stack) -> str:
    """proto recvq sendq local foreign state, one socket per line (``-``: empty)."""
    from stack.control.routes import render_table

    cols = ("proto", "recvq", "sendq", "local", "foreign", "state")
    return render_table(cols, list_sockets(stack))
