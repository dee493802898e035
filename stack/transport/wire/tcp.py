"""TCP header and options (RFC 9293, 7323, 2018): parse in place, emit into buffers."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.transport.wire.checksum import ParseError

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WS = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TS = 8

HDR = struct.Struct("!HHIIBBHHH")
HDR_LEN = 20
MAX_WSCALE = 14

_FLAG_NAMES = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
               (ECE, "E"), (CWR, "C"))


def flags_str(flags: int) -> str:
    return "".join(n for bit, n in _FLAG_NAMES if flags & bit) or "-"


@dataclass(slots=True)
class TCPOptions:
    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    sack: list[tuple[int, int]] = field(default_factory=list)
    ts: tuple[int, int] | None = None  # (TSval, TSecr)

    def emit(self) -> bytes:
        """Options in Linux's order, NOP-padded to a multiple of 4 bytes."""
        out = bytearray()
        if self.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, self.mss)
        if self.sack_perm and self.ts is not None:
            out += struct.pack("!BBBBII", OPT_SACK_PERM, 2, OPT_TS, 10, self.ts[0], self.ts[1])
        else:
            if self.ts is not None:
                out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TS, 10, self.ts[0], self.ts[1])
            if self.sack_perm:
                out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
        if self.wscale is not None:
            out += bytes((OPT_NOP, OPT_WS, 3, self.wscale))
        if self.sack:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(self.sack)))
            for left, right in self.sack:
                out += struct.pack("!II", left, right)
        while len(out) % 4:
            out.append(OPT_NOP)
        if len(out) > 40:
            raise ValueError(f"TCP options too long ({len(out)} bytes)")
        return bytes(out)


def emit_ts_sack(ts: tuple[int, int] | None, sack: list[tuple[int, int]] | None) -> bytes:
    """Fast path for data/ACK segments: timestamps and SACK blocks only."""
    out = b""
    if ts is not None:
        out = struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TS, 10, ts[0], ts[1])
    if sack:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack)))
        out += b"".join(struct.pack("!II", a, b) for a, b in sack)
    return out


def parse_options(data: memoryview | bytes) -> TCPOptions:
    opts = TCPOptions()
    i = 0
    n = len(data)
    while i < n:
        kind = data[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise ParseError("TCP option without length")
        olen = data[i + 1]
        if olen < 2 or i + olen > n:
            raise ParseError(f"TCP option {kind} has bad length {olen}")
        body = data[i + 2:i + olen]
        if kind == OPT_MSS:
            if olen != 4:
                raise ParseError("MSS option length != 4")
            opts.mss = (body[0] << 8) | body[1]
        elif kind == OPT_WS:
            if olen != 3:
                raise ParseError("window scale option length != 3")
            opts.wscale = min(body[0], MAX_WSCALE)  # RFC 7323 2.3: clamp, don't reject
        elif kind == OPT_SACK_PERM:
            if olen != 2:
                raise ParseError("SACK-permitted option length != 2")
            opts.sack_perm = True
        elif kind == OPT_SACK:
            if (olen - 2) % 8 or olen == 2:
                raise ParseError("SACK option length not 2+8n")
            for j in range(0, olen - 2, 8):
                left, right = struct.unpack_from("!II", body, j)
                opts.sack.append((left, right))
        elif kind == OPT_TS:
            if olen != 10:
                raise ParseError("timestamp option length != 10")
            opts.ts = struct.unpack_from("!II", body, 0)
        # unknown options are skipped (RFC 9293 3.2)
        i += olen
    return opts


class TCPSegment:
    """A received segment parsed in place: header fields, options, payload view."""

    __slots__ = ("sport", "dport", "seq", "ack", "flags", "wnd", "csum", "urp", "hlen",
                 "opts", "payload")

    def __init__(self, sport: int, dport: int, seq: int, ack: int, flags: int, wnd: int,
                 csum: int, urp: int, hlen: int, opts: TCPOptions | None,
                 payload: memoryview) -> None:
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.wnd = wnd
        self.csum = csum
        self.urp = urp
        self.hlen = hlen
        self.opts = opts
        self.payload = payload

    @property
    def seg_len(self) -> int:
        """SEG.LEN: data plus one for each of SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def __repr__(self) -> str:
        return (f"<TCP {self.sport}>{self.dport} [{flags_str(self.flags)}] seq={self.seq} "
                f"ack={self.ack} win={self.wnd} len={len(self.payload)} opts={self.opts}>")


_EMPTY_OPTS = TCPOptions()


def parse(data: memoryview) -> TCPSegment:
    """Parse a TCP segment (header + payload) in place; checksum is the caller's job."""
    if len(data) < HDR_LEN:
        raise ParseError(f"TCP segment too short ({len(data)} bytes)")
    sport, dport, seq, ack, off, flags, wnd, csum, urp = HDR.unpack_from(data, 0)
    hlen = (off >> 4) * 4
    if hlen < HDR_LEN or hlen > len(data):
        raise ParseError(f"bad TCP data offset {hlen}")
    opts = parse_options(data[HDR_LEN:hlen]) if hlen > HDR_LEN else None
    return TCPSegment(sport, dport, seq, ack, flags, wnd, csum, urp, hlen, opts, data[hlen:])


def emit_header(sport: int, dport: int, seq: int, ack: int, flags: int, wnd: int,
                options: bytes = b"", csum: int = 0, urp: int = 0) -> bytearray:
    """A TCP header (checksum field as given, normally 0 to be filled later)."""
    if len(options) % 4 or len(options) > 40:
        raise ValueError("TCP options must be padded to 4 bytes and at most 40")
    hlen = HDR_LEN + len(options)
    buf = bytearray(hlen)
    HDR.pack_into(buf, 0, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hlen // 4) << 4,
                  flags, wnd, csum, urp)
    buf[HDR_LEN:] = options
    return buf
