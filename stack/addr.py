"""One address model for both IP families (Plan 9's ip.h; smoltcp's wire/ip.rs).

An address is a plain ``int`` in one 128-bit space: IPv6 addresses are themselves, IPv4
addresses are IPv4-mapped (``::ffff:a.b.c.d``, RFC 4291 §2.5.5.2). So an address is
hashable, compares and sorts, costs what an int costs on the hot path, and carries its
family: ``family(a)`` is AF_INET exactly when it lies in ``::ffff:0:0/96``. ``Addr`` is a
NewType over int: free at run time, distinct for the type checker.

* ``v4(bits)`` / ``v4_bits(a)``: the IPv4 layer's 32-bit ints in and out (only the IPv4
  layer and its wire module deal in those);
* ``parse_addr`` / ``format_addr``: text; ``to_ip`` / ``from_ip``: the stdlib's
  ``ipaddress`` objects (what users and the control plane see);
* ``Prefix``: an address with a prefix length in its own family (10.0.0.0/8, 2001:db8::/32),
  whose ``contains`` works on the 128-bit space (``wide_plen``);
* ``Endpoint``: (address, port), what sockets bind and connect to;
* ``pseudo_header_sum``: the transport checksum's pseudo header for either family
  (RFC 768/793 for IPv4, RFC 8200 §8.1 for IPv6).

The unspecified address of a family is ``ANY4`` (``::ffff:0.0.0.0``) or ``ANY6``
(``::``); ``is_unspecified`` is true for both.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple, NewType

Addr = NewType("Addr", int)

AF_INET = 2
AF_INET6 = 24  # host numbering as on QNX/NetBSD (the socket door's directory name)

V4MAPPED = 0xFFFF << 32
_V4MASK = ~0xFFFFFFFF & ((1 << 128) - 1)
ALL_ONES_128 = (1 << 128) - 1

ANY4 = Addr(V4MAPPED)
ANY6 = Addr(0)
BROADCAST4 = Addr(V4MAPPED | 0xFFFFFFFF)
LOOPBACK4 = Addr(V4MAPPED | 0x7F000001)
LOOPBACK6 = Addr(1)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- construction and family ------------------------------------------------------------
def v4(bits: int) -> Addr:
    """The address of a 32-bit IPv4 value."""
    return Addr(V4MAPPED | bits)


def v4_bits(a: Addr) -> int:
    """The 32-bit IPv4 value of an IPv4 address (the caller knows ``is_v4(a)``)."""
    return a & 0xFFFFFFFF


def v6(bits: int) -> Addr:
    return Addr(bits)


def is_v4(a: int) -> bool:
    return a & _V4MASK == V4MAPPED


def family(a: int) -> int:
    return AF_INET if a & _V4MASK == V4MAPPED else AF_INET6


def is_unspecified(a: int) -> bool:
    return a == V4MAPPED or a == 0


def unspecified(fam: int) -> Addr:
    return ANY4 if fam == AF_INET else ANY6


def is_multicast(a: int) -> bool:
    if a & _V4MASK == V4MAPPED:
        return a & 0xF0000000 == 0xE0000000
    return a >> 120 == 0xFF


def is_loopback(a: int) -> bool:
    if a & _V4MASK == V4MAPPED:
        return a & 0xFF000000 == 0x7F000000
    return a == 1


# -- text and the stdlib's types ------------------------------------------------------------
def parse_addr(text: str) -> Addr:
    """``"10.0.0.1"`` or ``"2001:db8::1"`` (a zone ``%eth0`` is not an address: refused).
    Raises ValueError with the text in the message."""
    try:
        if "%" in text:
            raise ValueError(text)
        return from_ip(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"bad address: {text!r}") from None


def from_ip(ip: IPAddress) -> Addr:
    if ip.version == 4:
        return Addr(V4MAPPED | int(ip))
    v4m = ip.ipv4_mapped  # type: ignore[union-attr]
    return Addr(int(ip)) if v4m is None else Addr(V4MAPPED | int(v4m))


def to_ip(a: int) -> IPAddress:
    if a & _V4MASK == V4MAPPED:
        return ipaddress.IPv4Address(a & 0xFFFFFFFF)
    return ipaddress.IPv6Address(a)


def format_addr(a: int) -> str:
    return str(to_ip(a))


def addr_bytes(a: int) -> bytes:
    """Wire form: 4 bytes for IPv4, 16 for IPv6."""
    if a & _V4MASK == V4MAPPED:
        return (a & 0xFFFFFFFF).to_bytes(4, "big")
    return a.to_bytes(16, "big")


def addr_from_bytes(b: bytes | memoryview) -> Addr:
    n = len(b)
    if n == 4:
        return Addr(V4MAPPED | int.from_bytes(b, "big"))
    if n == 16:
        return Addr(int.from_bytes(b, "big"))
    raise ValueError(f"an address is 4 or 16 bytes, not {n}")


# -- prefixes ------------------------------------------------------------------------------
def wide_plen(a: int, plen: int) -> int:
    """A family prefix length as a prefix length in the 128-bit space."""
    return plen + 96 if a & _V4MASK == V4MAPPED else plen


def mask128(wplen: int) -> int:
    return ALL_ONES_128 ^ ((1 << (128 - wplen)) - 1)


@dataclass(frozen=True, slots=True)
class Prefix:
    """An address and a prefix length in its family: 10.0.0.0/8 has plen 8. Host bits
    may be set (an interface address, 10.0.0.1/24); ``network`` clears them."""

    addr: Addr
    plen: int

    def __post_init__(self) -> None:
        top = 32 if is_v4(self.addr) else 128
        if not 0 <= self.plen <= top:
            raise ValueError(f"prefix length {self.plen} out of range 0-{top} for "
                             f"{format_addr(self.addr)}")

    @classmethod
    def parse(cls, text: str, *, default_plen: int | None = None) -> Prefix:
        """``10.0.0.0/8``, ``2001:db8::/32``; a bare address gets ``default_plen``
        (or the full length: a host)."""
        addr_text, sep, plen_text = text.strip().partition("/")
        a = parse_addr(addr_text)
        if sep:
            if not plen_text.isdigit():
                raise ValueError(f"bad prefix length in {text!r}")
            plen = int(plen_text)
        else:
            plen = default_plen if default_plen is not None else (32 if is_v4(a) else 128)
        return cls(a, plen)

    @classmethod
    def from_ip(cls, net: ipaddress.IPv4Network | ipaddress.IPv6Network
                | ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> Prefix:
        if isinstance(net, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
            return cls(from_ip(net.ip), net.network.prefixlen)
        return cls(from_ip(net.network_address), net.prefixlen)

    @property
    def family(self) -> int:
        return family(self.addr)

    @property
    def wide(self) -> int:
        """The prefix length in the 128-bit space."""
        return wide_plen(self.addr, self.plen)

    @property
    def mask(self) -> int:
        return mask128(self.wide)

    @property
    def network(self) -> Addr:
        return Addr(self.addr & self.mask)

    @property
    def is_host(self) -> bool:
        return self.plen == (32 if is_v4(self.addr) else 128)

    def contains(self, a: int) -> bool:
        m = self.mask
        return a & m == self.addr & m

    def broadcast(self) -> Addr | None:
        """IPv4's directed broadcast (none for /31, /32 and IPv6)."""
        if not is_v4(self.addr) or self.plen >= 31:
            return None
        return Addr(self.addr | ((1 << (32 - self.plen)) - 1))

    def __str__(self) -> str:
        return f"{format_addr(self.addr)}/{self.plen}"


