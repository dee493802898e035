"""ICMPv6 (RFC 4443), Neighbor Discovery (RFC 4861, with RDNSS/DNSSL of RFC 8106) and
MLDv2 (RFC 3810) message formats.

Every ICMPv6 message is checksummed over the IPv6 pseudo header (``checksum6``). ND
messages are parsed into small dataclasses with their options (``parse_options``); the
emitters return the ICMPv6 message with its checksum filled for a given (src, dst).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from stack.addr import pseudo_header_sum
from stack.csum import raw_sum
from stack.inet.wire import ParseError
from stack.packet import Buffer

NH_ICMPV6 = 58

# error types (RFC 4443 §3)
DEST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
# informational
ECHO_REQUEST = 128
ECHO_REPLY = 129
MLD_QUERY = 130
MLD_REPORT_V1 = 131
MLD_DONE = 132
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137
MLD_REPORT_V2 = 143

ERROR_TYPES = frozenset({DEST_UNREACH, PACKET_TOO_BIG, TIME_EXCEEDED, PARAM_PROBLEM})
ND_TYPES = frozenset({ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT,
                      REDIRECT})

# destination unreachable codes (RFC 4443 §3.1)
UNREACH_NOROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYONDSCOPE = 2
UNREACH_ADDR = 3
UNREACH_PORT = 4
UNREACH_POLICY = 5
UNREACH_REJECT = 6
# time exceeded codes
TIMXCEED_HOPLIMIT = 0
TIMXCEED_REASS = 1

# ND option types
OPT_SLLA = 1
OPT_TLLA = 2
OPT_PREFIX = 3
OPT_REDIRECTED = 4
OPT_MTU = 5
OPT_RDNSS = 25
OPT_DNSSL = 31

# NA flags
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
# RA flags
RA_MANAGED = 0x80
RA_OTHER = 0x40
# prefix information flags
PI_ONLINK = 0x80
PI_AUTO = 0x40

INFINITE = 0xFFFFFFFF

# MLDv2 record types (RFC 3810 §5.2.12)
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4
ALLOW_NEW_SOURCES = 5
BLOCK_OLD_SOURCES = 6


def checksum6(src: int, dst: int, bufs: Sequence[Buffer]) -> int:
    """The ICMPv6 checksum field for a message whose checksum field is zero."""
    n = 0
    for b in bufs:
        n += len(b)
    s = raw_sum(bufs, pseudo_header_sum(src, dst, NH_ICMPV6, n) % 0xFFFF)
    return 0xFFFF - s if s else 0xFFFF


def verify6(src: int, dst: int, msg: Buffer) -> bool:
    return raw_sum((msg,), pseudo_header_sum(src, dst, NH_ICMPV6, len(msg)) % 0xFFFF) == 0


def finish(src: int, dst: int, msg: bytearray) -> bytes:
    """Fill the checksum of ``msg`` (an ICMPv6 message, checksum field zero)."""
    msg[2:4] = checksum6(src, dst, (msg,)).to_bytes(2, "big")
    return bytes(msg)


def build(icmp_type: int, code: int, rest: int, body: Sequence[Buffer], src: int,
          dst: int) -> bytes:
    """The 8-byte header (type, code, checksum, 4 bytes ``rest``) of a message whose body
    is ``body``, checksum over header and body."""
    hdr = bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest & 0xFFFFFFFF))
    hdr[2:4] = checksum6(src, dst, (hdr, *body)).to_bytes(2, "big")
    return bytes(hdr)


# -- ND options ------------------------------------------------------------------------
@dataclass(slots=True)
class PrefixInfo:
    plen: int
    flags: int
    valid: int
    preferred: int
    prefix: int

    @property
    def onlink(self) -> bool:
        return bool(self.flags & PI_ONLINK)

    @property
    def autonomous(self) -> bool:
        return bool(self.flags & PI_AUTO)


@dataclass(slots=True)
class NdOptions:
    slla: bytes | None = None
    tlla: bytes | None = None
    mtu: int | None = None
    prefixes: list[PrefixInfo] = field(default_factory=list)
    rdnss: list[tuple[int, int]] = field(default_factory=list)  #: (lifetime, address)
    dnssl: list[tuple[int, list[str]]] = field(default_factory=list)
    redirected: bytes | None = None


def parse_options(buf: memoryview | bytes) -> NdOptions:
    """ND options (RFC 4861 §4.6): a zero length is invalid (the message is dropped)."""
    o = NdOptions()
    i = 0
    n = len(buf)
    while i < n:
        if i + 2 > n:
            raise ParseError("drop_bad_option")
        t = buf[i]
        ln = buf[i + 1] * 8
        if ln == 0 or i + ln > n:
            raise ParseError("drop_bad_option")
        v = buf[i:i + ln]
        if t == OPT_SLLA and ln >= 8:
            o.slla = bytes(v[2:8])
        elif t == OPT_TLLA and ln >= 8:
            o.tlla = bytes(v[2:8])
        elif t == OPT_MTU and ln == 8:
            o.mtu = int.from_bytes(v[4:8], "big")
        elif t == OPT_PREFIX:
            if ln != 32:
                raise ParseError("drop_bad_option")
            o.prefixes.append(PrefixInfo(v[2], v[3], int.from_bytes(v[4:8], "big"),
                                         int.from_bytes(v[8:12], "big"),
                                         int.from_bytes(v[16:32], "big")))
        elif t == OPT_RDNSS:
            if ln < 24:
                raise ParseError("drop_bad_option")
            life = int.from_bytes(v[4:8], "big")
            for j in range(8, ln - 15, 16):
                o.rdnss.append((life, int.from_bytes(v[j:j + 16], "big")))
        elif t == OPT_DNSSL:
            life = int.from_bytes(v[4:8], "big")
            o.dnssl.append((life, _names(bytes(v[8:ln]))))
        elif t == OPT_REDIRECTED:
            o.redirected = bytes(v[8:ln])
        i += ln
    return o


def _names(b: bytes) -> list[str]:
    """DNSSL's uncompressed domain names (RFC 8106 §5.2), padding ignored."""
    out: list[str] = []
    labels: list[str] = []
    i = 0
    while i < len(b):
        ln = b[i]
        i += 1
        if ln == 0:
            if labels:
                out.append(".".join(labels))
                labels = []
            continue
        if ln > 63 or i + ln > len(b):
            break
        labels.append(b[i:i + ln].decode("ascii", "replace"))
        i += ln
    return out


