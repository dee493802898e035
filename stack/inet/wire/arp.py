"""ARP for IPv4 over Ethernet (RFC 826): parse in place, emit."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.inet.wire import ParseError
from stack.packet import Buffer

LEN = 28
HTYPE_ETHER = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2

_ARP = struct.Struct("!HHBBH6sI6sI")


@dataclass(slots=True)
class ArpPacket:
    op: int = OP_REQUEST
    sha: bytes = b"\0" * 6
    spa: int = 0
    tha: bytes = b"\0" * 6
    tpa: int = 0

    def emit(self) -> bytes:
        return _ARP.pack(HTYPE_ETHER, PTYPE_IPV4, 6, 4, self.op, self.sha, self.spa,
                         self.tha, self.tpa)


def build(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    return _ARP.pack(HTYPE_ETHER, PTYPE_IPV4, 6, 4, op, sha, spa, tha, tpa)


def parse(buf: Buffer) -> ArpPacket:
    """Decode an Ethernet/IPv4 ARP packet (trailing padding allowed)."""
    if len(buf) < LEN:
        raise ParseError("drop_truncated", f"ARP of {len(buf)} bytes")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf)
    if htype != HTYPE_ETHER or hlen != 6:
        raise ParseError("drop_bad_hwtype", f"htype {htype} hlen {hlen}")
    if ptype != PTYPE_IPV4 or plen != 4:
        raise ParseError("drop_bad_proto", f"ptype {ptype:#x} plen {plen}")
    if op not in (OP_REQUEST, OP_REPLY):
        raise ParseError("drop_bad_op", f"op {op}")
    return ArpPacket(op, sha, spa, tha, tpa)