# -- endpoints -------------------------------------------------------------------------------
class Endpoint(NamedTuple):
    """A transport endpoint: (address, port)."""

    addr: Addr
    port: int

    @property
    def family(self) -> int:
        return family(self.addr)

    def __str__(self) -> str:
        a = format_addr(self.addr)
        return f"{a}:{self.port}" if is_v4(self.addr) else f"[{a}]:{self.port}"


class ScopedEndpoint(Endpoint):
    """An IPv6 ``Endpoint`` with a scope id (``sin6_scope_id``: the index of the
    interface a link-local address is on). It equals and hashes as the plain
    ``Endpoint`` (a connection's four-tuple has no scope); only the sockaddrs in and out
    of the socket layer and the transports' choice of interface read ``scope_id``."""

    scope_id: int

    def __new__(cls, addr: Addr, port: int, scope_id: int = 0) -> ScopedEndpoint:
        self = super().__new__(cls, addr, port)
        self.scope_id = scope_id
        return self

    def __repr__(self) -> str:
        return f"ScopedEndpoint({format_addr(self.addr)!r}, {self.port}, {self.scope_id})"


def scope_of(ep: object) -> int:
    """The scope id an endpoint carries (0: none)."""
    return getattr(ep, "scope_id", 0)


def is_link_local6(a: int) -> bool:
    """fe80::/10 (IPv6 link-local unicast)."""
    return a >> 118 == 0x3FA


# -- the transport checksum's pseudo header ------------------------------------------------
def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Unfolded ones'-complement contribution of the pseudo header of either family:
    IPv4's (src, dst, zero, proto, length) or IPv6's (src, dst, length, next header).
    Both come to the 16-bit words of the addresses plus ``proto`` plus ``length``; the
    mapped prefix of an IPv4 address must not count, so it is masked off."""
    if src & _V4MASK == V4MAPPED:
        src &= 0xFFFFFFFF
        dst &= 0xFFFFFFFF
        return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length
    # IPv6: the sum mod 0xFFFF of the 128-bit values is the folded sum of their words
    return (src % 0xFFFF) + (dst % 0xFFFF) + proto + (length >> 16) + (length & 0xFFFF)
