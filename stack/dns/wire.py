"""The DNS message format (RFC 1035 §4, RFC 3596 for AAAA): a parser and a builder.

Only what a stub resolver needs: questions, resource records (A, AAAA, CNAME, PTR, NS
and SOA decoded; anything else kept as bytes), the header flags, and name compression
on input. The parser refuses what a hostile or broken server could use against it and
says why (``DnsError.reason``, the name of the counter the caller bumps):

* ``truncated``      - the message ends inside a header, a name or a record;
* ``pointer_loop``   - a compression pointer that does not point before the labels it
                       ends (RFC 1035 §4.1.4: a pointer names an earlier occurrence, so
                       each jump goes strictly lower and no loop is possible), or more
                       than ``MAX_JUMPS`` pointers;
* ``bad_label``      - a label type other than 0b00 (length) and 0b11 (pointer);
* ``name_too_long``  - a name over 255 octets on the wire (§2.3.4);
* ``bad_rdata``      - an A/AAAA of the wrong size, a name in RDATA that overruns it;
* ``too_many_records`` - counts in the header beyond what the message could hold.

``decode_name`` is also used by DHCP's domain search option (RFC 3397), which encodes
its list with the same compression.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080

#: most compression pointers followed in one name (a legal name has at most 127 labels)
MAX_JUMPS = 64
MAX_NAME = 255
HEADER = struct.Struct("!HHHHHH")

#: every reason ``DnsError`` is raised with (declared as counters by the users)
PARSE_REASONS = ("truncated", "pointer_loop", "bad_label", "name_too_long", "bad_rdata",
                 "too_many_records")


class DnsError(ValueError):
    """A malformed message; ``reason`` is one of ``PARSE_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@dataclass(slots=True)
