"""DHCPv6 messages (RFC 8415 §8, §21): parse in place, emit.

``parse`` reads a client-bound message (ADVERTISE, REPLY, RECONFIGURE) from the
datagram's buffer without copying it: options are memoryview slices of it. Every
refusal raises ``Dhcp6Error(reason)``, counted by the client service as
``v6_drop_<reason>`` (group ``dhcp``): ``truncated`` (shorter than the 4-byte header),
``bad_type`` (not a message a server sends a client), ``option_overrun`` (an option
running past the message or its enclosing option: the "oversized option"),
``bad_option`` (a fixed-size option of the wrong size: elapsed time, preference, IA_NA,
IAADDR, status code, DNS servers not a multiple of 16, refresh time),
``bad_domain`` (a domain list that is not a sequence of uncompressed names),
``too_many_options`` (more than ``MAX_OPTIONS``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_SERVERS = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY = 1, 2, 3, 4, 5, 6, 7
RELEASE, DECLINE, RECONFIGURE, INFORMATION_REQUEST = 8, 9, 10, 11
TYPE_NAMES = {SOLICIT: "solicit", ADVERTISE: "advertise", REQUEST: "request",
              CONFIRM: "confirm", RENEW: "renew", REBIND: "rebind", REPLY: "reply",
              RELEASE: "release", DECLINE: "decline", RECONFIGURE: "reconfigure",
              INFORMATION_REQUEST: "inforeq"}
#: what a server sends to a client's port
TO_CLIENT = frozenset({ADVERTISE, REPLY, RECONFIGURE})

OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 2, 3, 5, 6
OPT_PREFERENCE, OPT_ELAPSED_TIME, OPT_STATUS_CODE, OPT_RAPID_COMMIT = 7, 8, 13, 14
OPT_DNS_SERVERS, OPT_DOMAIN_LIST, OPT_INFO_REFRESH_TIME = 23, 24, 32

STATUS_SUCCESS, STATUS_UNSPEC_FAIL, STATUS_NO_ADDRS_AVAIL, STATUS_NO_BINDING = 0, 1, 2, 3
STATUS_NOT_ON_LINK, STATUS_USE_MULTICAST = 4, 5

#: fixed sizes (exact) and minimum sizes of the options this client reads
FIXED = {OPT_ELAPSED_TIME: 2, OPT_PREFERENCE: 1, OPT_INFO_REFRESH_TIME: 4, OPT_RAPID_COMMIT: 0}
MINIMUM = {OPT_IA_NA: 12, OPT_IAADDR: 24, OPT_STATUS_CODE: 2, OPT_CLIENTID: 1,
           OPT_SERVERID: 1}
MAX_OPTIONS = 256

PARSE_REASONS = ("truncated", "bad_type", "option_overrun", "bad_option", "bad_domain",
                 "too_many_options")


class Dhcp6Error(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _options(buf: memoryview, count: list[int]) -> dict[int, list[memoryview]]:
    """Options of ``buf`` (a message's or an option's body), code → bodies in order."""
    out: dict[int, list[memoryview]] = {}
    off, end = 0, len(buf)
    while off < end:
        if end - off < 4:
            raise Dhcp6Error("option_overrun")
        code, length = struct.unpack_from("!HH", buf, off)
        if off + 4 + length > end:
            raise Dhcp6Error("option_overrun")
        count[0] += 1
        if count[0] > MAX_OPTIONS:
            raise Dhcp6Error("too_many_options")
        body = buf[off + 4:off + 4 + length]
        want = FIXED.get(code)
        if (want is not None and length != want) or length < MINIMUM.get(code, 0) \
                or (code == OPT_DNS_SERVERS and length % 16):
            raise Dhcp6Error("bad_option")
        out.setdefault(code, []).append(body)
        off += 4 + length
    return out


@dataclass
class IaAddr:
    address: bytes
    preferred: int
    valid: int
    status: int = STATUS_SUCCESS


@dataclass
class IaNa:
    iaid: int
    t1: int
    t2: int
    addrs: list[IaAddr] = field(default_factory=list)
    status: int = STATUS_SUCCESS
    message: str = ""


@dataclass
class Message:
    msg_type: int
    xid: int
    options: dict[int, list[memoryview]]
    #: filled for the options read: status, IA_NA, preference
    ia_na: list[IaNa] = field(default_factory=list)
    status: int = STATUS_SUCCESS
    message: str = ""

    def first(self, code: int) -> memoryview | None:
        got = self.options.get(code)
        return got[0] if got else None

    def bytes_of(self, code: int) -> bytes | None:
        v = self.first(code)
        return None if v is None else bytes(v)

    @property
    def preference(self) -> int:
        v = self.first(OPT_PREFERENCE)
        return v[0] if v is not None else 0

    def dns_servers(self) -> list[bytes]:
        v = self.first(OPT_DNS_SERVERS)
        if v is None:
            return []
        return [bytes(v[i:i + 16]) for i in range(0, len(v), 16)]

    def domains(self) -> list[str]:
        v = self.first(OPT_DOMAIN_LIST)
        return [] if v is None else decode_names(v)

    def refresh_time(self) -> int | None:
        v = self.first(OPT_INFO_REFRESH_TIME)
        return None if v is None else int(struct.unpack("!I", v)[0])


def decode_names(v: memoryview) -> list[str]:
    """RFC 8415 §10: uncompressed DNS names, each ending in the root label."""
    names: list[str] = []
    off, end = 0, len(v)
    labels: list[str] = []
    while off < end:
        n = v[off]
        off += 1
        if n == 0:
            if labels:
                names.append(".".join(labels))
            labels = []
            continue
        if n > 63 or off + n > end:
            raise Dhcp6Error("bad_domain")
        try:
            labels.append(bytes(v[off:off + n]).decode("ascii"))
        except UnicodeDecodeError:
            raise Dhcp6Error("bad_domain") from None
        off += n
    if labels:
        raise Dhcp6Error("bad_domain")  # the last name did not end
    return names


def encode_names(names: list[str]) -> bytes:
    out = bytearray()
    for n in names:
        for label in n.strip(".").split("."):
            if label:
                out += bytes([len(label)]) + label.encode("ascii")
        out += b"\0"
    return bytes(out)


def _status(body: memoryview) -> tuple[int, str]:
    code = int(struct.unpack_from("!H", body, 0)[0])
    return code, bytes(body[2:]).decode("utf-8", "replace")


def parse(data: bytes | bytearray | memoryview) -> Message:
    buf = memoryview(data)
    if len(buf) < 4:
        raise Dhcp6Error("truncated")
    msg_type = buf[0]
    if msg_type not in TO_CLIENT:
        raise Dhcp6Error("bad_type")
    xid = int.from_bytes(buf[1:4], "big")
    count = [0]
    opts = _options(buf[4:], count)
    msg = Message(msg_type, xid, opts)
    st = msg.first(OPT_STATUS_CODE)
    if st is not None:
        msg.status, msg.message = _status(st)
    for body in opts.get(OPT_IA_NA, []):
        iaid, t1, t2 = struct.unpack_from("!III", body, 0)
        ia = IaNa(iaid, t1, t2)
        inner = _options(body[12:], count)
        for ab in inner.get(OPT_IAADDR, []):
            addr = bytes(ab[:16])
            pref, valid = struct.unpack_from("!II", ab, 16)
            a = IaAddr(addr, pref, valid)
            ainner = _options(ab[24:], count)
            if OPT_STATUS_CODE in ainner:
                a.status = _status(ainner[OPT_STATUS_CODE][0])[0]
            ia.addrs.append(a)
        if OPT_STATUS_CODE in inner:
            ia.status, ia.message = _status(inner[OPT_STATUS_CODE][0])
        msg.ia_na.append(ia)
    for body in opts.get(OPT_DOMAIN_LIST, []):
        decode_names(body)  # refused now, not when the lease is installed
    return msg


# -- emit ------------------------------------------------------------------------------
def option(code: int, body: bytes) -> bytes:
    return struct.pack("!HH", code, len(body)) + body


def ia_na(iaid: int, t1: int = 0, t2: int = 0, addrs: list[IaAddr] | None = None) -> bytes:
    inner = b"".join(option(OPT_IAADDR, a.address + struct.pack("!II", a.preferred, a.valid))
                     for a in addrs or [])
    return option(OPT_IA_NA, struct.pack("!III", iaid, t1, t2) + inner)


def build(msg_type: int, xid: int, options: list[bytes]) -> bytes:
    return bytes([msg_type]) + xid.to_bytes(3, "big") + b"".join(options)


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 §11.4): type 3, hardware type 1 (Ethernet), the MAC."""
    return struct.pack("!HH", 3, 1) + mac


def duid_llt(mac: bytes, when: int) -> bytes:
    """DUID-LLT (§11.2): type 1, hardware type 1, seconds since 2000-01-01 UTC, the MAC."""
    return struct.pack("!HHI", 1, 1, when & 0xFFFFFFFF) + mac


def oro(codes: list[int]) -> bytes:
    return option(OPT_ORO, b"".join(struct.pack("!H", c) for c in codes))


def elapsed(centiseconds: int) -> bytes:
    return option(OPT_ELAPSED_TIME, struct.pack("!H", min(0xFFFF, centiseconds)))
