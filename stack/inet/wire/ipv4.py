"""The IPv4 header (RFC 791): parse in place, emit with checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.addr import V4MAPPED, Addr
from stack.inet.wire import ParseError, checksum1, verify1
from stack.packet import Buffer

HLEN = 20
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF
MAX_PACKET = 65535

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

_HDR = struct.Struct("!BBHHHBBH4s4s")
_HDR_I = struct.Struct("!BBHHHBBHII")
unpack_header = _HDR_I.unpack_from
pack_header = _HDR_I.pack


@dataclass(slots=True)
class IPv4Header:
    """A decoded header. ``src``/``dst`` are ints; ``frag_offset`` is in bytes."""

    src: int = 0
    dst: int = 0
    proto: int = 0
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    df: bool = False
    mf: bool = False
    frag_offset: int = 0
    total_length: int = HLEN
    options: bytes = b""
    checksum: int = 0

    @property
    def ihl(self) -> int:
        return HLEN + len(self.options)

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0

    def emit(self, payload_len: int | None = None) -> bytes:
        """The header bytes, with a fresh checksum; ``payload_len`` sets the total length."""
        if payload_len is not None:
            self.total_length = self.ihl + payload_len
        hdr = build(self.src, self.dst, self.proto, self.total_length - self.ihl,
                    ttl=self.ttl, tos=self.tos, ident=self.ident, df=self.df, mf=self.mf,
                    frag_offset=self.frag_offset, options=self.options)
        self.checksum = int.from_bytes(hdr[10:12], "big")
        return hdr


def build(src: int, dst: int, proto: int, payload_len: int, *, ttl: int = 64, tos: int = 0,
          ident: int = 0, df: bool = False, mf: bool = False, frag_offset: int = 0,
          options: bytes = b"") -> bytes:
    """Emit a header for ``payload_len`` bytes of payload. Options must be padded to a
    multiple of 4 bytes (at most 40)."""
    olen = len(options)
    if olen & 3 or olen > 40:
        raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
    ihl = HLEN + olen
    flags = (FLAG_DF if df else 0) | (FLAG_MF if mf else 0) | (frag_offset >> 3)
    hdr = pack_header(0x40 | ihl >> 2, tos, ihl + payload_len, ident, flags, ttl, proto, 0,
                      src, dst)
    if olen:
        hdr += options
    c = checksum1(hdr)
    return hdr[:10] + c.to_bytes(2, "big") + hdr[12:]


def parse(buf: Buffer, *, verify: bool = True) -> IPv4Header:
    """Decode and validate the header at the start of ``buf``. Trailing bytes beyond the
    total length (Ethernet padding) are allowed. Raises ParseError(reason)."""
    n = len(buf)
    if n < HLEN:
        raise ParseError("drop_truncated", f"{n} bytes, need {HLEN}")
    vihl, tos, total, ident, flags, ttl, proto, csum, src, dst = unpack_header(buf)
    if vihl >> 4 != 4:
        raise ParseError("drop_bad_version", f"version {vihl >> 4}")
    ihl = (vihl & 15) << 2
    if ihl < HLEN:
        raise ParseError("drop_bad_header_length", f"ihl {ihl}")
    if ihl > n:
        raise ParseError("drop_truncated", f"header {ihl} > {n} bytes")
    if total < ihl:
        raise ParseError("drop_bad_length", f"total length {total} < header {ihl}")
    if total > n:
        raise ParseError("drop_truncated", f"total length {total} > {n} bytes")
    if verify and not verify1(memoryview(buf)[:ihl]):
        raise ParseError("drop_bad_checksum")
    off = (flags & OFFSET_MASK) << 3
    if off + total - ihl > MAX_PACKET:
        raise ParseError("drop_bad_fragment", "fragment ends beyond 65535")
    return IPv4Header(src, dst, proto, ttl, tos, ident, bool(flags & FLAG_DF),
                      bool(flags & FLAG_MF), off, total,
                      bytes(memoryview(buf)[HLEN:ihl]), csum)


_CLASSIFY = struct.Struct("!BxHxxHxBxxII")  # vihl, total, flags+offset, proto, src, dst
#: bytes ``classify`` needs at ``off``
CLASSIFY_LEN = HLEN


def classify(buf: Buffer, off: int = 0) -> tuple[int, int, int, int, Addr, Addr]:
    """What a classifier (pf, a flow cache) reads of the header at ``off``, in place and
    in one unpack: (header length, total length, fragment offset in 8-byte units - 0 for
    an unfragmented packet or a first fragment -, protocol, source, destination), the
    addresses as stack.addr ``Addr`` values. Nothing is validated beyond the
    ``CLASSIFY_LEN`` bytes being there (struct.error otherwise): the caller checks what
    it relies on, as the header may be one the IP layer has not seen yet (an outgoing
    one it built, a quoted one in an ICMP error)."""
    vihl, total, frag, proto, src, dst = _CLASSIFY.unpack_from(buf, off)
    # the addresses are mapped by hand, not with stack.addr.v4(): calling the Addr
    # NewType (or v4) costs a Python call per address on the per-packet path
    return ((vihl & 15) << 2, total, frag & OFFSET_MASK, proto,  # type: ignore[return-value]
            V4MAPPED | src, V4MAPPED | dst)


OPT_EOL = 0
OPT_NOP = 1
OPT_RR = 7
OPT_TS = 68
OPT_LSRR = 131
OPT_SSRR = 137
#: options whose data starts with a pointer: (minimum length, minimum pointer), as Linux's
#: ``ip_options_compile``: record route and the source routes are type, length, pointer
#: (pointer 4 = the first address); timestamp adds an overflow/flags octet (pointer 5)
_POINTER_OPTS = {OPT_RR: (3, 4), OPT_LSRR: (3, 4), OPT_SSRR: (3, 4), OPT_TS: (4, 5)}


def options_error(opts: Buffer) -> int:
    """Check the TLV structure of IPv4 options (the header bytes after the first 20).
    Returns -1 if they are well formed, else the offset *within* ``opts`` of the first
    offending octet (add 20 for an ICMP parameter-problem pointer).

    EOL ends the list (what follows is padding); NOP is one octet; every other option has
    a length octet that counts the type and itself (so >= 2) and must not run past the
    header. Record route, source routes and timestamp must also hold their pointer octet,
    with the pointer at or after the first slot and, unless the list is full, at a
    4-byte slot that fits (RFC 791; what Linux's ``ip_options_compile`` checks)."""
    n = len(opts)
    i = 0
    while i < n:
        t = opts[i]
        if t == OPT_EOL:
            return -1
        if t == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return i  # no room for the length octet
        ln = opts[i + 1]
        if ln < 2 or i + ln > n:
            return i + 1
        ptr = _POINTER_OPTS.get(t)
        if ptr is not None:
            if ln < ptr[0]:
                return i + 1
            p = opts[i + 2]
            # the pointer is at or after the first slot, and a slot it points to (the
            # list is not full) lies wholly inside the option
            if p < ptr[1] or (p <= ln and p + 3 > ln):
                return i + 2
        i += ln
    return -1


def copied_options(options: Buffer) -> bytes:
    """The options every fragment carries: those with the 'copied' flag (RFC 791),
    padded to 4 bytes (IP fragmentation and software segmentation alike)."""
    if not options:
        return b""
    out = bytearray()
    i, n = 0, len(options)
    while i < n:
        t = options[i]
        if t == 0:
            break
        if t == 1:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2:
            break
        ln = options[i + 1]
        if t & 0x80:
            out += options[i:i + ln]
        i += ln
    while len(out) & 3:
        out.append(0)
    return bytes(out)


def decrement_ttl(buf: memoryview, off: int = 0) -> None:
    """TTL - 1 in a writable header with an incremental checksum update (RFC 1624)."""
    buf[off + 8] -= 1
    # the TTL is the high byte of word 4: HC' = ~(~HC + ~m + m') = HC + 0x0100 (folded)
    c = ((buf[off + 10] << 8) | buf[off + 11]) + 0x0100
    c = (c & 0xFFFF) + (c >> 16)
    buf[off + 10] = c >> 8
    buf[off + 11] = c & 0xFF


def ip_to_int(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"bad IPv4 address {text!r}")
    v = 0
    for p in parts:
        if not p.isdigit() or int(p) > 255:
            raise ValueError(f"bad IPv4 address {text!r}")
        v = v << 8 | int(p)
    return v


def int_to_ip(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def prefix_mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


def mask_to_prefix(mask: int) -> int:
    plen = bin(mask).count("1")
    if prefix_mask(plen) != mask:
        raise ValueError(f"non-contiguous netmask {int_to_ip(mask)}")
    return plen
