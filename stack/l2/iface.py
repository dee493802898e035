"""The driver API: an ``Interface`` is what a ``devnp-*`` driver registers with the stack.

A driver subclasses ``Interface`` and implements ``transmit`` (and optionally
``set_link_up``/``set_mtu``/``set_promisc``/``destroy``). On receive it wraps each frame,
read into a buffer it owns and hands over, in a ``Packet`` and calls ``self.deliver(pkt)``;
from there the buffer belongs to the stack (no copy between layers).

Sending is synchronous and never blocks the caller: a driver writes to the device at once
and, when the device is full (EAGAIN), keeps a bounded queue drained by its own task;
beyond the bound it drops and counts ``oqdrops`` (BSD's ifq_maxlen back-pressure).
``transmit`` only gets a ``TxMeta`` that ``offloads`` covers: ``output`` segments and
checksums in software whatever the device cannot (``stack.l2.gso``, Linux's GSO).

The kind of link is the interface's ``medium`` (stack/l2/medium.py), made from the
class attribute ``medium_type``: Ethernet by default (frames carry a 14-byte header,
next hops are resolved by the neighbour layer), ``LoopbackMedium`` for lo0,
``PointToPointMedium`` for a link without link addresses (a tunnel, enc0). The network
layers send through ``iface.medium.output(...)``; a received frame goes to layer 2 when
the medium's frames are Ethernet, else to ``medium.input``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from stack.counters import Counters
from stack.l2.counters import IFACE_COUNTERS
from stack.l2.gso import GsoError, device_finishes, segment_ip
from stack.l2.medium import BROADCAST_MAC as BROADCAST_MAC
from stack.l2.medium import EthernetMedium, Medium
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.loader import ModuleInstance

log = logging.getLogger("io-pkt.if")

# Interface flags, the BSD names (ifconfig prints them).
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
IFF_MULTICAST = 0x8000

FLAG_NAMES = [
    (IFF_UP, "UP"), (IFF_BROADCAST, "BROADCAST"), (IFF_LOOPBACK, "LOOPBACK"),
    (IFF_POINTOPOINT, "POINTOPOINT"), (IFF_RUNNING, "RUNNING"), (IFF_PROMISC, "PROMISC"),
    (IFF_ALLMULTI, "ALLMULTI"), (IFF_MULTICAST, "MULTICAST"),
]

#: interfaces that hand frames (and their TxMeta) on to other interfaces, which finish
#: the offloads themselves: a bridge (to its members), a vlan (to its parent)
PASSTHROUGH_KINDS = frozenset({"bridge", "vlan"})

#: A capture tap sees every frame: (interface, direction "in"/"out", frame buffers).
CaptureTap = Callable[["Interface", str, Sequence[Buffer]], None]


def format_flags(flags: int) -> str:
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    return f"flags={flags:#x}<{','.join(names)}>"


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}") from None
    return mac


def random_mac() -> bytes:
    """A random unicast, locally-administered MAC (x2:, x6:, xa:, xe:)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


