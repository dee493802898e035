"""Software segmentation and checksum offload (Linux's GSO): finish in Python what a
frame's ``TxMeta`` asks of a device that cannot do it.

A TAP or AF_PACKET peer with offloads on hands the stack 64 KB TCP super-segments (TSO /
GRO, ``gso_type`` + ``gso_size``), UDP super-segments (USO, ``GSO_UDP_L4``) and frames
whose L4 checksum holds only the pseudo-header sum (``needs_csum``). Forwarded (fast path,
IPv4 forwarding) or bridged, such a frame keeps its metadata; when the out interface
lacks the offload (``device_finishes`` is False), ``Interface.output`` calls ``segment``
here and sends the wire-ready frames it returns, the way Linux's ``validate_xmit_skb``
runs ``skb_gso_segment`` / ``skb_checksum_help`` for a device without the feature.

What ``segment`` does, by ``TxMeta.gso_type`` (IPv4; TCP over IPv6 too, for bridges):

* none: the partial checksum at ``csum_start + csum_offset`` is completed (the field
  holds the pseudo-header sum; the sum runs from ``csum_start`` to the end of the IP
  datagram; a UDP checksum of 0 is sent as 0xFFFF).
* ``GSO_TCPV4`` / ``GSO_TCPV6``: the payload is cut into segments of
  ``min(gso_size, mtu - IP header - TCP header)`` bytes; each gets a copy of the headers
  with its sequence number, IPv4 total length / IPv6 payload length, IPv4 id (first id +
  i), IPv4 header checksum and a full TCP checksum. FIN and PSH stay on the last segment
  only, CWR on the first only (as ``tcp_gso_segment``); URG stays on the segments the
  urgent pointer still points past, with the pointer made relative to each.
* ``GSO_UDP_L4`` (USO, UDP_SEGMENT): ``gso_size``-byte datagrams (at most what the MTU
  allows), each its own UDP header, length, checksum and IPv4 id.
* ``GSO_UDP`` (UFO): one UDP datagram, checksummed whole, then IP-fragmented to the MTU
  (8-byte aligned fragments, MF on all but the last, options without the copy flag only
  in the first, DF cleared: the sender asked for fragmentation).

The returned frames are lists of buffers: a new header buffer (Ethernet prefix, VLAN
tags included, + IP + L4 headers) and a ``memoryview`` slice of the original payload,
never copied. Malformed input raises ``GsoError`` (its ``reason`` names the counter).
"""

from __future__ import annotations

from collections.abc import Sequence

from stack.csum import raw_sum
from stack.packet import GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, Buffer, TxMeta

#: the offload (``Interface.offloads`` name) a device needs for each gso type
GSO_FEATURE = {GSO_TCPV4: "tso4", GSO_TCPV6: "tso6", GSO_UDP: "ufo", GSO_UDP_L4: "uso"}

ETH_HLEN = 14
_VLAN_TYPES = (0x8100, 0x88A8)
TCP_FIN, TCP_PSH, TCP_URG, TCP_CWR = 0x01, 0x08, 0x20, 0x80
#: the smallest segment payload we cut to (below it the MTU cannot carry the headers)
MIN_SEGMENT = 8


