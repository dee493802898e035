"""ICMP for IPv4 (RFC 792, RFC 1191 next-hop MTU): parse in place, emit with checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.inet.wire import ParseError, checksum, raw_sum
from stack.packet import Buffer

HLEN = 8

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14

# destination unreachable codes
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_NEEDFRAG = 4
UNREACH_SRCFAIL = 5
UNREACH_NET_PROHIB = 9
UNREACH_HOST_PROHIB = 10
UNREACH_ADMIN_PROHIB = 13

# time exceeded codes
TIMXCEED_INTRANS = 0
TIMXCEED_REASS = 1

#: types that are errors (they quote an IP header)
ERROR_TYPES = frozenset({DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM})

_HDR = struct.Struct("!BBHI")
_ECHO = struct.Struct("!BBHHH")

UNREACH_TEXT = {
    UNREACH_NET: "Destination Net Unreachable",
    UNREACH_HOST: "Destination Host Unreachable",
    UNREACH_PROTOCOL: "Destination Protocol Unreachable",
    UNREACH_PORT: "Destination Port Unreachable",
    UNREACH_NEEDFRAG: "Frag needed and DF set",
    UNREACH_SRCFAIL: "Source Route Failed",
    UNREACH_NET_PROHIB: "Destination Net Prohibited",
    UNREACH_HOST_PROHIB: "Destination Host Prohibited",
    UNREACH_ADMIN_PROHIB: "Communication Administratively Prohibited",
}


def describe(icmp_type: int, code: int) -> str:
    """The Linux ping wording for an ICMP error."""
    if icmp_type == DEST_UNREACH:
        return UNREACH_TEXT.get(code, f"Dest Unreachable, Bad Code: {code}")
    if icmp_type == TIME_EXCEEDED:
        return "Time to live exceeded" if code == 0 else "Frag reassembly time exceeded"
    if icmp_type == PARAM_PROBLEM:
        return "Parameter problem"
    if icmp_type == REDIRECT:
        return "Redirect"
    if icmp_type == SOURCE_QUENCH:
        return "Source Quench"
    return f"ICMP type {icmp_type} code {code}"


@dataclass(slots=True)
class IcmpHeader:
    """The fixed 8 bytes. ``rest`` is the second word: ident<<16|seq for echo, the
    next-hop MTU (low 16 bits) for frag-needed, the gateway for redirect, 0 otherwise."""

    type: int = ECHO_REQUEST
    code: int = 0
    rest: int = 0
    checksum: int = 0

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        return self.rest & 0xFFFF

    def emit(self, payload: Buffer = b"") -> bytes:
        """Header + payload with the checksum filled in (copies the payload: ICMP
        payloads are small; use ``build_header`` to keep them separate)."""
        hdr = build_header(self.type, self.code, self.rest, (payload,))
        self.checksum = int.from_bytes(hdr[2:4], "big")
        return hdr + bytes(payload)


def build_header(icmp_type: int, code: int, rest: int, payload: list[Buffer] | tuple[Buffer, ...]) -> bytes:
    """The 8-byte header whose checksum covers ``payload`` (kept as separate buffers)."""
    hdr = _HDR.pack(icmp_type, code, 0, rest)
    c = checksum([hdr, *payload])
    return hdr[:2] + c.to_bytes(2, "big") + hdr[4:]


def parse(buf: Buffer, *, verify: bool = True) -> IcmpHeader:
    """Decode the header at the start of ``buf`` (the whole ICMP message)."""
    if len(buf) < HLEN:
        raise ParseError("drop_truncated", f"ICMP message of {len(buf)} bytes")
    t, c, csum, rest = _HDR.unpack_from(buf)
    if verify and raw_sum((buf,)) != 0:
        raise ParseError("drop_bad_checksum")
    return IcmpHeader(t, c, rest, csum)
