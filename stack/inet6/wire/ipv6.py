"""The IPv6 header and its extension-header chain (RFC 8200 §3-4).

``unpack_header`` reads the fixed 40 bytes; ``walk_chain`` follows the extension headers
from the first next-header value to the upper-layer protocol, returning what the layer
needs to decide (fragment fields, hop-by-hop/destination options, routing header), or a
``ChainError`` with the offset of the offending byte for a Parameter Problem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HLEN = 40

# next-header values (IANA "Assigned Internet Protocol Numbers")
NH_HOPOPTS = 0
NH_TCP = 6
NH_UDP = 17
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DSTOPTS = 60
NH_MOBILITY = 135

#: extension headers this layer walks through (RFC 8200 §4.1 order, plus AH's length form)
EXTENSION_HEADERS = frozenset({NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_DSTOPTS, NH_AH})

#: the longest extension-header chain walked before the datagram is refused (a chain of
#: thousands of empty options headers is an attack, RFC 7112 §5 / RFC 8504 §5.3)
MAX_CHAIN = 16

_HDR = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BBHI")

# Parameter Problem codes (RFC 4443 §3.4, RFC 7112)
PP_HEADER = 0       #: erroneous header field
PP_NEXT_HEADER = 1  #: unrecognized next header
PP_OPTION = 2       #: unrecognized IPv6 option
PP_INCOMPLETE_CHAIN = 3  #: first fragment has an incomplete header chain (RFC 7112)


def unpack_header(data: memoryview | bytes, off: int) -> tuple[int, int, int, int, int, int, int]:
    """(traffic class, flow label, payload length, next header, hop limit, src, dst)."""
    vtf, plen, nh, hlim, s, d = _HDR.unpack_from(data, off)
    return ((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim,
            int.from_bytes(s, "big"), int.from_bytes(d, "big"))


def pack_header(tclass: int, flow: int, plen: int, nh: int, hlim: int, src: int,
                dst: int) -> bytes:
    return _HDR.pack(0x60000000 | (tclass & 0xFF) << 20 | (flow & 0xFFFFF), plen, nh, hlim,
                     src.to_bytes(16, "big"), dst.to_bytes(16, "big"))


def pack_fragment(nh: int, offset: int, more: bool, ident: int) -> bytes:
    """The 8-byte fragment header; ``offset`` in bytes (a multiple of 8)."""
    return _FRAG.pack(nh, 0, offset | (1 if more else 0), ident)


@dataclass(slots=True)
class Chain:
    """What ``walk_chain`` found, offsets from the start of the IPv6 header."""

    proto: int = NH_NONE      #: the upper-layer protocol (or NH_NONE / an unknown value)
    l4: int = HLEN            #: where the upper-layer header starts
    frag_at: int = -1         #: the fragment header's offset (-1: none)
    frag_nh_at: int = -1      #: offset of the next-header byte that names the fragment header
    frag_offset: int = 0
    frag_more: bool = False
    frag_ident: int = 0
    hbh: bool = False         #: a hop-by-hop options header is present (router alert...)
    router_alert: bool = False
    routing_type: int = -1    #: the routing header's type (-1: none)
    segments_left: int = 0
    routing_at: int = -1
    unfragmentable_end: int = HLEN  #: end of the per-fragment part (before the fragment header)
    nh_at: int = 6            #: the next-header byte that names ``proto`` (Parameter Problem)


class ChainError(Exception):
    """A malformed chain: ``reason`` is the counter; ``code``/``pointer`` the Parameter
    Problem to send (code -1: drop silently)."""

    def __init__(self, reason: str, code: int = -1, pointer: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.pointer = pointer


def walk_chain(data: memoryview | bytes, off: int, total: int, nh: int) -> Chain:
    """Walk the extension headers of the datagram at ``data[off:off + total]`` whose fixed
    header says ``nh``. Options are checked (RFC 8200 §4.2: the two high bits of an
    unknown option's type say skip, discard, or discard and report)."""
    ch = Chain()
    pos = HLEN
    nh_at = 6  # the next-header byte that names the header at ``pos``
    seen = 0
    while nh in EXTENSION_HEADERS:
        seen += 1
        if seen > MAX_CHAIN:
            raise ChainError("drop_chain_too_long")
        if nh == NH_HOPOPTS and pos != HLEN:
            # RFC 8200 §4.1: hop-by-hop only right after the fixed header
            raise ChainError("drop_hbh_not_first", PP_NEXT_HEADER, nh_at)
        if pos + 8 > total:
            raise ChainError("drop_truncated_chain", PP_INCOMPLETE_CHAIN if ch.frag_at >= 0 else -1)
        b = off + pos
        if nh == NH_FRAGMENT:
            if ch.frag_at >= 0:
                raise ChainError("drop_two_fragment_headers", PP_NEXT_HEADER, nh_at)
            nxt, _, offm, ident = _FRAG.unpack_from(data, b)
            ch.frag_at = pos
            ch.frag_nh_at = nh_at
            ch.frag_offset = offm & 0xFFF8
            ch.frag_more = bool(offm & 1)
            ch.frag_ident = ident
            ch.unfragmentable_end = pos
            hlen = 8
            if ch.frag_offset:
                # not the first fragment: the rest is payload, not headers
                ch.nh_at = pos
                ch.proto = nxt
                ch.l4 = pos + hlen
                return ch
        elif nh == NH_AH:
            nxt = data[b]
            hlen = (data[b + 1] + 2) * 4
        else:
            nxt = data[b]
            hlen = (data[b + 1] + 1) * 8
        if pos + hlen > total:
            # RFC 7112 §5: an incomplete chain in a first fragment, pointer 0
            if ch.frag_at >= 0:
                raise ChainError("drop_truncated_chain", PP_INCOMPLETE_CHAIN, 0)
            raise ChainError("drop_truncated_chain", PP_HEADER, nh_at)
        if nh in (NH_HOPOPTS, NH_DSTOPTS):
            _check_options(data, b, hlen, pos, ch, nh == NH_HOPOPTS)
        elif nh == NH_ROUTING:
            ch.routing_type = data[b + 2]
            ch.segments_left = data[b + 3]
            ch.routing_at = pos
        if ch.frag_at < 0 and nh != NH_FRAGMENT:
            if nh in (NH_HOPOPTS, NH_ROUTING) or (nh == NH_DSTOPTS and nxt == NH_ROUTING):
                ch.unfragmentable_end = pos + hlen
        nh_at = pos
        pos += hlen
        nh = nxt
    ch.proto = nh
    ch.l4 = pos
    ch.nh_at = nh_at
    return ch


def _check_options(data: memoryview | bytes, b: int, hlen: int, pos: int, ch: Chain,
                   hbh: bool) -> None:
    if hbh:
        ch.hbh = True
    i = 2
    while i < hlen:
        t = data[b + i]
        if t == 0:  # Pad1
            i += 1
            continue
        if i + 2 > hlen:
            raise ChainError("drop_bad_option", PP_HEADER, pos + i)
        ln = data[b + i + 1]
        if i + 2 + ln > hlen:
            raise ChainError("drop_bad_option", PP_HEADER, pos + i + 1)
        if t == 1:  # PadN
            pass
        elif t == 5 and hbh:  # router alert (RFC 2711): MLD carries it
            ch.router_alert = True
        elif t == 0xC2 and hbh:  # jumbo payload: not supported here
            raise ChainError("drop_jumbo", PP_HEADER, pos + i)
        else:
            action = t >> 6
            if action == 1:
                raise ChainError("drop_unknown_option")
            if action in (2, 3):
                # 3: not when the destination was multicast; the caller decides
                raise ChainError("drop_unknown_option", PP_OPTION if action == 2 else -2,
                                 pos + i)
        i += 2 + ln


def upper_layer(data: memoryview | bytes, off: int, total: int, nh: int) -> tuple[int, int, int]:
    """A filter's walk (pf): the upper-layer protocol past the extension headers, by their
    lengths only (options are the IPv6 layer's business). Returns (protocol, its offset
    from the IPv6 header, fragment: -1 none, 0 the first fragment, 1 a later one, whose
    offset is the fragment's data). Raises ``ChainError`` for a chain longer than
    ``MAX_CHAIN`` or running past ``total`` bytes."""
    pos = HLEN
    frag = -1
    seen = 0
    while nh in EXTENSION_HEADERS:
        seen += 1
        if seen > MAX_CHAIN:
            raise ChainError("drop_chain_too_long")
        if pos + 8 > total:
            raise ChainError("drop_truncated_chain")
        b = off + pos
        nxt = data[b]
        if nh == NH_FRAGMENT:
            if frag >= 0:
                raise ChainError("drop_two_fragment_headers")
            if (data[b + 2] << 8 | data[b + 3]) & 0xFFF8:
                return nxt, pos + 8, 1
            frag = 0
            hlen = 8
        elif nh == NH_AH:
            hlen = (data[b + 1] + 2) * 4
        else:
            hlen = (data[b + 1] + 1) * 8
        if pos + hlen > total:
            raise ChainError("drop_truncated_chain")
        pos += hlen
        nh = nxt
    return nh, pos, frag