class GsoError(ValueError):
    """A frame software offload cannot handle; ``reason`` is the counter suffix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def device_finishes(meta: TxMeta, offloads: set[str] | frozenset[str]) -> bool:
    """True when a device with ``offloads`` can do what ``meta`` asks."""
    if meta.gso_type and GSO_FEATURE.get(meta.gso_type) not in offloads:
        return False
    return not (meta.needs_csum and "csum" not in offloads)


def _sum(b: Buffer) -> int:
    """Ones'-complement sum of ``b`` (16-bit big-endian words, odd end zero-padded),
    mod 0xFFFF (2**16 == 1 mod 0xFFFF, so one big integer does it)."""
    v = int.from_bytes(b, "big")
    if len(b) & 1:
        v <<= 8
    return v % 0xFFFF


def _fold(s: int) -> int:
    """The checksum field for data (field zeroed) whose sum mod 0xFFFF is ``s``: 0
    stands for a sum of 0xFFFF (never all-zero data here: every caller adds a pseudo
    header or an IP header with its version)."""
    s %= 0xFFFF
    return 0xFFFF - s if s else 0



def complete_csum(payload: Sequence[Buffer], meta: TxMeta) -> list[Buffer]:
    """Finish a CHECKSUM_PARTIAL transport checksum in software (Linux's
    ``skb_checksum_help``) over a datagram's payload: ``meta.csum_start`` and
    ``csum_offset`` are relative to the first payload byte (the transport header); the
    field holds the pseudo-header sum, the data from ``csum_start`` on is folded in. The
    IP layer calls this before fragmenting, or when the out interface lacks "csum". A
    sum of 0 is written 0xFFFF (UDP's "no checksum" never appears). Only the buffer
    holding the field is copied (two when the field straddles them)."""
    bufs = list(payload)
    flat_views: list[memoryview] = []
    pos = 0
    start = meta.csum_start
    for b in bufs:
        v = memoryview(b)
        if pos + len(v) > start:
            flat_views.append(v[max(0, start - pos):])
        pos += len(v)
    s = raw_sum(flat_views)
    csum = 0xFFFF - s if s else 0xFFFF
    # the checksum field is complemented sum of data incl. the pseudo sum already in it
    at = start + meta.csum_offset
    pos = 0
    for i, b in enumerate(bufs):
        if pos <= at < pos + len(b):
            writable = b if isinstance(b, bytearray) else bytearray(b)
            k = at - pos
            if k + 1 < len(writable):
                writable[k:k + 2] = csum.to_bytes(2, "big")
                bufs[i] = writable
                break
            # the field straddles two buffers: join them (rare)
            joined = bytearray(b) + bytearray(bufs[i + 1])
            joined[k:k + 2] = csum.to_bytes(2, "big")
            bufs[i:i + 2] = [joined]
            break
        pos += len(b)
    return bufs


def l3_offset(frame: Buffer) -> int:
    """Offset of the network header in an Ethernet frame (802.1Q/802.1ad tags skipped)."""
    off = 12
    n = len(frame)
    while True:
        if n < off + 2:
            raise GsoError("runt")
        et = (frame[off] << 8) | frame[off + 1]
        if et not in _VLAN_TYPES:
            return off + 2
        off += 4


def max_segment(ip: Buffer, gso_type: int, mtu: int) -> int:
    """The largest ``gso_size`` whose segments of this datagram (``ip`` starts at the IP
    header) fit ``mtu``: mtu - IP header - L4 header (TCP, UDP_L4), mtu - IP header
    (UFO, per fragment). 0 when the headers cannot be read or leave no room."""
    try:
        v = ip[0] >> 4
        ihl = (ip[0] & 15) * 4 if v == 4 else 40
        if gso_type in (GSO_TCPV4, GSO_TCPV6):
            room = mtu - ihl - (ip[ihl + 12] >> 4) * 4
        elif gso_type == GSO_UDP_L4:
            room = mtu - ihl - 8
        elif gso_type == GSO_UDP:
            room = (mtu - ihl) & ~7
        else:
            return 0
    except IndexError:
        return 0
    return room if room >= MIN_SEGMENT else 0


def clamp_gso_size(meta: TxMeta, ip: Buffer, mtu: int) -> bool:
    """Lower ``meta.gso_size`` so the segments of datagram ``ip`` fit ``mtu`` (a device
    doing TSO for us then cuts to the out MTU, not the in link's). False when no
    segment size fits (the caller drops or takes the slow path)."""
    if meta.gso_type not in GSO_FEATURE:
        return True  # not ours to judge: the device, or segment() (gso_type_unknown)
    room = max_segment(ip, meta.gso_type, mtu)
    if not room:
        return False
    if not 0 < meta.gso_size <= room:
        meta.gso_size = room
    return True


def split_frame(bufs: Sequence[Buffer]) -> tuple[bytes, memoryview]:
    """(Ethernet prefix, IP datagram view) of a frame given as buffers. The usual output
    shape (a header buffer, then the datagram) costs no copy; anything else is joined."""
    first = bufs[0]
    if len(bufs) == 2 and len(first) >= ETH_HLEN:
        try:
            l3 = l3_offset(first)
        except GsoError:
            l3 = -1
        if l3 == len(first):
            return bytes(first), memoryview(bufs[1])
    frame = memoryview(bufs[0] if len(bufs) == 1 else b"".join(bufs))
    l3 = l3_offset(frame)
    return bytes(frame[:l3]), frame[l3:]


def segment(bufs: Sequence[Buffer], meta: TxMeta, mtu: int) -> list[list[Buffer]]:
    """Frames (each a list of buffers) that a device without offloads can send for the
    frame ``bufs`` and its ``meta`` (gso and/or partial checksum; offsets from the start
    of the frame) on a link of ``mtu``."""
    prefix, ip = split_frame(bufs)
    return segment_ip(prefix, ip, meta, mtu)


def segment_ip(prefix: bytes, ip: memoryview, meta: TxMeta, mtu: int) -> list[list[Buffer]]:
    """``segment`` for a datagram ``ip`` behind the link-layer header ``prefix``."""
    if len(ip) < 20:
        raise GsoError("runt")
    v = ip[0] >> 4
    if v == 4:
        ihl = (ip[0] & 15) * 4
        total = (ip[2] << 8) | ip[3]
        if ihl < 20 or total < ihl or total > len(ip):
            raise GsoError("bad_ip_header")
        proto = ip[9]
    elif v == 6:
        if len(ip) < 40:
            raise GsoError("runt")
        ihl = 40
        total = 40 + ((ip[4] << 8) | ip[5])
        if total > len(ip):
            raise GsoError("bad_ip_header")
        proto = ip[6]
    else:
        raise GsoError("not_ip")
    ip = ip[:total]  # no link-layer padding
    gt = meta.gso_type
    if gt == GSO_NONE:
        if not meta.needs_csum:
            return [[prefix, ip]]
        return [_complete(prefix, ip, meta.csum_start - len(prefix), meta.csum_offset, proto)]
    if gt in (GSO_TCPV4, GSO_TCPV6):
        if proto != 6 or v != (4 if gt == GSO_TCPV4 else 6):
            raise GsoError("gso_type_mismatch")
        return _tcp(prefix, ip, v, ihl, meta.gso_size, mtu)
    if gt == GSO_UDP_L4:
        if proto != 17:
            raise GsoError("gso_type_mismatch")
        return _udp_l4(prefix, ip, v, ihl, meta.gso_size, mtu)
    if gt == GSO_UDP:
        if proto != 17 or v != 4:
            raise GsoError("gso_type_mismatch")
        return _ufo(prefix, ip, ihl, meta.gso_size, mtu)
    raise GsoError("gso_type_unknown")


def _complete(prefix: bytes, ip: memoryview, start: int, offset: int,
              proto: int) -> list[Buffer]:
    """Complete a partial checksum: the field holds the pseudo-header sum; store the
    complement of the sum from ``start`` (relative to ``ip``) to the end."""
    at = start + offset
    if start < 0 or at + 2 > len(ip):
        raise GsoError("bad_csum_offset")
    value = _fold(_sum(ip[start:]))
    if value == 0 and proto == 17:
        value = 0xFFFF  # UDP: 0 means "no checksum"
    head = bytearray(prefix)
    head += ip[:at]
    head += value.to_bytes(2, "big")
    rest = ip[at + 2:]
    return [head, rest] if len(rest) else [head]


def _pseudo_addrs(ip: memoryview, v: int) -> int:
    """Sum of the pseudo header's addresses (mod 0xFFFF)."""
    return _sum(ip[12:20]) if v == 4 else _sum(ip[8:40])


def _ip_csum(h: bytearray) -> None:
    """Fill in the IPv4 header checksum of ``h`` (header at 0, field zeroed first)."""
    h[10] = h[11] = 0
    c = _fold(_sum(h[:(h[0] & 15) * 4]))
    h[10] = c >> 8
    h[11] = c & 0xFF


def _cut(payload: memoryview, seg: int) -> list[memoryview]:
    return [payload[o:o + seg] for o in range(0, len(payload), seg)] or [payload[:0]]


def _tcp(prefix: bytes, ip: memoryview, v: int, ihl: int, gso_size: int,
         mtu: int) -> list[list[Buffer]]:
    l4 = ihl
    if len(ip) < l4 + 20:
        raise GsoError("runt")
    thl = (ip[l4 + 12] >> 4) * 4
    hl = l4 + thl
    if thl < 20 or hl > len(ip):
        raise GsoError("bad_tcp_header")
    room = mtu - hl
    if room < MIN_SEGMENT:
        raise GsoError("mtu_too_small")
    mss = gso_size if 0 < gso_size <= room else room
    payload = ip[hl:]
    chunks = _cut(payload, mss)
    tmpl = bytearray(ip[:hl])
    tmpl[l4 + 16] = tmpl[l4 + 17] = 0
    seq0 = int.from_bytes(tmpl[l4 + 4:l4 + 8], "big")
    flags0 = tmpl[l4 + 13]
    urp0 = (tmpl[l4 + 18] << 8) | tmpl[l4 + 19]
    ident0 = (tmpl[4] << 8) | tmpl[5]
    addrs = _pseudo_addrs(ip, v)
    last = len(chunks) - 1
    out: list[list[Buffer]] = []
    off = 0
    for i, chunk in enumerate(chunks):
        h = bytearray(tmpl)
        seglen = thl + len(chunk)
        if v == 4:
            tot = ihl + seglen
            h[2], h[3] = tot >> 8, tot & 0xFF
            ident = (ident0 + i) & 0xFFFF
            h[4], h[5] = ident >> 8, ident & 0xFF
            _ip_csum(h)
        else:
            h[4], h[5] = seglen >> 8, seglen & 0xFF
        h[l4 + 4:l4 + 8] = ((seq0 + off) & 0xFFFFFFFF).to_bytes(4, "big")
        fl = flags0
        if i != last:
            fl &= ~(TCP_FIN | TCP_PSH)
        if i:
            fl &= ~TCP_CWR
        if fl & TCP_URG:
            urp = urp0 - off
            if urp > 0:
                h[l4 + 18], h[l4 + 19] = urp >> 8, urp & 0xFF
            else:  # the urgent data ended before this segment
                fl &= ~TCP_URG
                h[l4 + 18] = h[l4 + 19] = 0
        h[l4 + 13] = fl
        c = _fold(addrs + 6 + seglen + _sum(h[l4:]) + _sum(chunk))
        h[l4 + 16], h[l4 + 17] = c >> 8, c & 0xFF
        out.append([prefix + h, chunk] if len(chunk) else [prefix + h])
        off += len(chunk)
    return out


def _udp_l4(prefix: bytes, ip: memoryview, v: int, ihl: int, gso_size: int,
            mtu: int) -> list[list[Buffer]]:
    l4 = ihl
    hl = l4 + 8
    if len(ip) < hl:
        raise GsoError("runt")
    room = mtu - hl
    if room < MIN_SEGMENT:
        raise GsoError("mtu_too_small")
    seg = gso_size if 0 < gso_size <= room else room
    chunks = _cut(ip[hl:], seg)
    tmpl = bytearray(ip[:hl])
    tmpl[l4 + 6] = tmpl[l4 + 7] = 0
    ident0 = (tmpl[4] << 8) | tmpl[5]
    addrs = _pseudo_addrs(ip, v)
    out: list[list[Buffer]] = []
    for i, chunk in enumerate(chunks):
        h = bytearray(tmpl)
        ulen = 8 + len(chunk)
        h[l4 + 4], h[l4 + 5] = ulen >> 8, ulen & 0xFF
        if v == 4:
            tot = ihl + ulen
            h[2], h[3] = tot >> 8, tot & 0xFF
            ident = (ident0 + i) & 0xFFFF
            h[4], h[5] = ident >> 8, ident & 0xFF
            _ip_csum(h)
        else:
            h[4], h[5] = ulen >> 8, ulen & 0xFF
        c = _fold(addrs + 17 + ulen + _sum(h[l4:]) + _sum(chunk)) or 0xFFFF
        h[l4 + 6], h[l4 + 7] = c >> 8, c & 0xFF
        out.append([prefix + h, chunk] if len(chunk) else [prefix + h])
    return out



def _ufo(prefix: bytes, ip: memoryview, ihl: int, gso_size: int,
         mtu: int) -> list[list[Buffer]]:
    l4 = ihl
    if len(ip) < l4 + 8:
        raise GsoError("runt")
    if (ip[6] & 0x3F) or ip[7]:
        raise GsoError("already_fragmented")
    # the whole datagram's UDP checksum, from scratch (whatever the field held)
    udp = bytearray(ip[l4:l4 + 8])
    udp[6] = udp[7] = 0
    body = ip[l4 + 8:]
    ulen = 8 + len(body)
    udp[4], udp[5] = ulen >> 8, ulen & 0xFF
    c = _fold(_pseudo_addrs(ip, 4) + 17 + ulen + _sum(udp) + _sum(body)) or 0xFFFF
    udp[6], udp[7] = c >> 8, c & 0xFF
    first_room = (mtu - ihl) & ~7
    if first_room < MIN_SEGMENT:
        raise GsoError("mtu_too_small")
    frag = first_room if not 0 < gso_size < first_room else gso_size & ~7
    if frag < MIN_SEGMENT:
        frag = first_room
    # imported here: the IP package imports layer 2 (UFO with options is rare)
    from stack.inet.wire.ipv4 import copied_options

    opts = copied_options(ip[20:ihl]) if ihl > 20 else b""
    data = ip[l4:]  # the UDP header (from ``udp``) + body, as fragment payload
    out: list[list[Buffer]] = []
    off = 0
    n = len(data)
    while off < n:
        hlen = ihl if off == 0 else 20 + len(opts)
        room = frag if off == 0 else ((mtu - hlen) & ~7 if frag == first_room else frag)
        take = min(room, n - off)
        more = off + take < n
        h = bytearray(ip[:20]) + (ip[20:ihl] if off == 0 else opts)
        h[0] = 0x40 | (len(h) >> 2)
        tot = len(h) + take
        h[2], h[3] = tot >> 8, tot & 0xFF
        fo = (0x2000 if more else 0) | (off >> 3)
        h[6], h[7] = fo >> 8, fo & 0xFF
        _ip_csum(h)
        if off == 0:
            out.append([prefix + h + udp, data[8:take]] if take > 8 else [prefix + h + udp])
        else:
            out.append([prefix + h, data[off:off + take]])
        off += take
    return out