class Record:
    """A resource record. ``data``: the address text (A, AAAA), the target name (CNAME,
    PTR, NS), the primary server name (SOA), else the raw RDATA."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    data: str | bytes


@dataclass
class Message:
    id: int
    flags: int = 0
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


# -- names ------------------------------------------------------------------------------
def normalize(name: str) -> str:
    """Lower case, no trailing dot ("" is the root)."""
    return name.rstrip(".").lower()


def encode_name(name: str) -> bytes:
    """A name in wire form, uncompressed. Raises ValueError for an empty label, a label
    over 63 octets or a name over 255."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode()
            if not raw or len(raw) > 63:
                raise ValueError(f"bad label {label!r} in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def decode_name(buf: bytes | memoryview, off: int) -> tuple[str, int]:
    """The name at ``off`` and the offset after it (after the first pointer, if any).
    Each pointer must go before the start of the labels it follows, so the jumps go
    strictly down and cannot loop; their count and the name's length are bounded too."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 1
    n = len(buf)
    pos = off
    start = off  # where the labels being read began: a pointer must go before it
    while True:
        if pos >= n:
            raise DnsError("truncated", "name")
        ln = buf[pos]
        kind = ln & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise DnsError("truncated", "pointer")
            target = ((ln & 0x3F) << 8) | buf[pos + 1]
            if target >= start:
                raise DnsError("pointer_loop", f"pointer at {pos} to {target}")
            start = target
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DnsError("pointer_loop", "too many pointers")
            if end < 0:
                end = pos + 2
            pos = target
            continue
        if kind:
            raise DnsError("bad_label", f"label type {kind >> 6:#x}")
        if ln == 0:
            if end < 0:
                end = pos + 1
            break
        if pos + 1 + ln > n:
            raise DnsError("truncated", "label")
        total += ln + 1
        if total > MAX_NAME:
            raise DnsError("name_too_long")
        labels.append(bytes(buf[pos + 1:pos + 1 + ln]).decode("ascii", "replace"))
        pos += 1 + ln
    return ".".join(labels), end


# -- building ---------------------------------------------------------------------------
def build_query(qid: int, name: str, qtype: int, *, rd: bool = True) -> bytes:
    """One question, recursion desired (what a stub resolver sends)."""
    return HEADER.pack(qid, FLAG_RD if rd else 0, 1, 0, 0, 0) + encode_name(name) + \
        struct.pack("!HH", qtype, CLASS_IN)


def _rdata(rec: Record) -> bytes:
    d = rec.data
    if isinstance(d, bytes):
        return d
    if rec.rtype == TYPE_A:
        return ipaddress.IPv4Address(d).packed
    if rec.rtype == TYPE_AAAA:
        return ipaddress.IPv6Address(d).packed
    if rec.rtype in (TYPE_CNAME, TYPE_PTR, TYPE_NS):
        return encode_name(d)
    raise ValueError(f"record type {rec.rtype} needs raw bytes")


def build(msg: Message) -> bytes:
    """A message in wire form, names uncompressed (servers in tests; queries)."""
    out = bytearray(HEADER.pack(msg.id, msg.flags, len(msg.questions), len(msg.answers),
                                len(msg.authority), len(msg.additional)))
    for q in msg.questions:
        out += encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass)
    for rec in (*msg.answers, *msg.authority, *msg.additional):
        rd = _rdata(rec)
        out += encode_name(rec.name) + struct.pack("!HHIH", rec.rtype, rec.rclass,
                                                   rec.ttl & 0xFFFFFFFF, len(rd)) + rd
    return bytes(out)


def response(query: Message, answers: list[Record], *, rcode: int = RCODE_NOERROR,
             flags: int = FLAG_RA) -> Message:
    """The answer to ``query`` (same id and question)."""
    return Message(query.id, FLAG_QR | (query.flags & FLAG_RD) | flags | rcode,
                   list(query.questions), answers)


# -- parsing ----------------------------------------------------------------------------
def parse(data: bytes | bytearray | memoryview) -> Message:
    """A whole message; raises ``DnsError``."""
    buf = bytes(data)
    if len(buf) < HEADER.size:
        raise DnsError("truncated", "header")
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(buf, 0)
    # each question takes at least 5 octets, each record at least 11
    if qd * 5 + (an + ns + ar) * 11 > len(buf) - HEADER.size:
        raise DnsError("too_many_records", f"{qd}/{an}/{ns}/{ar} in {len(buf)} octets")
    msg = Message(qid, flags)
    off = HEADER.size
    for _ in range(qd):
        name, off = decode_name(buf, off)
        if off + 4 > len(buf):
            raise DnsError("truncated", "question")
        qtype, qclass = struct.unpack_from("!HH", buf, off)
        off += 4
        msg.questions.append(Question(name, qtype, qclass))
    for count, dest in ((an, msg.answers), (ns, msg.authority), (ar, msg.additional)):
        for _ in range(count):
            rec, off = _record(buf, off)
            dest.append(rec)
    return msg


def _record(buf: bytes, off: int) -> tuple[Record, int]:
    name, off = decode_name(buf, off)
    if off + 10 > len(buf):
        raise DnsError("truncated", "record header")
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", buf, off)
    off += 10
    end = off + rdlen
    if end > len(buf):
        raise DnsError("truncated", "rdata")
    raw = buf[off:end]
    data: str | bytes = raw
    if rtype == TYPE_A and rclass == CLASS_IN:
        if rdlen != 4:
            raise DnsError("bad_rdata", f"A of {rdlen} octets")
        data = str(ipaddress.IPv4Address(raw))
    elif rtype == TYPE_AAAA and rclass == CLASS_IN:
        if rdlen != 16:
            raise DnsError("bad_rdata", f"AAAA of {rdlen} octets")
        data = str(ipaddress.IPv6Address(raw))
    elif rtype in (TYPE_CNAME, TYPE_PTR, TYPE_NS, TYPE_SOA):
        target, after = decode_name(buf, off)
        if after > end:
            raise DnsError("bad_rdata", "name overruns its record")
        data = target
    return Record(name, rtype, rclass, ttl, data), end
