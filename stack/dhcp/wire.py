"""The DHCP message format (RFC 2131 §2, options RFC 2132, RFC 3396, RFC 3397): a
parser and a builder, and the IPv4/UDP framing a client needs before it has an address.

``parse`` refuses, with ``DhcpError.reason`` (the counter the client bumps):

* ``truncated``          - shorter than the fixed part and the magic cookie (240 octets);
* ``bad_cookie``         - not 99.130.83.99 after the fixed part;
* ``bad_op`` / ``bad_htype`` - not a BOOTREPLY, not Ethernet (htype 1, hlen 6);
* ``option_overrun``     - an option whose length runs past the end of its field (the
                           "oversized option" attack), or an overload (52) pointing at
                           fields that do the same;
* ``bad_option``         - an option of a fixed size with another size (a mask of 3
                           octets, a lease time of 2...), a message type out of range,
                           a domain search list (119) that does not decode;
* ``no_message_type``    - no option 53.

Repeated options are concatenated (RFC 3396); option overload (52) is honoured.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.addr import pseudo_header_sum, v4
from stack.dns import wire as dnswire
from stack.inet.wire import ipv4 as wip
from stack.transport.wire import udp as wudp
from stack.transport.wire.checksum import checksum

BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC = b"\x63\x82\x53\x63"
FIXED = struct.Struct("!BBBBIHHIIII16s64s128s")  # 236 octets
SERVER_PORT, CLIENT_PORT = 67, 68
FLAG_BROADCAST = 0x8000

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}

OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_MTU = 26
OPT_BROADCAST = 28
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_CLIENT_ID = 61
OPT_DOMAIN_SEARCH = 119

#: what the client asks for (option 55)
REQUESTED = (OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN, OPT_MTU,
             OPT_BROADCAST, OPT_LEASE_TIME, OPT_SERVER_ID, OPT_T1, OPT_T2,
             OPT_DOMAIN_SEARCH)

#: options of a fixed length (or a multiple of it, "n")
_SIZES: dict[int, tuple[int, bool]] = {
    OPT_SUBNET_MASK: (4, False), OPT_ROUTER: (4, True), OPT_DNS: (4, True),
    OPT_MTU: (2, False), OPT_BROADCAST: (4, False), OPT_REQUESTED_IP: (4, False),
    OPT_LEASE_TIME: (4, False), OPT_OVERLOAD: (1, False), OPT_MESSAGE_TYPE: (1, False),
    OPT_SERVER_ID: (4, False), OPT_T1: (4, False), OPT_T2: (4, False),
    OPT_MAX_SIZE: (2, False),
}

PARSE_REASONS = ("truncated", "bad_cookie", "bad_op", "bad_htype", "option_overrun",
                 "bad_option", "no_message_type")


class DhcpError(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes
    msg_type: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: int = 0
    yiaddr: int = 0
    siaddr: int = 0
    giaddr: int = 0
    options: dict[int, bytes] = field(default_factory=dict)

    # -- typed option values --------------------------------------------------------
    def addr(self, code: int) -> int | None:
        v = self.options.get(code)
        return int.from_bytes(v[:4], "big") if v and len(v) >= 4 else None

    def addrs(self, code: int) -> list[int]:
        v = self.options.get(code, b"")
        return [int.from_bytes(v[i:i + 4], "big") for i in range(0, len(v) - 3, 4)]

    def u32(self, code: int) -> int | None:
        v = self.options.get(code)
        return int.from_bytes(v, "big") if v and len(v) == 4 else None

    def u16(self, code: int) -> int | None:
        v = self.options.get(code)
        return int.from_bytes(v, "big") if v and len(v) == 2 else None

    def text(self, code: int) -> str:
        v = self.options.get(code, b"")
        return v.split(b"\0", 1)[0].decode("ascii", "replace")

    def search(self) -> list[str]:
        """Option 119 (RFC 3397): names in DNS form, compressed within the option."""
        v = self.options.get(OPT_DOMAIN_SEARCH, b"")
        return decode_search(v) if v else []


def decode_search(data: bytes) -> list[str]:
    out = []
    off = 0
    while off < len(data):
        name, off = dnswire.decode_name(data, off)
        if name:
            out.append(name)
    return out


def encode_search(domains: list[str]) -> bytes:
    """Option 119's value, without compression (a valid encoding; servers in tests)."""
    return b"".join(dnswire.encode_name(d) for d in domains)