def opt_lla(kind: int, mac: bytes) -> bytes:
    return bytes((kind, 1)) + mac


def opt_mtu(mtu: int) -> bytes:
    return struct.pack("!BBHI", OPT_MTU, 1, 0, mtu)


def opt_prefix(prefix: int, plen: int, flags: int, valid: int, preferred: int) -> bytes:
    return struct.pack("!BBBBII4x16s", OPT_PREFIX, 4, plen, flags, valid, preferred,
                       prefix.to_bytes(16, "big"))


def opt_rdnss(lifetime: int, servers: Sequence[int]) -> bytes:
    return struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(servers), 0, lifetime) + \
        b"".join(s.to_bytes(16, "big") for s in servers)


# -- ND messages ------------------------------------------------------------------------
def parse_ns(msg: memoryview) -> tuple[int, NdOptions]:
    """Neighbor Solicitation: (target, options)."""
    if len(msg) < 24:
        raise ParseError("drop_truncated")
    return int.from_bytes(msg[8:24], "big"), parse_options(msg[24:])


def parse_na(msg: memoryview) -> tuple[int, int, NdOptions]:
    """Neighbor Advertisement: (flags, target, options)."""
    if len(msg) < 24:
        raise ParseError("drop_truncated")
    return msg[4], int.from_bytes(msg[8:24], "big"), parse_options(msg[24:])


@dataclass(slots=True)
class RouterAdvert:
    hop_limit: int
    flags: int
    lifetime: int
    reachable: int
    retrans: int
    options: NdOptions


def parse_ra(msg: memoryview) -> RouterAdvert:
    if len(msg) < 16:
        raise ParseError("drop_truncated")
    return RouterAdvert(msg[4], msg[5], int.from_bytes(msg[6:8], "big"),
                        int.from_bytes(msg[8:12], "big"), int.from_bytes(msg[12:16], "big"),
                        parse_options(msg[16:]))


