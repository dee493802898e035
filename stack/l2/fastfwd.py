"""Fast forwarding (NetBSD ip_flow / ip6_flow, io-pkt's fast-forward path): a flow cache
``destination → (out interface, next-hop MAC, MTU)`` per family, consulted in the layer-2
input path before IP input, when ``net.inet.ip.forwarding`` (IPv4) or
``net.inet6.ip6.forwarding`` (IPv6) is 1.

IPv6 (``flows6``, ``forward6``, filled by stack/inet6/ipv6.py): the simple case is a
datagram without a hop-by-hop header (routers must look at that one), hop limit > 1,
a global source and destination, fitting the flow's MTU (IPv6 never fragments in
transit: the slow path sends Packet Too Big) or a super-segment: hop limit - 1 (no
header checksum in IPv6), new Ethernet header, out. Skipped while pfil has "inet6" or
"inet6_out_prefrag" hooks.

Division of work:

* layer 2 (here) owns the cache, the sysctl switch ``net.inet.ip.fastforwarding``
  (default 1; forwarding itself is ``net.inet.ip.forwarding``), the hook point in
  ``Layer2.input`` and a complete default forwarder for the simple case (IPv4, no IP
  options, not fragmented, TTL > 1, fits the out MTU or is a TSO/USO super-segment,
  header checksum valid, a plausible source): TTL decrement with an incremental header-checksum
  update (RFC 1624) in place, new Ethernet header, ``out.output``. Offload metadata (a
  partial L4 checksum, a super-segment, its gso_size lowered to the flow's MTU) goes
  with the frame; an out interface that cannot finish it does so in software
  (``Interface.output``, ``stack.l2.gso``; counted here as ``offload_sw``). Anything
  else returns False and takes the full IP input path, which drops and counts what is
  bad.
* the IPv4 layer fills the cache (``insert`` after it forwarded a packet the slow way:
  it knows the route, the next hop and its ARP entry) and calls ``invalidate_all`` when
  routes, addresses or ARP entries change. It may replace ``forward`` entirely.
* interface detach/down/MTU changes invalidate entries here (interface listener).

The fast path is skipped while pfil has "inet" or "inet_out_prefrag" hooks (filters
must see every packet: ``Pfil.inet_filtered``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.counters import Counters
from stack.l2.counters import FASTFWD_COUNTERS
from stack.l2.gso import clamp_gso_size, device_finishes
from stack.l2.iface import Interface
from stack.packet import Packet

if TYPE_CHECKING:  # cycle: the Stack owns layer 2 and this cache, which holds the Stack; types only
    from stack.core import Stack

ETH_HLEN = 14
#: cache bound (NetBSD net.inet.ip.maxflows default 256)
MAX_FLOWS = 256


@dataclass(slots=True)
class FlowEntry:
    dst: int  # IPv4 destination address as int
    out: Interface
    mac: bytes  # next-hop MAC
    mtu: int
    hits: int = 0


class FastForward:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.flows: dict[int, FlowEntry] = {}
        #: IPv6 flows, by destination (a 128-bit int)
        self.flows6: dict[int, FlowEntry] = {}
        self.counters = Counters("fastfwd", FASTFWD_COUNTERS)
        self.max_flows = MAX_FLOWS
        #: the function Layer2 calls: (in iface, pkt with l3 set) → True if forwarded
        self.forward: Callable[[Interface, Packet], bool] = self.default_forward
        #: read by Layer2.input: True iff forwarding on, fast path on and flows exist
        self.active = False
        #: the same for IPv6 (``forward6``)
        self.active6 = False
        self.forwarding = 0
        self.forwarding6 = 0
        self._watching6 = False
        self.enabled = 1
        self._watching = False
        # net.inet.ip.forwarding belongs to the IPv4 layer (it registers it, with its
        # default); we follow it from the first time we see it (_watch_forwarding)
        stack.sysctl.register("net.inet.ip.fastforwarding", 1,
                              "use the layer-2 flow cache when forwarding",
                              lo=0, hi=1, on_change=self._set_enabled)
        stack.iface_listeners.append(self._iface_event)

    # -- switch --------------------------------------------------------------------------
    def _set_forwarding(self, value: int | str) -> None:
        self.forwarding = int(value)
        if not self.forwarding:
            self.invalidate_all()
        self.update_active()

    def _set_enabled(self, value: int | str) -> None:
        self.enabled = int(value)
        self.update_active()

    def _watch_forwarding(self) -> None:
        knob = self.stack.sysctl.knobs.get("net.inet.ip.forwarding")
        if knob is not None:
            self.forwarding = int(knob.value)
            if not self._watching:
                knob.on_change.append(self._set_forwarding)
                self._watching = True

    def _set_forwarding6(self, value: int | str) -> None:
        self.forwarding6 = int(value)
        if not self.forwarding6:
            self.invalidate_all()
        self.update_active()

    def update_active(self) -> None:
        if not self._watching:
            self._watch_forwarding()
        if not self._watching6:
            knob = self.stack.sysctl.knobs.get("net.inet6.ip6.forwarding")
            if knob is not None:
                self.forwarding6 = int(knob.value)
                knob.on_change.append(self._set_forwarding6)
                self._watching6 = True
        pfil = self.stack.pfil
        filtered = pfil.inet_filtered()
        self.active = bool(self.forwarding and self.enabled and self.flows and not filtered)
        self.active6 = bool(self.forwarding6 and self.enabled and self.flows6
                            and not (pfil.inet6_in or pfil.inet6_out
                                     or pfil.inet6_out_prefrag))

    # -- the cache API (used by the IPv4 layer) ------------------------------------------
    def lookup(self, dst: int) -> FlowEntry | None:
        return self.flows.get(dst)

    def insert(self, dst: int, out: Interface, mac: bytes, mtu: int | None = None) -> FlowEntry:
        """Cache ``dst`` → ``out`` via next hop ``mac``; evicts the oldest when full."""
        flows = self.flows
        if dst not in flows and len(flows) >= self.max_flows:
            flows.pop(next(iter(flows)))
            self.counters["evicted"] += 1
        e = FlowEntry(dst, out, mac, mtu if mtu is not None else out.mtu)
        flows[dst] = e
        self.counters["inserted"] += 1
        self.update_active()
        return e

    def insert6(self, dst: int, out: Interface, mac: bytes, mtu: int) -> FlowEntry:
        """Cache IPv6 ``dst`` → ``out`` via next hop ``mac``; evicts the oldest when full."""
        flows = self.flows6
        if dst not in flows and len(flows) >= self.max_flows:
            flows.pop(next(iter(flows)))
            self.counters["evicted"] += 1
        e = FlowEntry(dst, out, mac, mtu)
        flows[dst] = e
        self.counters["inserted"] += 1
        self.update_active()
        return e

    def learn(self, dst: int, out: Interface, mac: bytes, mtu: int | None = None,
              generation: object = None) -> FlowEntry:
        """Alias of ``insert`` (the IPv4 layer's name; ``generation`` is unused: the IPv4
        layer calls ``invalidate()`` on every route/address/ARP change instead)."""
        return self.insert(dst, out, mac, mtu)

    def invalidate(self, dst: int | None = None) -> None:
        """Forget the flow to ``dst``; with no argument, every flow."""
        if dst is None:
            self.invalidate_all()
            return
        if self.flows.pop(dst, None) is not None:
            self.counters["invalidated"] += 1
            self.update_active()

    def invalidate_all(self) -> None:
        """Routes, addresses or ARP entries changed: forget every flow."""
        if self.flows or self.flows6:
            self.counters["invalidated"] += len(self.flows) + len(self.flows6)
            self.flows.clear()
            self.flows6.clear()
        self.counters["flushes"] += 1
        self.update_active()

    def invalidate_iface(self, iface: Interface) -> None:
        for flows in (self.flows, self.flows6):
            dead = [d for d, e in flows.items() if e.out is iface]
            for d in dead:
                del flows[d]
            self.counters["invalidated"] += len(dead)
        self.update_active()

    def _iface_event(self, event: str, iface: Interface) -> None:
        if event in ("detach", "change"):
            self.invalidate_iface(iface)

    def render(self) -> str:
        import ipaddress

        return "".join(
            f"{ipaddress.IPv4Address(e.dst) if e.dst >> 32 == 0 else ipaddress.IPv6Address(e.dst)}"
            f" {e.out.name} {':'.join(f'{b:02x}' for b in e.mac)} mtu {e.mtu} hits {e.hits}\n"
            for e in (*self.flows.values(), *self.flows6.values()))

    # -- the default forwarder -----------------------------------------------------------
    def default_forward(self, iface: Interface, pkt: Packet) -> bool:
        """Forward a simple IPv4 packet by the cache; False → take the slow path."""
        c = self.counters
        data = pkt.data
        l3 = pkt.l3
        if data.readonly or len(data) < l3 + 20:
            c["miss_special"] += 1
            return False
        if data[l3] != 0x45:  # version 4, no options
            c["miss_options"] += 1
            return False
        dst = int.from_bytes(data[l3 + 16:l3 + 20], "big")
        e = self.flows.get(dst)
        if e is None:
            c["miss_noflow"] += 1
            return False
        ttl = data[l3 + 8]
        total = int.from_bytes(data[l3 + 2:l3 + 4], "big")
        frag = int.from_bytes(data[l3 + 6:l3 + 8], "big")
        out = e.out
        gso = pkt.gso_type
        if ttl <= 1 or frag & 0x3FFF or (total > e.mtu and not gso) or total > len(data) - l3 \
                or total < 20 or not out.flags & 0x1:
            c["miss_slowpath"] += 1  # ICMP errors, fragments, DF, bad lengths: IP's job
            return False
        # What the IP input path would drop must not be forwarded here either; it goes
        # there to be dropped and counted (ip.drop_bad_checksum, drop_bad_source, ...).
        # The header checksum: the 20 bytes as one integer; 2**16 = 1 (mod 0xFFFF), so
        # this is the ones'-complement sum of the 16-bit words, which a valid header
        # makes 0 mod 0xFFFF (the slow path's own test).
        if int.from_bytes(data[l3:l3 + 20], "big") % 0xFFFF:
            c["miss_bad_checksum"] += 1
            return False
        src0 = data[l3 + 12]
        if src0 >= 224 or src0 == 127:  # multicast, class E, broadcast or loopback source
            c["miss_bad_source"] += 1
            return False
        payload = data[l3:l3 + total]
        # A frame from a TAP/AF_PACKET peer with offloads on carries a partial L4
        # checksum, or is a TSO/USO super-segment: forwarded with its metadata. Segments
        # are cut to this flow's MTU (gso_size lowered); an out interface without the
        # offload finishes it in software (Interface.output → stack.l2.gso).
        meta = None
        if gso or pkt.csum_partial:
            meta = pkt.tx_meta(ETH_HLEN - l3)
            if meta is not None:
                if gso and not clamp_gso_size(meta, payload, e.mtu):
                    c["miss_slowpath"] += 1  # no segment fits: IP's job (and counters)
                    return False
                if not device_finishes(meta, out.offloads):
                    c["offload_sw"] += 1
        # RFC 1624 incremental update of the header checksum for TTL - 1
        data[l3 + 8] = ttl - 1
        s = int.from_bytes(data[l3 + 10:l3 + 12], "big") + 0x0100
        s = (s & 0xFFFF) + (s >> 16)
        data[l3 + 10:l3 + 12] = s.to_bytes(2, "big")
        e.hits += 1
        c["forwarded"] += 1
        hdr = e.mac + out.mac + b"\x08\x00"
        return self.stack.l2.output_frame(out, [hdr, payload], meta) or True

    def forward6(self, iface: Interface, pkt: Packet) -> bool:
        """Forward a simple IPv6 datagram by the cache; False → take the slow path."""
        c = self.counters
        data = pkt.data
        l3 = pkt.l3
        if data.readonly or len(data) < l3 + 40 or data[l3] >> 4 != 6:
            c["miss6_special"] += 1
            return False
        if data[l3 + 6] == 0:
            c["miss6_hbh"] += 1  # hop-by-hop options: every router must process them
            return False
        e = self.flows6.get(int.from_bytes(data[l3 + 24:l3 + 40], "big"))
        if e is None:
            c["miss6_noflow"] += 1
            return False
        hlim = data[l3 + 7]
        total = 40 + ((data[l3 + 4] << 8) | data[l3 + 5])
        out = e.out
        gso = pkt.gso_type
        if hlim <= 1 or (total > e.mtu and not gso) or total > len(data) - l3 \
                or not out.flags & 0x1:
            c["miss6_slowpath"] += 1  # Time Exceeded, Packet Too Big, bad lengths: IP's job
            return False
        s0 = data[l3 + 8]
        if s0 == 0xFF or (s0 == 0xFE and data[l3 + 9] & 0xC0 == 0x80) or \
                not any(data[l3 + 8:l3 + 23]):
            c["miss6_bad_source"] += 1  # multicast, link-local, ::, ::1: IP drops them
            return False
        payload = data[l3:l3 + total]
        meta = None
        if gso or pkt.csum_partial:
            meta = pkt.tx_meta(ETH_HLEN - l3)
            if meta is not None:
                if gso and not clamp_gso_size(meta, payload, e.mtu):
                    c["miss6_slowpath"] += 1
                    return False
                if not device_finishes(meta, out.offloads):
                    c["offload_sw"] += 1
        data[l3 + 7] = hlim - 1
        e.hits += 1
        c["forwarded6"] += 1
        return self.stack.l2.output_frame(out, [e.mac + out.mac + b"\x86\xdd", payload],
                                          meta) or True
