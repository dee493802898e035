"""802.1Q VLAN interfaces (NetBSD vlan(4)): ``ifconfig vlan0 create; ifconfig vlan0 vlan 6
vlanif tap0`` maps to ``create_vlan(stack, "vlan0")`` then ``vif.configure(parent, 6)``
(or ``create_vlan(stack, "vlan0", parent, 6)`` in one go); ``ifconfig vlan0 destroy`` to
``destroy_vlan(stack, "vlan0")``.

Receive: layer 2 sees EtherType 0x8100 on the parent, finds ``parent.vlans[vid]``, strips
the tag in place (12-byte memmove, no copy of the payload) and the vlan interface
delivers the inner frame (its own counters, taps, pfil, dispatch). Transmit: the tag is
inserted after the MAC addresses as a separate 4-byte buffer (zero-copy) and the frame
goes out through the parent (offload offsets shifted by 4). The vlan's MAC is the
parent's; its MTU is the parent's (tagged frames are 4 bytes longer on the wire, which
TAP, veth and AF_PACKET accept); priority bits (PCP) are 0 on output and ignored on input.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stack.l2.iface import IFF_BROADCAST, IFF_MULTICAST, IFF_RUNNING, Interface
from stack.packet import Buffer, TxMeta

if TYPE_CHECKING:  # cycle: the Stack holds the interfaces; create_*() attaches to it; types only
    from stack.core import Stack


class VlanInterface(Interface):
    kind = "vlan"

    def __init__(self, name: str) -> None:
        super().__init__(name, mac=b"\x00" * 6, mtu=1500, driver="vlan",
                         flags=IFF_BROADCAST | IFF_MULTICAST)
        self.parent: Interface | None = None
        self.tag = 0

    def configure(self, parent: Interface, tag: int) -> None:
        """``ifconfig vlanN vlan TAG vlanif PARENT``: attach to ``parent`` with VID ``tag``."""
        if not 1 <= tag <= 4094:
            raise OSError(errno.EINVAL, f"vlan tag {tag} out of range 1..4094")
        if parent is self or isinstance(parent, VlanInterface):
            raise OSError(errno.EINVAL, "a vlan's parent must be an Ethernet interface")
        other = parent.vlans.get(tag)
        if other is not None and other is not self:
            raise OSError(errno.EEXIST, f"{parent.name} already has vlan {tag} ({other.name})")
        self.unconfigure()
        self.parent, self.tag = parent, tag
        parent.vlans[tag] = self
        self.mac = parent.mac
        self.mtu = parent.mtu
        self.capabilities = set(parent.offloads)
        self.offloads = set(parent.offloads)
        self._tag_bytes = b"\x81\x00" + tag.to_bytes(2, "big")
        if self.up:
            self.flags |= IFF_RUNNING
        if self.stack is not None:
            self.stack.interface_changed(self)

    def unconfigure(self) -> None:
        """``ifconfig vlanN -vlanif``: detach from the parent."""
        p = self.parent
        if p is not None and p.vlans.get(self.tag) is self:
            del p.vlans[self.tag]
        self.parent = None
        self.tag = 0
        self.flags &= ~IFF_RUNNING

    def set_link_up(self, up: bool) -> None:
        if up and self.parent is not None:
            self.flags |= IFF_RUNNING
        else:
            self.flags &= ~IFF_RUNNING

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        p = self.parent
        if p is None:
            self.counters["oerrors"] += 1
            return False
        first = bufs[0]
        if len(first) < 12:  # header split oddly: join once (rare)
            first = b"".join(bytes(b) for b in bufs)
            bufs = [first]
        mv = memoryview(first)
        out: list[Buffer] = [mv[:12], self._tag_bytes, mv[12:], *bufs[1:]]
        if meta is not None:
            meta = meta.shifted(4)
        stack = self.stack
        if stack is not None:
            return stack.l2.output_frame(p, out, meta)
        return p.output(out, meta)

    def destroy(self) -> None:
        self.unconfigure()

    def describe(self) -> dict[str, str]:
        return {"vlan": str(self.tag), "parent": self.parent.name if self.parent else "-"}


def create_vlan(stack: Stack, name: str | None = None, parent: Interface | str | None = None,
                tag: int | None = None) -> VlanInterface:
    """Create ``name`` (default vlanN); with ``parent`` and ``tag``, configure it too."""
    vif = VlanInterface(name or stack.unique_name("vlan"))
    stack.attach_interface(vif)
    if parent is not None and tag is not None:
        p = stack.interfaces[parent] if isinstance(parent, str) else parent
        try:
            vif.configure(p, tag)
        except Exception:
            stack.detach_interface(vif.name)
            raise
    return vif


def destroy_vlan(stack: Stack, name: str) -> None:
    """``ifconfig vlanN destroy``."""
    vif = stack.interfaces.get(name)
    if not isinstance(vif, VlanInterface):
        raise OSError(errno.ENXIO, f"{name} is not a vlan interface")
    stack.detach_interface(name)


def _parent_gone(event: str, iface: Interface) -> None:
    """Interface listener: a detached parent leaves its vlans unconfigured."""
    if event == "detach":
        for vif in list(iface.vlans.values()):
            if isinstance(vif, VlanInterface):
                vif.unconfigure()