def parse_redirect(msg: memoryview) -> tuple[int, int, NdOptions]:
    """Redirect: (target, destination, options)."""
    if len(msg) < 40:
        raise ParseError("drop_truncated")
    return (int.from_bytes(msg[8:24], "big"), int.from_bytes(msg[24:40], "big"),
            parse_options(msg[40:]))


def ns(src: int, dst: int, target: int, slla: bytes | None) -> bytes:
    m = bytearray(struct.pack("!BBHI16s", NEIGHBOR_SOLICIT, 0, 0, 0, target.to_bytes(16, "big")))
    if slla is not None:
        m += opt_lla(OPT_SLLA, slla)
    return finish(src, dst, m)


def na(src: int, dst: int, target: int, flags: int, tlla: bytes | None) -> bytes:
    m = bytearray(struct.pack("!BBHB3x16s", NEIGHBOR_ADVERT, 0, 0, flags,
                              target.to_bytes(16, "big")))
    if tlla is not None:
        m += opt_lla(OPT_TLLA, tlla)
    return finish(src, dst, m)


def rs(src: int, dst: int, slla: bytes | None) -> bytes:
    m = bytearray(struct.pack("!BBHI", ROUTER_SOLICIT, 0, 0, 0))
    if slla is not None:
        m += opt_lla(OPT_SLLA, slla)
    return finish(src, dst, m)


def ra(src: int, dst: int, hop_limit: int, flags: int, lifetime: int, reachable: int,
       retrans: int, options: Sequence[bytes]) -> bytes:
    m = bytearray(struct.pack("!BBHBBHII", ROUTER_ADVERT, 0, 0, hop_limit, flags, lifetime,
                              reachable, retrans))
    for o in options:
        m += o
    return finish(src, dst, m)


# -- MLD --------------------------------------------------------------------------------
@dataclass(slots=True)
class MldQuery:
    max_resp_ms: int
    group: int
    sources: list[int]
    v2: bool
    qrv: int = 2
    qqic: int = 125


def parse_mld_query(msg: memoryview) -> MldQuery:
    if len(msg) < 24:
        raise ParseError("drop_truncated")
    code = int.from_bytes(msg[4:6], "big")
    group = int.from_bytes(msg[8:24], "big")
    if len(msg) == 24:  # MLDv1 (RFC 2710)
        return MldQuery(code, group, [], False)
    if len(msg) < 28:
        raise ParseError("drop_truncated")
    # RFC 3810 §5.1.3: the maximum response code's floating-point form
    mrd = code if code < 32768 else ((code & 0xFFF) | 0x1000) << (((code >> 12) & 7) + 3)
    nsrc = int.from_bytes(msg[26:28], "big")
    if len(msg) < 28 + 16 * nsrc:
        raise ParseError("drop_truncated")
    srcs = [int.from_bytes(msg[28 + 16 * i:44 + 16 * i], "big") for i in range(nsrc)]
    qqic = msg[25]
    qqi = qqic if qqic < 128 else ((qqic & 15) | 16) << (((qqic >> 4) & 7) + 3)
    return MldQuery(mrd, group, srcs, True, msg[24] & 7 or 2, qqi)


def mld_report_v2(src: int, dst: int, records: Sequence[tuple[int, int, Sequence[int]]]) -> bytes:
    """An MLDv2 report of (record type, group, sources) records."""
    m = bytearray(struct.pack("!BBHHH", MLD_REPORT_V2, 0, 0, 0, len(records)))
    for rtype, group, srcs in records:
        m += struct.pack("!BBH16s", rtype, 0, len(srcs), group.to_bytes(16, "big"))
        for s in srcs:
            m += s.to_bytes(16, "big")
    return finish(src, dst, m)


def mld_v1(kind: int, src: int, dst: int, group: int) -> bytes:
    """An MLDv1 report (131) or done (132) for ``group``."""
    m = bytearray(struct.pack("!BBHHH16s", kind, 0, 0, 0, 0, group.to_bytes(16, "big")))
    return finish(src, dst, m)
