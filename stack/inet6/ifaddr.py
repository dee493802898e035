"""IPv6 interface state: addresses with their DAD state and lifetimes, the multicast
groups the interface listens to, and what router advertisements set (RFC 4861 §6.3.2).

Address helpers over stack/addr.py ``Addr`` values: scopes (RFC 4291 §2.7, RFC 4007),
the solicited-node group (§2.7.1), the modified EUI-64 interface identifier (§2.5.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stack.addr import Addr, Prefix, format_addr
from stack.inet.timers import Timer

ALL_NODES = Addr(0xFF02 << 112 | 1)
ALL_ROUTERS = Addr(0xFF02 << 112 | 2)
ALL_MLDV2_ROUTERS = Addr(0xFF02 << 112 | 0x16)
SOLICITED_NODE_BASE = 0xFF02 << 112 | 1 << 32 | 0xFF << 24  # ff02::1:ff00:0
LINK_LOCAL_PREFIX = Prefix(Addr(0xFE80 << 112), 64)

# address states (RFC 4862 §5.5.4; KAME's ifconfig flags)
TENTATIVE = "tentative"
PREFERRED = "preferred"
DEPRECATED = "deprecated"
DUPLICATED = "duplicated"

# scopes (RFC 4007 §4): what source selection (RFC 6724) compares
SCOPE_INTERFACE = 1
SCOPE_LINK = 2
SCOPE_SITE = 5
SCOPE_GLOBAL = 14


def is_link_local(a: int) -> bool:
    return a >> 118 == 0xFE80 >> 6


def is_multicast6(a: int) -> bool:
    return a >> 120 == 0xFF


def is_v4mapped(a: int) -> bool:
    return a >> 32 == 0xFFFF


def scope(a: int) -> int:
    if a >> 120 == 0xFF:
        return (a >> 112) & 0xF
    if a == 1:
        return SCOPE_INTERFACE
    if is_link_local(a):
        return SCOPE_LINK
    if a >> 118 == 0xFEC0 >> 6:
        return SCOPE_SITE
    return SCOPE_GLOBAL


def solicited_node(a: int) -> Addr:
    return Addr(SOLICITED_NODE_BASE | (a & 0xFFFFFF))


def eui64(mac: bytes) -> int:
    """The modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291 appendix A)."""
    b = bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return int.from_bytes(b, "big")


def multicast_mac(group: int) -> bytes:
    """RFC 2464 §7: 33:33 and the group's low 32 bits."""
    return b"\x33\x33" + (group & 0xFFFFFFFF).to_bytes(4, "big")


@dataclass(eq=False)
class IfAddr6:
    """One address. ``valid_until``/``preferred_until`` are trio clock deadlines (inf:
    forever); ``autoconf`` addresses came from a prefix advertised by a router."""

    prefix: Prefix
    ifname: str
    state: str = TENTATIVE
    autoconf: bool = False
    temporary: bool = False
    valid_until: float = math.inf
    preferred_until: float = math.inf
    dad_sent: int = 0
    #: the timer that moves it on (DAD done, deprecation, expiry)
    timer: object | None = None

    @property
    def addr(self) -> Addr:
        return self.prefix.addr

    @property
    def plen(self) -> int:
        return self.prefix.plen

    @property
    def network(self) -> Prefix:
        return Prefix(self.prefix.network, self.prefix.plen)

    @property
    def usable(self) -> bool:
        """May be a source or receive: DAD has passed and it has not expired."""
        return self.state in (PREFERRED, DEPRECATED)

    def contains(self, a: int) -> bool:
        return self.prefix.contains(a)

    def flags(self) -> list[str]:
        """KAME ifconfig's words for it."""
        out = []
        if self.state != PREFERRED:
            out.append(self.state)
        if self.autoconf:
            out.append("autoconf")
        if self.temporary:
            out.append("temporary")
        return out

    def __str__(self) -> str:
        return f"{format_addr(self.addr)}/{self.plen}"


@dataclass
class IfInet6:
    """Per-interface IPv6 state (``iface.proto["inet6"]``)."""

    addrs: list[IfAddr6] = field(default_factory=list)
    #: joined multicast groups → how many joins (the layer's own and sockets')
    groups: dict[Addr, int] = field(default_factory=dict)
    accept_rtadv: bool = True
    auto_linklocal: bool = True
    #: what router advertisements set (0: not set, the defaults apply)
    mtu: int = 0
    hop_limit: int = 0
    reachable_ms: int = 0
    retrans_ms: int = 0
    #: RDNSS/DNSSL heard (RFC 8106): server → deadline, domains → deadline
    rdnss: dict[Addr, float] = field(default_factory=dict)
    dnssl: dict[str, float] = field(default_factory=dict)
    #: when the first of them expires (stack/inet/timers.py ``Timer``)
    dns_timer: Timer | None = None
    rs_sent: int = 0
    #: the advertising side (router mode): rtadvd's settings for this interface
    advertise: bool = False