def _options(area: bytes | memoryview, into: dict[int, bytes]) -> None:
    i, n = 0, len(area)
    while i < n:
        code = area[i]
        if code == OPT_END:
            return
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise DhcpError("option_overrun", f"option {code} has no length")
        ln = area[i + 1]
        if i + 2 + ln > n:
            raise DhcpError("option_overrun", f"option {code} of {ln} octets at {i}/{n}")
        into[code] = into.get(code, b"") + bytes(area[i + 2:i + 2 + ln])
        i += 2 + ln


def parse(data: bytes | memoryview, *, want_op: int = BOOTREPLY) -> DhcpMessage:
    """A DHCP message (the UDP payload); raises ``DhcpError``."""
    if len(data) < FIXED.size + 4:
        raise DhcpError("truncated", f"{len(data)} octets")
    (op, htype, hlen, _hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, bootfile) = FIXED.unpack_from(data, 0)
    if bytes(data[FIXED.size:FIXED.size + 4]) != MAGIC:
        raise DhcpError("bad_cookie")
    if op != want_op:
        raise DhcpError("bad_op", str(op))
    if htype != 1 or hlen != 6:
        raise DhcpError("bad_htype", f"{htype}/{hlen}")
    opts: dict[int, bytes] = {}
    _options(data[FIXED.size + 4:], opts)
    over = opts.get(OPT_OVERLOAD)
    if over is not None:
        if len(over) != 1 or over[0] not in (1, 2, 3):
            raise DhcpError("bad_option", "overload")
        if over[0] & 1:
            _options(bootfile, opts)
        if over[0] & 2:
            _options(sname, opts)
    for code, (size, multiple) in _SIZES.items():
        v = opts.get(code)
        if v is not None and (len(v) != size if not multiple else not v or len(v) % size):
            raise DhcpError("bad_option", f"option {code} of {len(v)} octets")
    mt = opts.get(OPT_MESSAGE_TYPE)
    if mt is None:
        raise DhcpError("no_message_type")
    if not 1 <= mt[0] <= 8:
        raise DhcpError("bad_option", f"message type {mt[0]}")
    mtu = opts.get(OPT_MTU)
    if mtu is not None and int.from_bytes(mtu, "big") < 68:
        raise DhcpError("bad_option", "MTU under 68")
    msg = DhcpMessage(op, xid, bytes(chaddr[:6]), mt[0], secs, flags, ciaddr, yiaddr,
                      siaddr, giaddr, opts)
    if OPT_DOMAIN_SEARCH in opts:
        try:
            msg.search()
        except dnswire.DnsError:
            raise DhcpError("bad_option", "domain search list") from None
    return msg


def build(msg: DhcpMessage) -> bytes:
    """The UDP payload; options in code order after the message type, long values split
    into 255-octet pieces (RFC 3396), padded to the 300 octets of BOOTP."""
    out = bytearray(FIXED.pack(msg.op, 1, 6, 0, msg.xid, msg.secs, msg.flags, msg.ciaddr,
                               msg.yiaddr, msg.siaddr, msg.giaddr, msg.chaddr.ljust(16, b"\0"),
                               b"", b""))
    out += MAGIC
    opts = dict(msg.options)
    if msg.msg_type:
        opts[OPT_MESSAGE_TYPE] = bytes([msg.msg_type])
    order = sorted(opts, key=lambda c: (c != OPT_MESSAGE_TYPE, c))
    for code in order:
        v = opts[code]
        for i in range(0, max(len(v), 1), 255):
            piece = v[i:i + 255]
            out += bytes([code, len(piece)]) + piece
    out.append(OPT_END)
    if len(out) < 300:
        out += bytes(300 - len(out))
    return bytes(out)


def frame(src: int, dst: int, payload: bytes, *, sport: int = CLIENT_PORT,
          dport: int = SERVER_PORT, ttl: int = 64) -> list[bytes]:
    """IPv4 + UDP headers and the payload, for a datagram the IP layer cannot send (its
    source 0.0.0.0 before an address exists): the client hands it to layer 2 itself, as
    dhclient does through BPF."""
    udp = wudp.emit_header(sport, dport, len(payload))
    csum = checksum((udp, payload), pseudo_header_sum(v4(src), v4(dst), 17, len(payload) + 8))
    csum = csum or 0xFFFF
    udp[6], udp[7] = csum >> 8, csum & 0xFF
    ip = wip.build(src, dst, 17, len(udp) + len(payload), ttl=ttl)
    return [ip, bytes(udp), payload]


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "big")