class Interface:
    """One network interface. Counter names follow BSD's if_data: ipackets, ibytes,
    ierrors, iqdrops, opackets, obytes, oerrors, oqdrops, plus driver-specific ones."""

    #: what `ifconfig` shows as the media/driver kind
    kind = "ether"
    #: the kind of link (stack/l2/medium.py); an instance is made per interface
    medium_type: type[Medium] = EthernetMedium
    #: the names ``counters`` takes (stack/l2/counters.py): a driver counting names of
    #: its own adds them (``IFACE_COUNTERS | names("rx_spill ...")``)
    counter_names: ClassVar[frozenset[str]] = IFACE_COUNTERS

    def __init__(self, name: str, *, mac: bytes, mtu: int = 1500, driver: str = "",
                 flags: int = IFF_BROADCAST | IFF_MULTICAST) -> None:
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.driver = driver
        self.flags = flags
        self.stack: Stack | None = None
        self.owner: ModuleInstance | None = None
        self.index = 0
        self.counters = Counters(name, self.counter_names)
        #: offloads the device can do ("csum", "tso4", "tso6", "gro") and those enabled
        self.capabilities: set[str] = set()
        self.offloads: set[str] = set()
        self.taps: list[CaptureTap] = []
        #: taps of other link types a capture may choose (bpf's BIOCSDLT): DLT → taps; a
        #: wireless interface offers 127 (radiotap + 802.11) beside Ethernet's ``taps``
        self.dlt_taps: dict[int, list[CaptureTap]] = {}
        #: set by layer 2 when the interface is a bridge member / VLAN parent
        self.l2_hook: Callable[[Interface, Packet], bool] | None = None
        self.multicast: set[bytes] = set()
        #: 802.1Q children by VLAN id (stack.l2.vlan); the bridge this is a member of
        self.vlans: dict[int, Interface] = {}
        self.bridge: Interface | None = None
        self.promisc_refs = 0
        #: protocol-specific per-interface state (inet addresses, ...), keyed by protocol
        self.proto: dict[str, Any] = {}
        #: link header and address resolution for the network layers
        self.medium: Medium = self.medium_type(self)

    # -- state -----------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def running(self) -> bool:
        return bool(self.flags & IFF_RUNNING)

    def set_flags(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        old = self.flags
        self.flags = (self.flags | set_bits) & ~clear_bits
        if (old ^ self.flags) & IFF_UP:
            self.set_link_up(self.up)
        if self.stack is not None and old != self.flags:
            self.stack.interface_changed(self)

    def set_link_up(self, up: bool) -> None:
        """Administrative up/down reached the driver. Default: link follows admin state."""
        if up:
            self.flags |= IFF_RUNNING
        else:
            self.flags &= ~IFF_RUNNING

    def set_mtu(self, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} out of range 68..65535")
        self.mtu = mtu

    def set_promisc(self, on: bool) -> None:
        """Reference-counted promiscuous mode (bridge membership, bpf readers)."""
        self.promisc_refs += 1 if on else -1
        self.promisc_refs = max(self.promisc_refs, 0)
        if self.promisc_refs:
            self.flags |= IFF_PROMISC
        else:
            self.flags &= ~IFF_PROMISC

    # -- data path -------------------------------------------------------------------
    def deliver(self, pkt: Packet) -> None:
        """Driver → stack: one received frame. Counts, runs taps, hands to layer 2."""
        c = self.counters
        c["ipackets"] += 1
        c["ibytes"] += len(pkt.data)
        if not self.flags & IFF_UP:
            c["iqdrops"] += 1
            return
        if self.taps:
            self._run_taps("in", (pkt.data,))
        stack = self.stack
        if stack is not None:
            if self.medium.ether:
                stack.l2.input(self, pkt)
            else:
                self.medium.input(pkt)

    def output(self, bufs: Sequence[Buffer], meta: TxMeta | None = None) -> bool:
        """Stack → driver: one frame as a list of buffers. Returns False if dropped.

        A ``meta`` asking for what this interface cannot do (a super-segment without
        ``tso4``/``uso``..., a partial checksum without ``csum``: a forwarded or bridged
        frame from a peer with offloads) is finished here in software first
        (``stack.l2.gso``), and the resulting frames go out one by one."""
        c = self.counters
        if not self.flags & IFF_UP:
            c["oqdrops"] += 1
            return False
        if meta is not None and (meta.gso_type or meta.needs_csum) \
                and self.kind not in PASSTHROUGH_KINDS \
                and not device_finishes(meta, self.offloads):
            return self._output_software(bufs, meta)
        if self.taps:
            self._run_taps("out", bufs)
        ok = self.transmit(bufs, meta)
        if ok:
            c["opackets"] += 1
            c["obytes"] += sum(len(b) for b in bufs)
        return ok

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        """Driver hook: put the frame on the wire (or a bounded queue). Never blocks."""
        raise NotImplementedError

    def _output_software(self, bufs: Sequence[Buffer], meta: TxMeta) -> bool:
        """Software GSO / checksum for this interface's MTU, then each frame is sent as
        a plain one (taps see the frames as they go on the wire). Counted:
        ``gso_frames``/``gso_segments`` (super-segments cut, frames made),
        ``csum_completed``; a frame that cannot be segmented is dropped and counted
        (``gso_errors``, ``gso_error_<reason>``, ``oerrors``). True only if every
        frame was accepted."""
        c = self.counters
        try:
            prefix, ip = self.medium.split(bufs)
            frames = segment_ip(prefix, ip, meta, self.mtu)
        except GsoError as exc:
            c["gso_errors"] += 1
            c["gso_error_" + exc.reason] += 1
            c["oerrors"] += 1
            return False
        if meta.gso_type:
            c["gso_frames"] += 1
            c["gso_segments"] += len(frames)
        else:
            c["csum_completed"] += 1
        ok = True
        for f in frames:
            if not self.output(f, None):
                ok = False
        return ok

    def _run_taps(self, direction: str, bufs: Sequence[Buffer]) -> None:
        for tap in list(self.taps):
            try:
                tap(self, direction, bufs)
            except Exception:  # a broken tap must not break the data path
                self.counters["tap_errors"] += 1
                if self.counters["tap_errors"] == 1:
                    log.exception("%s: capture tap raised; it keeps being called", self.name)

    def destroy(self) -> None:
        """Driver hook: release the device (called once, on detach)."""

    def describe(self) -> dict[str, str]:
        """Driver-specific facts for nicinfo (key → value)."""
        return {}
