"""Ethernet: the layer-2 component between drivers and protocols.

Input path, per received frame (``Layer2.input``, called from ``Interface.deliver`` in the
driver's receive task)::

    runt check → parse header → pfil "ether" in → bridge / member hook (iface.l2_hook)
    → 802.1Q demux to vlanN → destination MAC filter (own unicast, broadcast, joined
    multicast, IFF_ALLMULTI, promiscuous: seen by taps, then dropped) → fast-forward
    flow cache (IPv4, when net.inet.ip.forwarding=1) → EtherType dispatch table (a UDP
    super-datagram, USO, is cut into its datagrams first)

Output: ``output`` prepends a 14-byte header as its own small buffer (never joined with
the payload) and calls ``output_frame``: pfil "ether" out → ``iface.output`` (taps,
counters, driver). Every decision point has a counter in ``Layer2.counters``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stack.counters import Counters
from stack.l2.counters import ETHER_COUNTERS, ethertype_counters
from stack.l2.gso import GsoError, segment_ip
from stack.l2.iface import BROADCAST_MAC, IFF_ALLMULTI, IFF_LOOPBACK, IFF_PROMISC, Interface
from stack.packet import GSO_UDP_L4, Buffer, Packet, TxMeta
from stack.registry import Registration

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

ETH_HLEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD

#: A protocol's receive function: (interface, packet with ``l3`` set) → None.
EtherHandler = Callable[[Interface, Packet], None]

_unpack_hdr = struct.Struct("!6s6sH").unpack_from


def ipv4_multicast_mac(group: int) -> bytes:
    """RFC 1112 mapping: 01:00:5e + the low 23 bits of the group address."""
    return b"\x01\x00\x5e" + (group & 0x7FFFFF).to_bytes(3, "big")


class Layer2:
    """The layer-2 component: dispatch table, destination filtering, output."""

    def __init__(self, stack: Stack) -> None:
        from stack.l2.fastfwd import FastForward

        self.stack = stack
        self.handlers: dict[int, EtherHandler] = {}
        self.counters = Counters("ether", ETHER_COUNTERS)
        self.pfil = stack.pfil
        self.fastfwd = FastForward(stack)
        self._mcast_refs: dict[tuple[int, bytes], int] = {}
        stack.iface_listeners.append(self._iface_event)
        stack.registries.network.watchers.append(self._network_changed)

    def _iface_event(self, event: str, iface: Interface) -> None:
        """A detached interface leaves its bridge; its vlans lose their parent."""
        if event != "detach":
            return
        from stack.l2.bridge import _member_gone
        from stack.l2.vlan import _parent_gone

        _member_gone(event, iface)
        _parent_gone(event, iface)
        self._mcast_refs = {k: v for k, v in self._mcast_refs.items() if k[0] != id(iface)}

    # -- dispatch table ----------------------------------------------------------------
    def register(self, ethertype: int, handler: EtherHandler) -> Registration:
        """Protocols (IPv4, ARP, a module's own such as Qnet) register their EtherType in
        the stack's network table (a module does it through its context, which undoes
        it at unload); ``handlers`` is this layer's hot-path mirror of that table."""
        return self.stack.registries.network.register(ethertype, handler)

    def unregister(self, ethertype: int) -> None:
        handler = self.handlers.get(ethertype)
        if handler is not None:
            self.stack.registries.network.unregister(ethertype, handler)

    def _network_changed(self, ethertype: int, handler: EtherHandler | None) -> None:
        if handler is None:
            self.handlers.pop(ethertype, None)
        else:
            self.counters.declare(ethertype_counters(ethertype))
            self.handlers[ethertype] = handler

    # -- multicast ---------------------------------------------------------------------
    def join_multicast(self, iface: Interface, mac: bytes) -> None:
        """Accept frames to multicast ``mac`` on ``iface`` (reference-counted; drivers
        with a hardware filter get ``join_multicast(mac, True)``)."""
        key = (id(iface), mac)
        n = self._mcast_refs.get(key, 0)
        self._mcast_refs[key] = n + 1
        if n == 0:
            iface.multicast.add(mac)
            fn = getattr(iface, "join_multicast", None)
            if fn is not None:
                fn(mac, True)

    def leave_multicast(self, iface: Interface, mac: bytes) -> None:
        key = (id(iface), mac)
        n = self._mcast_refs.get(key, 0)
        if n <= 1:
            self._mcast_refs.pop(key, None)
            if n == 1:
                iface.multicast.discard(mac)
                fn = getattr(iface, "join_multicast", None)
                if fn is not None:
                    fn(mac, False)
        else:
            self._mcast_refs[key] = n - 1

    # -- input -------------------------------------------------------------------------
    def input(self, iface: Interface, pkt: Packet) -> None:
        data = pkt.data
        c = self.counters
        if len(data) < ETH_HLEN:
            c["drop_runt"] += 1
            iface.counters["ierrors"] += 1
            return
        dst, src, etype = _unpack_hdr(data)
        pkt.dst_mac = dst
        pkt.src_mac = src
        pkt.l3 = ETH_HLEN
        pfil = self.pfil
        if pfil.ether_in:
            res: Any = pfil.run_chain(pfil.ether_in, "in", pkt, iface)
            if res is None:
                c["drop_pfil_in"] += 1
                iface.counters["iqdrops"] += 1
                return
            if res is not pkt:
                pkt = res if isinstance(res, Packet) else Packet(memoryview(res), iface)
                if len(pkt.data) < ETH_HLEN:
                    c["drop_runt"] += 1
                    return
                dst, src, etype = _unpack_hdr(pkt.data)
                pkt.dst_mac, pkt.src_mac, pkt.l3 = dst, src, ETH_HLEN
        if iface.l2_hook is not None and iface.l2_hook(iface, pkt):
            return  # consumed by a bridge
        if etype == ETHERTYPE_VLAN and ETHERTYPE_VLAN not in self.handlers:
            self._vlan_input(iface, pkt)
            return
        if dst != iface.mac and dst != BROADCAST_MAC:
            flags = iface.flags
            if dst[0] & 1:
                if dst not in iface.multicast and not flags & (IFF_ALLMULTI | IFF_PROMISC) \
                        and not flags & IFF_LOOPBACK:
                    c["drop_multicast_not_joined"] += 1
                    return
                c["in_multicast"] += 1
            elif flags & IFF_LOOPBACK:
                pass  # lo0 takes any destination
            elif flags & IFF_PROMISC:
                pkt.to_us = False
                c["promisc_not_ours"] += 1
                return
            else:
                c["drop_not_our_mac"] += 1
                return
        pkt.ethertype = etype
        if etype == ETHERTYPE_IPV4:
            ff = self.fastfwd
            if ff.active and dst == iface.mac and ff.forward(iface, pkt):
                c["fastforwarded"] += 1
                return
        elif etype == ETHERTYPE_IPV6:
            ff = self.fastfwd
            if ff.active6 and dst == iface.mac and ff.forward6(iface, pkt):
                c["fastforwarded"] += 1
                return
        handler = self.handlers.get(etype)
        if handler is None:
            c["drop_unknown_ethertype"] += 1
            return
        c["in_" + hex(etype)] += 1
        if pkt.gso_type == GSO_UDP_L4:
            self._split_input(iface, pkt, handler)
            return
        handler(iface, pkt)

    def _split_input(self, iface: Interface, pkt: Packet, handler: EtherHandler) -> None:
        """A UDP super-datagram (USO, from a TAP or AF_PACKET peer with offloads) that
        was not fast-forwarded: the protocols above see datagrams, so cut it into its
        ``gso_size``-byte datagrams here (checksums computed) and dispatch each
        (``gso_rx_frames``/``gso_rx_segments``; a malformed one ``drop_gso_<reason>``).
        TCP super-segments go up whole: TCP input takes them."""
        c = self.counters
        meta = pkt.tx_meta(0)
        assert meta is not None
        l3 = pkt.l3
        data = pkt.data
        try:
            frames = segment_ip(bytes(data[:l3]), data[l3:], meta, 65535)
        except GsoError as exc:
            c["drop_gso_" + exc.reason] += 1
            return
        c["gso_rx_frames"] += 1
        c["gso_rx_segments"] += len(frames)
        for bufs in frames:
            seg = Packet(memoryview(bytearray().join(bufs)), iface)
            seg.l3, seg.ethertype = l3, pkt.ethertype
            seg.src_mac, seg.dst_mac, seg.vlan, seg.to_us = \
                pkt.src_mac, pkt.dst_mac, pkt.vlan, pkt.to_us
            seg.csum_valid = True
            handler(iface, seg)

    def _vlan_input(self, iface: Interface, pkt: Packet) -> None:
        """802.1Q: strip the tag (move the 12 MAC bytes 4 forward, in place) and deliver
        to the vlan interface configured for (parent, VID)."""
        c = self.counters
        data = pkt.data
        if len(data) < ETH_HLEN + 4:
            c["drop_vlan_runt"] += 1
            return
        vid = int.from_bytes(data[14:16], "big") & 0x0FFF
        vif = iface.vlans.get(vid)
        if vif is None:
            c["drop_vlan_unknown"] += 1
            return
        c["in_vlan"] += 1
        if data.readonly:
            buf = bytearray(data)
            data = memoryview(buf)
        data[4:16] = data[0:12]
        inner = Packet(data[4:], vif)
        inner.vlan = vid
        inner.csum_valid = pkt.csum_valid
        inner.csum_partial = pkt.csum_partial
        inner.gso_type, inner.gso_size = pkt.gso_type, pkt.gso_size
        if pkt.csum_partial:
            inner.csum_start = pkt.csum_start - 4
            inner.csum_offset = pkt.csum_offset
        vif.deliver(inner)

    # -- output ------------------------------------------------------------------------
    def output(self, iface: Interface, dst: bytes, ethertype: int,
               payload: Sequence[Buffer], meta: TxMeta | None = None) -> bool:
        """Send ``payload`` (buffers, never joined) in an Ethernet frame to ``dst``."""
        hdr = dst + iface.mac + ethertype.to_bytes(2, "big")
        pfil = self.pfil
        if pfil.ether_out:
            return self.output_frame(iface, [hdr, *payload], meta)
        return iface.output([hdr, *payload], meta)

    def output_frame(self, iface: Interface, bufs: Sequence[Buffer],
                     meta: TxMeta | None = None) -> bool:
        """Send a complete frame (header first): pfil "ether" out, then the interface."""
        pfil = self.pfil
        if pfil.ether_out:
            res = pfil.run_chain(pfil.ether_out, "out", bufs, iface)
            if res is None:
                self.counters["drop_pfil_out"] += 1
                iface.counters["oqdrops"] += 1
                return False
            if res is not bufs:
                bufs = [res] if isinstance(res, (bytes, bytearray, memoryview)) else res
        return iface.output(bufs, meta)
