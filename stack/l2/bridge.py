"""A learning Ethernet bridge with NetBSD bridge(4)/brconfig(8) behaviour.

Python API (``ifconfig``/``brconfig`` tools map onto these one to one):

=================================  =================================================
``ifconfig bridge0 create``         ``create_bridge(stack, "bridge0")``
``ifconfig bridge0 destroy``        ``destroy_bridge(stack, "bridge0")``
``brconfig bridge0 add tap0``       ``br.add_member(iface)``
``brconfig bridge0 delete tap0``    ``br.delete_member(iface)``
``brconfig bridge0 up``             ``br.set_flags(IFF_UP)``
``brconfig bridge0 static tap0 M``  ``br.add_static(mac, iface)``
``brconfig bridge0 deladdr M``      ``br.deladdr(mac)``
``brconfig bridge0 flush``          ``br.flush()`` (dynamic entries)
``brconfig bridge0 flushall``       ``br.flushall()`` (static ones too)
``brconfig bridge0 timeout N``      ``br.set_timeout(N)`` (seconds; 0 = never age)
``brconfig bridge0 maxaddr N``      ``br.set_maxaddr(N)``
``brconfig bridge0`` / ``addr``     ``br.render()`` / ``br.table()``
=================================  =================================================

Semantics: members go promiscuous (reference-counted) while they belong to the bridge;
source addresses are learned per member port, up to ``maxaddr`` (default 100; when full,
new addresses are not learned — counted) and age out ``timeout`` seconds (default 1200)
after they were last seen; static entries never age and are not overwritten by learning.
Frames to the bridge's own MAC are delivered locally on the bridge interface; frames to a
member's own MAC are left to that member (NetBSD does the same); broadcast and multicast
are flooded to the other members and delivered locally; unknown unicast is flooded;
frames whose destination was learned on the arrival port are filtered. A bridge that is
not up leaves its members alone. Spanning tree (STP/RSTP) is **not** implemented: do not
build loops.

Aging is deadline-driven: lookups treat an expired entry as absent, and one task per
bridge sleeps until the earliest expiry to remove entries (no periodic tick).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from stack.l2.counters import BRIDGE_COUNTERS
from stack.l2.iface import (
    IFF_BROADCAST,
    IFF_MULTICAST,
    IFF_RUNNING,
    IFF_UP,
    Interface,
    format_flags,
    format_mac,
    random_mac,
)
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:  # cycle: the Stack holds the interfaces; create_*() attaches to it; types only
    from stack.core import Stack

DEFAULT_TIMEOUT = 1200
DEFAULT_MAXADDR = 100


@dataclass(slots=True)
class BridgeEntry:
    mac: bytes
    port: Interface
    expires: float  # trio.current_time() deadline; inf for static
    static: bool = False


class BridgeInterface(Interface):
    kind = "bridge"
    counter_names = BRIDGE_COUNTERS

    def __init__(self, name: str, mac: bytes | None = None) -> None:
        super().__init__(name, mac=mac or random_mac(), mtu=1500, driver="bridge",
                         flags=IFF_BROADCAST | IFF_MULTICAST)
        self.members: dict[str, Interface] = {}
        self.table: dict[bytes, BridgeEntry] = {}
        self.timeout = DEFAULT_TIMEOUT
        self.maxaddr = DEFAULT_MAXADDR
        self._aging_wakeup = trio.Event()
        self._scope: trio.CancelScope | None = None

    # -- membership --------------------------------------------------------------------
    def add_member(self, iface: Interface) -> None:
        if iface is self or isinstance(iface, BridgeInterface):
            raise OSError(errno.EINVAL, "cannot add a bridge to a bridge")
        if iface.bridge is not None:
            raise OSError(errno.EBUSY, f"{iface.name} is already in {iface.bridge.name}")
        if iface.l2_hook is not None:
            raise OSError(errno.EBUSY, f"{iface.name} already has a layer-2 hook")
        if self.members and self.mtu != iface.mtu:
            raise OSError(errno.EINVAL, f"{iface.name}: mtu {iface.mtu} != bridge mtu {self.mtu}")
        if not self.members:
            self.mtu = iface.mtu
        self.members[iface.name] = iface
        iface.bridge = self
        iface.l2_hook = self._member_input
        iface.set_promisc(True)
        self.counters["members_added"] += 1

    def delete_member(self, iface: Interface | str) -> None:
        name = iface if isinstance(iface, str) else iface.name
        m = self.members.pop(name, None)
        if m is None:
            raise OSError(errno.ENOENT, f"{name} is not a member of {self.name}")
        m.bridge = None
        m.l2_hook = None
        m.set_promisc(False)
        for mac in [k for k, e in self.table.items() if e.port is m]:
            del self.table[mac]

    # -- address table -----------------------------------------------------------------
    def add_static(self, mac: bytes, iface: Interface | str) -> None:
        port = self.members.get(iface if isinstance(iface, str) else iface.name)
        if port is None:
            raise OSError(errno.ENOENT, f"{iface} is not a member of {self.name}")
        self.table[mac] = BridgeEntry(mac, port, float("inf"), True)

    def deladdr(self, mac: bytes) -> None:
        if self.table.pop(mac, None) is None:
            raise OSError(errno.ENOENT, f"{format_mac(mac)} is not in the table")

    def flush(self) -> None:
        for mac in [k for k, e in self.table.items() if not e.static]:
            del self.table[mac]

    def flushall(self) -> None:
        self.table.clear()

    def set_timeout(self, seconds: int) -> None:
        if seconds < 0:
            raise OSError(errno.EINVAL, "timeout must be >= 0")
        self.timeout = seconds
        now = trio.current_time()
        for e in self.table.values():
            if not e.static:
                e.expires = now + seconds if seconds else float("inf")
        self._aging_wakeup.set()

    def set_maxaddr(self, n: int) -> None:
        if n < 0:
            raise OSError(errno.EINVAL, "maxaddr must be >= 0")
        self.maxaddr = n

    def entries(self) -> list[tuple[str, str, int | None, bool]]:
        """(mac, member, seconds left or None for static/no aging, static) — live ones."""
        now = trio.current_time()
        rows = []
        for e in self.table.values():
            if e.expires <= now:
                continue
            left = None if e.expires == float("inf") else int(e.expires - now + 0.999)
            rows.append((format_mac(e.mac), e.port.name, left, e.static))
        return rows

    def render(self) -> str:
        """brconfig-like status of the bridge."""
        lines = [f"{self.name}: {format_flags(self.flags)}",
                 "\tInterfaces:"]
        for m in self.members.values():
            lines.append(f"\t\t{m.name} flags=3<LEARNING,DISCOVER>")
        lines.append(f"\tAddress cache (max cache: {self.maxaddr}, timeout: {self.timeout}):")
        for mac, port, left, static in self.entries():
            flags = "flags=1<STATIC>" if static else "flags=0<>"
            lines.append(f"\t\t{mac} {port} {left if left is not None else 0} {flags}")
        return "\n".join(lines) + "\n"

    def _learn(self, mac: bytes, port: Interface) -> None:
        e = self.table.get(mac)
        t = self.timeout
        if e is not None:
            if e.static:
                return
            e.port = port
            e.expires = trio.current_time() + t if t else float("inf")
            return
        if len(self.table) >= self.maxaddr:
            self.counters["learn_table_full"] += 1
            return
        expires = trio.current_time() + t if t else float("inf")
        self.table[mac] = BridgeEntry(mac, port, expires)
        self.counters["learned"] += 1
        self._aging_wakeup.set()

    def _lookup(self, mac: bytes) -> Interface | None:
        e = self.table.get(mac)
        if e is None:
            return None
        if e.expires <= trio.current_time():
            del self.table[mac]
            self.counters["aged"] += 1
            return None
        return e.port

    async def age(self) -> None:
        """Remove expired entries at their deadlines (one task per bridge)."""
        while True:
            self._aging_wakeup = trio.Event()
            now = trio.current_time()
            soonest = float("inf")
            for mac in list(self.table):
                e = self.table[mac]
                if e.expires <= now:
                    del self.table[mac]
                    self.counters["aged"] += 1
                elif e.expires < soonest:
                    soonest = e.expires
            with trio.move_on_at(soonest):
                await self._aging_wakeup.wait()

    # -- forwarding ----------------------------------------------------------------------
    def _member_input(self, iface: Interface, pkt: Packet) -> bool:
        """Layer 2's hook on every member: True when the bridge consumed the frame."""
        if not self.flags & IFF_UP:
            return False
        c = self.counters
        src, dst = pkt.src_mac, pkt.dst_mac
        if not src[0] & 1:
            self._learn(src, iface)
        if dst == iface.mac:
            return False  # for the member itself
        if dst == self.mac:
            c["local"] += 1
            pkt.iface = self
            self.deliver(pkt)
            return True
        meta = pkt.tx_meta()
        if dst[0] & 1:
            c["flooded_multicast"] += 1
            self._flood(iface, pkt.data, meta)
            pkt.iface = self
            self.deliver(pkt)  # broadcast/multicast are for us too
            return True
        out = self._lookup(dst)
        if out is None:
            c["flooded_unknown"] += 1
            self._flood(iface, pkt.data, meta)
            return True
        if out is iface:
            c["filtered_same_port"] += 1
            return True
        c["forwarded"] += 1
        self._send(out, [pkt.data], meta)
        return True

    def _send(self, out: Interface, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        if not out.flags & IFF_UP:
            self.counters["drop_member_down"] += 1
            return
        stack = self.stack
        if stack is not None:
            stack.l2.output_frame(out, bufs, meta)
        else:
            out.output(bufs, meta)

    def _flood(self, src: Interface | None, frame: Buffer, meta: TxMeta | None) -> None:
        for m in self.members.values():
            if m is not src:
                self._send(m, [frame], meta)

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        """The stack sends on the bridge interface: to the learned port, else flood."""
        first = bufs[0]
        dst = bytes(first[:6]) if len(first) >= 6 else b"".join(bytes(b) for b in bufs)[:6]
        out = None if dst[0] & 1 else self._lookup(dst)
        if out is not None:
            self._send(out, bufs, meta)
        else:
            for m in self.members.values():
                self._send(m, bufs, meta)
        return True

    def set_link_up(self, up: bool) -> None:
        if up:
            self.flags |= IFF_RUNNING
        else:
            self.flags &= ~IFF_RUNNING

    def destroy(self) -> None:
        for name in list(self.members):
            self.delete_member(name)
        if self._scope is not None:
            self._scope.cancel()

    def describe(self) -> dict[str, str]:
        return {"members": ",".join(self.members) or "-", "timeout": str(self.timeout),
                "maxaddr": str(self.maxaddr), "entries": str(len(self.table))}


def create_bridge(stack: Stack, name: str | None = None, mac: bytes | None = None) -> BridgeInterface:
    """``ifconfig bridgeN create``: a new bridge (down, no members); its aging task runs
    in the stack's nursery until the bridge is destroyed."""
    br = BridgeInterface(name or stack.unique_name("bridge"), mac)
    stack.attach_interface(br)
    scope = trio.CancelScope()
    br._scope = scope

    async def run() -> None:
        with scope:
            await br.age()

    stack.nursery.start_soon(run, name=f"{br.name}-aging")
    return br


def destroy_bridge(stack: Stack, name: str) -> None:
    """``ifconfig bridgeN destroy``: members leave (promiscuous mode dropped)."""
    br = stack.interfaces.get(name)
    if not isinstance(br, BridgeInterface):
        raise OSError(errno.ENXIO, f"{name} is not a bridge")
    stack.detach_interface(name)


def _member_gone(event: str, iface: Interface) -> None:
    """Interface listener: a detached member leaves its bridge."""
    if event == "detach" and iface.bridge is not None:
        br = iface.bridge
        if isinstance(br, BridgeInterface):
            br.delete_member(iface)
